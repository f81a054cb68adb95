"""config/foxglove_layout.json names only topics (and message fields) an episode bag holds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rosbags.typesys import Stores, get_typestore

from apo_ros.observation import CAMERAS
from apo_ros.recording import schema

LAYOUT = Path(__file__).resolve().parents[1] / "config" / "foxglove_layout.json"
RECORDED = {spec.topic: spec.msgtype for spec in schema.topics(CAMERAS, "raw")}
# A Foxglove message path: an unquoted topic name ([a-zA-Z0-9_/-]+), then .field / [index] parts.
PATH = re.compile(r"^(?P<topic>[A-Za-z0-9_/-]+)(?P<rest>(?:\.[A-Za-z0-9_]+|\[\d+\])*)$")


def _layout() -> dict:
    with open(LAYOUT) as f:
        return json.load(f)


def _references(doc: dict) -> tuple[set[str], list[str]]:
    """(topics, message paths) the layout's panels name."""
    topics, paths = set(), []
    for panel_id, cfg in doc["configById"].items():
        kind = panel_id.split("!")[0]
        if kind == "Image":
            topics.add(cfg["imageMode"]["imageTopic"])
        elif kind in ("Plot", "StateTransitions"):
            paths += [p["value"] for p in cfg["paths"]]
        elif kind == "RawMessages":
            paths.append(cfg["topicPath"])
        elif kind == "3D":
            topics |= set(cfg["topics"])
        else:
            raise AssertionError(f"panel {panel_id}: a kind this test does not know how to check")
    for path in paths:
        m = PATH.match(path)
        assert m, f"not a message path this layout should use: {path!r}"
        topics.add(m["topic"])
    return topics, paths


def _panel_ids(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    return _panel_ids(node["first"]) + _panel_ids(node["second"])


def test_every_topic_is_one_the_recorder_writes():
    topics, _ = _references(_layout())
    assert topics <= set(RECORDED), sorted(topics - set(RECORDED))
    # what the layout is for: both cameras, the executed action and its source, the events, the pose
    assert {schema.image_topic(c) for c in CAMERAS} | {schema.ACTION_EXECUTED, schema.EPISODE_EVENTS,
                                                        schema.EE_POSE} <= topics


def test_every_field_exists_in_the_topic_message_type():
    store = get_typestore(Stores.ROS2_HUMBLE)
    _, paths = _references(_layout())
    for path in paths:
        m = PATH.match(path)
        msgtype = RECORDED[m["topic"]]
        for part in re.findall(r"\.([A-Za-z0-9_]+)|\[\d+\]", m["rest"]):
            if not part:  # an index into the current (array) field
                continue
            fields = dict(store.fielddefs[msgtype][1])
            assert part in fields, f"{path}: {msgtype} has no field {part!r}"
            node, detail = fields[part]
            if node.name == "NAME":
                msgtype = detail
            elif node.name == "SEQUENCE" and detail[0][0].name == "NAME":
                msgtype = detail[0][1]


def test_the_layout_tree_shows_every_configured_panel_once():
    doc = _layout()
    ids = _panel_ids(doc["layout"])
    assert sorted(ids) == sorted(doc["configById"]) and len(ids) == len(set(ids))


@pytest.mark.parametrize("bad", ["camera/left/image_raw", "action/executed_typo.position[0]"])
def test_the_check_catches_a_topic_the_recorder_does_not_write(bad):
    doc = _layout()
    if bad.startswith("camera/"):
        doc["configById"]["Image!front"]["imageMode"]["imageTopic"] = bad
    else:
        doc["configById"]["Plot!executed"]["paths"][0]["value"] = bad
    topics, _ = _references(doc)
    assert not topics <= set(RECORDED)
