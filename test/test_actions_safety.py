"""SafetyFilter: NaN/Inf rejection, per-axis limits, workspace box, gripper bounds, counts, YAML."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apo_ros.actions import SafetyConfig, SafetyFilter, zero_action

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = SafetyConfig()
WS_MIN, WS_MAX = np.array(CFG.workspace_min), np.array(CFG.workspace_max)
CENTER = (WS_MIN + WS_MAX) / 2
TOL = 1e-12


def test_passes_a_safe_action_unchanged():
    f = SafetyFilter()
    action = np.array([0.01, -0.02, 0.03, 0.1, -0.1, 0.2, 0.4])
    result = f.filter(action, CENTER, 1.0)
    assert result.ok and result.reasons == [] and not result.modified
    np.testing.assert_array_equal(result.action, action)
    assert f.calls == 1 and f.modified == 0 and f.rejected == 0 and not f.counts


@pytest.mark.parametrize("bad, reason", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "inf")])
@pytest.mark.parametrize("index", [0, 4, 6])
def test_nan_inf_give_zero_motion_and_hold_gripper(bad, reason, index):
    f = SafetyFilter()
    action = np.array([0.01, 0.01, 0.01, 0.0, 0.0, 0.0, 0.0])
    action[index] = bad
    result = f.filter(action, CENTER, 0.3)
    assert not result.ok and result.reasons == [reason]
    np.testing.assert_array_equal(result.action, zero_action(0.3))
    assert f.counts[reason] == 1 and f.rejected == 1


@pytest.mark.parametrize("action", [np.zeros(6), np.zeros((1, 7)), np.zeros(8), "go", None,
                                    [0, 0, 0, 0, 0, 0, "x"]])
def test_wrong_shape_or_type_is_rejected(action):
    f = SafetyFilter()
    result = f.filter(action, CENTER, 0.7)
    assert not result.ok and result.reasons == ["shape"]
    np.testing.assert_array_equal(result.action, zero_action(0.7))


def test_unknown_state_is_rejected_and_gripper_falls_back():
    f = SafetyFilter()
    assert f.filter([0, 0, 0, 0, 0, 0, 0.2], [np.nan, 0, 0], 0.5).reasons == ["ee_position"]
    assert f.filter([0, 0, 0, 0, 0, 0, 0.2], [0.5, 0.0], 0.5).reasons == ["ee_position"]
    # Gripper state unknown: hold the last command the filter let through ...
    f.filter([0, 0, 0, 0, 0, 0, 0.2], CENTER, 0.5)
    result = f.filter([np.nan] * 7, CENTER, float("nan"))
    assert not result.ok and result.action[6] == 0.2
    # ... or the configured default on a fresh filter.
    assert SafetyFilter().filter([np.nan] * 7, CENTER, None).action[6] == CFG.default_gripper
    # The held gripper value is itself clipped to the bounds.
    assert SafetyFilter().filter([np.nan] * 7, CENTER, 7.0).action[6] == 1.0


def test_stale_input_is_rejected():
    f = SafetyFilter()
    assert f.filter([0.01, 0, 0, 0, 0, 0, 1], CENTER, 1.0, age_s=0.1).ok
    result = f.filter([0.01, 0, 0, 0, 0, 0, 1], CENTER, 1.0, age_s=2.0)
    assert not result.ok and result.reasons == ["stale"] and result.action[0] == 0.0
    assert not f.filter([0.01, 0, 0, 0, 0, 0, 1], CENTER, 1.0, age_s=float("nan")).ok
    disabled = SafetyFilter(SafetyConfig(max_input_age_s=0.0))
    assert disabled.filter([0.01, 0, 0, 0, 0, 0, 1], CENTER, 1.0, age_s=100.0).ok


def test_huge_values_are_clamped_per_axis():
    f = SafetyFilter()
    result = f.filter([1e9, -1e9, 0.01, 1e30, -3.0, 0.1, 5.0], CENTER, 1.0)
    assert result.ok
    np.testing.assert_allclose(result.action, [0.05, -0.05, 0.01, 0.25, -0.25, 0.1, 1.0])
    assert result.reasons == ["clamped:dx", "clamped:dy", "clamped:droll", "clamped:dpitch",
                              "clamped:gripper"]
    result = f.filter([0, 0, 0, 0, 0, 0, -0.5], CENTER, 1.0)
    assert result.action[6] == 0.0 and result.reasons == ["clamped:gripper"]


def test_workspace_exit_is_clipped_and_slides_along_the_wall():
    f = SafetyFilter()
    ee = np.array([CENTER[0], CENTER[1], WS_MIN[2] + 0.01])  # 1 cm above the floor of the box
    result = f.filter([0.02, 0.0, -0.04, 0, 0, 0, 1], ee, 1.0)
    assert result.ok and result.reasons == ["workspace:z_min"]
    assert result.action[0] == 0.02  # x motion kept: slide along the wall
    assert ee[2] + result.action[2] == pytest.approx(WS_MIN[2], abs=TOL)
    ee = np.array([WS_MAX[0] - 0.001, WS_MAX[1], CENTER[2]])
    result = f.filter([0.05, 0.05, 0, 0, 0, 0, 1], ee, 1.0)
    assert result.reasons == ["workspace:x_max", "workspace:y_max"]
    assert result.action[1] == 0.0
    assert f.kind_counts() == {"workspace": 3}
    assert f.counts == {"workspace:z_min": 1, "workspace:x_max": 1, "workspace:y_max": 1}


def test_outside_the_box_only_motion_back_is_allowed():
    f = SafetyFilter()
    ee = np.array([CENTER[0], CENTER[1], WS_MAX[2] + 0.1])  # 10 cm too high
    away = f.filter([0.0, 0.0, 0.03, 0, 0, 0, 1], ee, 1.0)
    assert away.action[2] == 0.0 and away.reasons == ["workspace:z_max"]
    back = f.filter([0.0, 0.0, -0.03, 0, 0, 0, 1], ee, 1.0)
    assert back.action[2] == -0.03 and back.reasons == []


def test_counts_report_and_reset():
    f = SafetyFilter()
    f.filter([np.nan] * 7, CENTER, 1.0)
    f.filter([1.0, 0, 0, 0, 0, 0, 1], CENTER, 1.0)
    f.filter([1.0, 0, 0, 0, 0, 0, 1], CENTER, 1.0)
    f.filter([0.0] * 6 + [1.0], CENTER, 1.0)
    assert f.counts == {"nan": 1, "clamped:dx": 2}
    assert (f.calls, f.rejected, f.modified) == (4, 1, 3)
    text = f.report()
    assert "4 actions" in text and "1 rejected" in text and "clamped:dx 2" in text and "nan 1" in text
    assert f.summary()["kinds"] == {"nan": 1, "clamped": 2}
    f.reset_counts()
    assert f.calls == 0 and not f.counts and f.report() == "safety filter: no actions filtered"


finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
anything = st.one_of(finite, st.just(np.nan), st.just(np.inf), st.just(-np.inf),
                     st.floats(min_value=-0.1, max_value=0.1))


@settings(max_examples=300, deadline=None)
@given(action=st.lists(anything, min_size=7, max_size=7),
       frac=st.lists(st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0)), min_size=3, max_size=3),
       gripper=st.floats(0.0, 1.0))
def test_property_output_always_safe_when_starting_inside(action, frac, gripper):
    f = SafetyFilter()
    ee = WS_MIN + np.array(frac) * (WS_MAX - WS_MIN)
    result = f.filter(np.array(action), ee, gripper)
    out = result.action
    assert out.shape == (7,) and np.isfinite(out).all()
    assert (np.abs(out[:6]) <= np.array(CFG.max_delta)).all()
    assert ((ee + out[:3] >= WS_MIN - TOL) & (ee + out[:3] <= WS_MAX + TOL)).all()
    assert CFG.gripper_min <= out[6] <= CFG.gripper_max
    assert result.ok == bool(np.isfinite(action).all())
    if not result.ok:
        np.testing.assert_array_equal(out, zero_action(gripper))


@settings(max_examples=200, deadline=None)
@given(action=st.lists(finite, min_size=7, max_size=7),
       ee=st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3))
def test_property_never_moves_further_out_of_the_box(action, ee):
    ee = np.array(ee)
    out = SafetyFilter().filter(np.array(action), ee, 0.5).action

    def outside(p):
        return np.maximum(WS_MIN - p, 0.0) + np.maximum(p - WS_MAX, 0.0)

    assert (outside(ee + out[:3]) <= outside(ee) + TOL).all()


# ------------------------------------------------------------------ configuration


def test_yaml_in_repo_loads_and_matches_defaults():
    config = SafetyConfig.from_yaml(os.path.join(REPO, "config", "safety.yaml"))
    assert config == SafetyConfig()


def test_yaml_round_trip_and_wildcard(tmp_path):
    import yaml

    config = SafetyConfig(max_delta=(0.01,) * 3 + (0.1,) * 3, workspace_min=(0, 0, 0),
                          workspace_max=(1, 1, 1), gripper_max=0.9, default_gripper=0.5)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": config.to_dict()}}))
    assert SafetyConfig.from_yaml(str(path)) == config
    path.write_text(yaml.safe_dump({"safety_filter": {"ros__parameters": {"gripper_max": 0.8}}}))
    assert SafetyConfig.from_yaml(str(path)).gripper_max == 0.8  # others keep defaults


@pytest.mark.parametrize("content, message", [
    ("safety_filter:\n  ros__parameters:\n    max_speed: 1.0\n", r"unknown option.*max_speed"),
    ("safety_filter:\n  ros__parameters:\n    max_delta: [0.1, 0.1]\n", "max_delta must be a list of 6"),
    ("safety_filter:\n  ros__parameters:\n    max_delta: [0.1, 0.1, 0.1, 0.1, 0.1, -1]\n", "> 0"),
    ("safety_filter:\n  ros__parameters:\n    max_delta: [a, 0.1, 0.1, 0.1, 0.1, 0.1]\n",
     "max_delta.0: expected float, got 'a'"),
    ("safety_filter:\n  ros__parameters:\n    workspace_min: [0, 0, 2]\n", "below workspace_max.*'z'"),
    ("safety_filter:\n  ros__parameters:\n    gripper_max: 2.0\n", "gripper_max"),
    ("safety_filter:\n  ros__parameters:\n    gripper_min: yes\n", "gripper_min: expected float, got True"),
    ("safety_filter:\n  ros__parameters:\n    gripper_min: .nan\n", "gripper_min must be a finite"),
    ("other_node:\n  ros__parameters: {}\n", "no 'safety_filter' entry"),
    ("safety_filter:\n  max_delta: 1\n", "ros__parameters"),
    ("safety_filter:\n  ros__parameters: {}\n  extra: 1\n", "unexpected key"),
    ("safety_filter:\n  ros__parameters: [1, 2]\n", "expected a mapping"),
    ("- 1\n- 2\n", "top level"),
    ("safety_filter: [unclosed\n", "not valid YAML"),
])
def test_yaml_errors_name_file_and_key(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        SafetyConfig.from_yaml(str(path))
    assert str(path) in str(info.value)


def test_missing_yaml_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        SafetyConfig.from_yaml(str(tmp_path / "nope.yaml"))
