"""Intervention events carry the stamp of the step they belong to, whichever arrives first."""

from __future__ import annotations

from apo_ros.recording.event_stamps import EventStamper

S = 1_000_000_000
MS = 1_000_000


def test_the_event_after_its_step_gets_the_step_stamp():
    st = EventStamper()
    assert st.on_action("policy", 1 * S, 1 * S + 5 * MS) == []
    assert st.on_action("human", 2 * S, 2 * S + 5 * MS) == []
    assert st.on_event("intervention_start", 2 * S + 15 * MS) == [(2 * S, "intervention_start")]
    assert st.on_action("human", 3 * S, 3 * S + 5 * MS) == []
    assert st.on_action("policy", 4 * S, 4 * S + 5 * MS) == []
    assert st.on_event("intervention_end", 4 * S + 12 * MS) == [(4 * S, "intervention_end")]


def test_the_event_before_its_step_waits_for_it():
    st = EventStamper()
    st.on_action("policy", 1 * S, 1 * S + 5 * MS)
    assert st.on_event("intervention_start", 2 * S + 3 * MS) == []
    assert st.on_action("human", 2 * S, 2 * S + 9 * MS) == [(2 * S, "intervention_start")]


def test_an_unconfirmed_event_keeps_its_arrival_time_and_others_pass_through():
    st = EventStamper(wait_s=1.0)
    st.on_action("human", 1 * S, 1 * S)
    assert st.on_event("intervention_end", 2 * S) == []  # no policy step follows ...
    assert st.on_event("hold", 3 * S + 1) == [(2 * S, "intervention_end"), (3 * S + 1, "hold")]
    assert st.on_event("intervention_start", 4 * S) == []
    assert st.flush(4 * S + 1) == [(4 * S, "intervention_start")]


def test_the_intake_converts_refuses_and_pairs():
    import numpy as np
    import pytest

    from apo_ros.recording import messages as M
    from apo_ros.recording.images import ImageProblem
    from apo_ros.recording.intake import RawIntake

    store, types = M.get_typestore(), M.rosbags_types()
    intake = RawIntake()
    intake.set("stamp_tolerance_s", 0.5)
    img = types.Image(header=M.make_header(types, 5 * S), height=1, width=2, encoding="bgra8",
                      is_bigendian=0, step=8, data=np.arange(8, dtype=np.uint8))
    got = intake.admit("camera/front/image_raw", "sensor_msgs/msg/Image",
                       bytes(store.serialize_cdr(img, "sensor_msgs/msg/Image")), 5 * S)
    back = store.deserialize_cdr(got.data, "sensor_msgs/msg/Image")
    assert got.converted_from == "bgra8" and back.encoding == "rgb8" and list(back.data) == [2, 1, 0, 6, 5, 4]
    img.encoding = "16UC1"
    with pytest.raises(ImageProblem):
        intake.admit("camera/front/image_raw", "sensor_msgs/msg/Image",
                     bytes(store.serialize_cdr(img, "sensor_msgs/msg/Image")), 5 * S)
    action = M.make_action(types, 9 * S, np.zeros(7), "human")
    raw = bytes(store.serialize_cdr(action, "sensor_msgs/msg/JointState"))
    with pytest.raises(ValueError, match="future"):
        intake.admit("action/executed", "sensor_msgs/msg/JointState", raw, 8 * S)
    assert intake.events.on_event("intervention_start", 9 * S) == []
    assert intake.admit("action/executed", "sensor_msgs/msg/JointState", raw, 9 * S).events == [
        (9 * S, "intervention_start")]
