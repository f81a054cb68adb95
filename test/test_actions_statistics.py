"""ActionStatistics: q01/q99 normalization, gripper passthrough, OpenVLA dataset_statistics.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apo_ros.actions import ActionStatistics, load_statistics, save_statistics
from apo_ros.actions.statistics import STATISTICS_FILENAME


def raw_actions(n: int = 2000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.concatenate([rng.normal(0, 0.01, (n, 3)), rng.normal(0, 0.05, (n, 3)),
                        (rng.random((n, 1)) > 0.4).astype(float)], axis=1)
    return a


# An excerpt in the exact layout of OpenVLA's released dataset_statistics.json (two datasets,
# proprio entry, integer counters).
OPENVLA_FILE = {
    "bridge_orig": {
        "action": {
            "mean": [0.0002, 0.0001, -0.0001, -0.0002, -0.0006, 0.0003, 0.5768],
            "std": [0.0097, 0.0137, 0.0127, 0.0285, 0.0307, 0.0768, 0.4974],
            "max": [0.4157, 0.4075, 0.3712, 1.5718, 1.5484, 1.5706, 1.0],
            "min": [-0.4007, -0.4073, -0.3492, -1.5714, -1.5599, -1.5706, 0.0],
            "q01": [-0.0294, -0.0414, -0.0260, -0.0810, -0.0920, -0.2057, 0.0],
            "q99": [0.0290, 0.0410, 0.0406, 0.0818, 0.0782, 0.2036, 1.0],
            "mask": [True, True, True, True, True, True, False],
        },
        "proprio": {"mean": [0.0] * 7, "std": [0.0] * 7, "max": [0.0] * 7, "min": [0.0] * 7,
                    "q01": [0.0] * 7, "q99": [0.0] * 7},
        "num_transitions": 2135463,
        "num_trajectories": 60064,
    },
    "fractal20220817_data": {
        "action": {
            "q01": [-0.22, -0.14, -0.23, -0.35, -0.42, -0.43, 0.0],
            "q99": [0.18, 0.14, 0.21, 0.34, 0.29, 0.49, 1.0],
            "mask": [True, True, True, True, True, True, False],
        },
        "num_transitions": 3786400,
        "num_trajectories": 87212,
    },
}


def test_from_actions_matches_numpy():
    a = raw_actions()
    stats = ActionStatistics.from_actions(a, num_trajectories=4)
    np.testing.assert_allclose(stats.q01, np.quantile(a, 0.01, axis=0))
    np.testing.assert_allclose(stats.q99, np.quantile(a, 0.99, axis=0))
    np.testing.assert_allclose(stats.mean, a.mean(0))
    assert stats.mask.tolist() == [True] * 6 + [False]
    assert (stats.num_transitions, stats.num_trajectories, stats.dim) == (2000, 4, 7)


def test_normalize_maps_quantiles_to_unit_range_and_clips():
    stats = ActionStatistics.from_actions(raw_actions())
    norm = stats.normalize(np.stack([stats.q01, stats.q99, 10 * stats.q99, 10 * stats.q01]))
    np.testing.assert_allclose(norm[:, :6], [[-1] * 6, [1] * 6, [1] * 6, [-1] * 6])
    # Gripper passes through untouched, whatever its value.
    np.testing.assert_array_equal(norm[:, 6], [stats.q01[6], stats.q99[6], 10 * stats.q99[6],
                                               10 * stats.q01[6]])
    assert stats.normalize(np.array([0, 0, 0, 0, 0, 0, 0.37]))[6] == 0.37


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=7, max_size=7))
def test_round_trip_inside_quantiles(fractions):
    stats = ActionStatistics.from_actions(raw_actions())
    a = stats.q01 + np.array(fractions) * (stats.q99 - stats.q01)
    a[6] = fractions[6]
    np.testing.assert_allclose(stats.unnormalize(stats.normalize(a)), a, atol=1e-12)
    n = np.array(fractions) * 2 - 1
    np.testing.assert_allclose(stats.normalize(stats.unnormalize(n)), n, atol=1e-12)


def test_batch_shapes_and_constant_dimension():
    a = raw_actions(100)
    a[:, 2] = 0.0  # a dimension that never moves
    stats = ActionStatistics.from_actions(a)
    chunks = a[:90].reshape(9, 10, 7)
    norm = stats.normalize(chunks)
    assert norm.shape == (9, 10, 7) and np.isfinite(norm).all()
    assert (norm[..., 2] == 0).all()
    assert (stats.unnormalize(norm)[..., 2] == 0).all()


def test_openvla_unnormalize_rule():
    stats = load_statistics_from(OPENVLA_FILE, "bridge_orig")
    n = np.array([0.5, -0.5, 0.0, 1.0, -1.0, 0.25, 1.0])
    expected = 0.5 * (n + 1) * (stats.q99 - stats.q01) + stats.q01
    expected[6] = 1.0
    np.testing.assert_allclose(stats.unnormalize(n), expected)


def load_statistics_from(content: dict, name: str | None = None) -> ActionStatistics:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        with open(f"{d}/{STATISTICS_FILENAME}", "w") as f:
            json.dump(content, f)
        return load_statistics(d, name)


def test_json_round_trip(tmp_path):
    stats = ActionStatistics.from_actions(raw_actions(), num_trajectories=3)
    path = save_statistics(str(tmp_path), stats, name="my_robot")
    assert path.endswith(STATISTICS_FILENAME)
    data = json.loads(open(path).read())
    assert list(data) == ["my_robot"] and set(data["my_robot"]["action"]) >= {"q01", "q99", "mask"}
    loaded = load_statistics(path)
    for name in ("q01", "q99", "mask", "mean", "std", "min", "max"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(stats, name))
    assert loaded.statistics_id() == stats.statistics_id()
    assert (loaded.num_transitions, loaded.num_trajectories) == (2000, 3)


def test_openvla_file_with_several_datasets(tmp_path):
    (tmp_path / STATISTICS_FILENAME).write_text(json.dumps(OPENVLA_FILE))
    bridge = load_statistics(str(tmp_path), "bridge_orig")
    assert bridge.q01[0] == -0.0294 and bridge.mask.tolist() == [True] * 6 + [False]
    assert bridge.num_transitions == 2135463 and "proprio" in bridge.extra
    fractal = load_statistics(str(tmp_path / STATISTICS_FILENAME), "fractal20220817_data")
    assert fractal.q99[5] == 0.49 and fractal.mean is None
    with pytest.raises(ValueError, match="choose one by name"):
        load_statistics(str(tmp_path))
    with pytest.raises(ValueError, match="no dataset 'nope'"):
        load_statistics(str(tmp_path), "nope")
    # Saving several datasets keeps every one of them, extra keys included.
    save_statistics(str(tmp_path / "out.json"), {"bridge_orig": bridge, "fractal": fractal})
    again = json.loads((tmp_path / "out.json").read_text())
    assert set(again) == {"bridge_orig", "fractal"} and "proprio" in again["bridge_orig"]


def test_statistics_id_changes_with_content():
    a = ActionStatistics.from_actions(raw_actions(seed=1))
    b = ActionStatistics.from_actions(raw_actions(seed=2))
    assert a.statistics_id() != b.statistics_id() and len(a.statistics_id()) == 12


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ("[]", "keyed by dataset name"),
    ("{}", "keyed by dataset name"),
    ('{"d": {"proprio": {}}}', "no 'action' entry"),
    ('{"d": 5}', "expected an object"),
    ('{"d": {"action": [1, 2]}}', "'action' must be an object"),
    ('{"d": {"action": {"q01": [0, 0]}}}', r"lack \['q99'\]"),
    ('{"d": {"action": {"q01": [0, 0], "q99": [1, 1, 1]}}}', "malformed"),
    ('{"d": {"action": {"q01": ["a", 0], "q99": [1, 1]}}}', "malformed"),
    ('{"d": {"action": {"q01": [NaN, 0], "q99": [1, 1]}}}', "NaN or Inf"),
])
def test_bad_files_give_clear_errors(tmp_path, content, message):
    path = tmp_path / STATISTICS_FILENAME
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_statistics(str(path))
    assert str(path) in str(info.value)


def test_missing_file_and_bad_data(tmp_path):
    with pytest.raises(FileNotFoundError, match=STATISTICS_FILENAME):
        load_statistics(str(tmp_path))
    with pytest.raises(ValueError, match="zero actions"):
        ActionStatistics.from_actions(np.zeros((0, 7)))
    with pytest.raises(ValueError, match="NaN or Inf"):
        ActionStatistics.from_actions(np.full((3, 7), np.inf))
