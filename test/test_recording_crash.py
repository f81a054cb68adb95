"""Crash safety and bad input: a real kill -9 of a writing process is repaired; SIGINT / SIGTERM
close the episode cleanly; broken bags give errors that name the file and the problem."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from apo_ros.recording import BagError, read_episode, read_episodes, repair_bag
from apo_ros.recording.synthetic import START_NS, STEP_NS, write_synthetic_episode

REPO = str(Path(__file__).resolve().parents[1])

# A writer process: steps with 64x64 images; one explicit flush at FLUSH_AT, then it keeps going
# until killed. Actions are a pure function of the step index so the parent can check them.
CHILD = textwrap.dedent("""
    import sys, numpy as np
    from apo_ros.recording import EpisodeWriter
    from apo_ros.recording.synthetic import synthetic_observation, START_NS, STEP_NS
    path, flush_at, close_on_signals = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    rng = np.random.default_rng(0)
    w = EpisodeWriter(path, metadata={"task": "lift", "instruction": "lift", "policy_id": "p"},
                      flush_interval_s=3600.0, close_on_signals=close_on_signals)
    w.write_event(START_NS, "start")
    i = 0
    while True:
        stamp = START_NS + (i + 1) * STEP_NS
        w.write_observation(synthetic_observation(rng, stamp, size=64, index=i, noise_images=True))
        w.write_action(stamp + 1000, np.full(7, i / 1000.0), "human" if i % 50 >= 40 else "policy", stamp)
        if i == flush_at:
            w.flush()
            print("FLUSHED", i, flush=True)
        elif i % 20 == 0:
            print("STEP", i, flush=True)
        i += 1
""")


def _spawn(path, flush_at, close_on_signals=False):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(flush_at),
                             "1" if close_on_signals else "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(proc, word, index, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"writer exited early: {proc.stderr.read()}")
        parts = line.split()
        if parts and parts[0] == word and int(parts[1]) >= index:
            return int(parts[1])
    raise AssertionError(f"writer did not reach {word} {index}")


def _digest(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_repair_after_real_kill_9(tmp_path):
    bag = tmp_path / "ep"
    proc = _spawn(bag, flush_at=150)
    try:
        _wait_for(proc, "FLUSHED", 150)
        _wait_for(proc, "STEP", 200)  # keep writing past the flush, then die mid-stream
        proc.kill()  # SIGKILL: no handler, no close
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (bag / "metadata.yaml").exists()
    with pytest.raises(BagError, match=r"ep: truncated bag: no metadata.yaml.*apo-ros bags repair"):
        read_episode(str(bag))
    before = _digest(bag)

    report = repair_bag(str(bag))
    assert report.output == str(bag) + "_repaired" and report.truncated and not report.complete
    assert _digest(bag) == before  # the original is never modified
    ep = read_episode(report.output)
    assert ep.truncated and ep.outcome == "unknown"
    assert ep.metadata["task"] == "lift" and ep.metadata["policy_id"] == "p"  # from episode/info
    assert report.steps == len(ep.steps) >= 151  # every step up to the explicit flush survived
    for i, step in enumerate(ep.steps):  # and they are the right ones, in order, linked exactly
        assert step.observation.stamp_ns == START_NS + (i + 1) * STEP_NS
        np.testing.assert_array_equal(step.action, np.full(7, i / 1000.0))
        assert step.source == ("human" if i % 50 >= 40 else "policy")
        assert step.observation.images["front"].shape == (64, 64, 3)
    assert [k for _, k in ep.events] == ["start"]

    with pytest.raises(BagError, match="output already exists"):
        repair_bag(str(bag))
    with pytest.raises(BagError, match="intact"):
        repair_bag(report.output, str(tmp_path / "again"))


@pytest.mark.parametrize("signum, expected_rc", [(signal.SIGINT, -signal.SIGINT),
                                                  (signal.SIGTERM, 128 + signal.SIGTERM)])
def test_sigint_sigterm_close_the_episode_cleanly(tmp_path, signum, expected_rc):
    bag = tmp_path / "ep"
    proc = _spawn(bag, flush_at=10**9, close_on_signals=True)
    try:
        _wait_for(proc, "STEP", 40)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # SIGINT becomes KeyboardInterrupt (uncaught: Python re-kills itself with SIGINT); SIGTERM
    # becomes SystemExit(128 + 15)
    assert proc.returncode == expected_rc, err
    assert (bag / "metadata.yaml").exists()
    ep = read_episode(str(bag), load_images=False)
    assert ep.outcome == "abort" and not ep.truncated
    assert [k for _, k in ep.events] == ["start", "abort"]
    assert len(ep.steps) >= 40


def _custom_topic_bag(path, topic, msgtype):
    """A bag with the episode topics except that `topic` is missing or has another type."""
    from rosbags.rosbag2 import Writer

    from apo_ros.recording import schema
    from apo_ros.recording.messages import get_typestore

    store = get_typestore()
    with Writer(path, version=8) as w:
        for spec in schema.topics():
            if spec.topic != topic:
                w.add_connection(spec.topic, spec.msgtype, typestore=store)
        if msgtype:
            w.add_connection(topic, msgtype, typestore=store)


def test_bad_inputs_give_named_errors(tmp_path):
    (tmp_path / "file.txt").write_text("hello")
    with pytest.raises(BagError, match=r"file.txt: not a bag"):
        read_episode(str(tmp_path / "file.txt"))
    _custom_topic_bag(tmp_path / "missing", "action/executed", None)
    with pytest.raises(BagError, match=r"missing: missing topic 'action/executed'"):
        read_episode(str(tmp_path / "missing"))
    _custom_topic_bag(tmp_path / "wrongtype", "ee_pose", "geometry_msgs/msg/TwistStamped")
    with pytest.raises(BagError, match=r"wrongtype: wrong message type on 'ee_pose': geometry_msgs/msg/"
                                       r"TwistStamped, expected geometry_msgs/msg/PoseStamped"):
        read_episode(str(tmp_path / "wrongtype"))
    # a complete bag whose MCAP was cut short (a copy interrupted, a full disk)
    # (flush_interval_s tiny: one chunk per message, so half the file holds about half the steps)
    write_synthetic_episode(str(tmp_path / "cut"), ["policy"] * 30, size=16, flush_interval_s=1e-9)
    mcap = tmp_path / "cut" / "cut.mcap"
    with open(mcap, "r+b") as f:
        f.truncate(mcap.stat().st_size // 2)
    with pytest.raises(BagError, match=r"cut: cut.mcap is a truncated or unfinished MCAP.*bags repair"):
        read_episode(str(tmp_path / "cut"))
    # ... which repair salvages (metadata.yaml present, footer gone)
    report = repair_bag(str(tmp_path / "cut"))
    assert 0 < report.steps < 30 and read_episode(report.output).truncated
    assert read_episode(report.output).metadata["task"] == "lift"  # custom_data kept from metadata.yaml
    with pytest.raises(BagError, match="not a bag"):
        repair_bag(str(_empty(tmp_path)))


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_directory_reading_keeps_good_bags_and_lists_bad_ones(tmp_path):
    root = tmp_path / "session"
    write_synthetic_episode(str(root / "a" / "ep1"), ["policy"] * 5 + ["human"] * 2, size=8)
    write_synthetic_episode(str(root / "b" / "ep2"), ["expert"] * 4, size=8, outcome="failure")
    _custom_topic_bag(root / "b" / "bad_type", "gripper/state", "std_msgs/msg/String")
    killed = root / "killed"
    shutil.copytree(root / "a" / "ep1", killed)
    (killed / "metadata.yaml").unlink()
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("not a bag")
    episodes, bad = read_episodes([str(root), str(tmp_path / "nowhere")])
    assert sorted(Path(e.path).name for e in episodes) == ["ep1", "ep2"]
    problems = dict(bad)
    assert set(problems) == {str(root / "b" / "bad_type"), str(root / "killed"), str(tmp_path / "nowhere")}
    assert "wrong message type on 'gripper/state'" in problems[str(root / "b" / "bad_type")]
    assert "apo-ros bags repair" in problems[str(root / "killed")]
    assert problems[str(tmp_path / "nowhere")] == "does not exist"
    ep2 = next(e for e in episodes if e.path.endswith("ep2"))
    assert ep2.outcome == "failure" and ep2.sources == ["expert"] * 4


def test_custom_data_is_in_metadata_yaml(tmp_path):
    write_synthetic_episode(str(tmp_path / "ep"), ["policy"] * 3, size=8, metadata={"seed": 5})
    info = yaml.safe_load((tmp_path / "ep" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    custom = info["custom_data"]
    for key in ("task", "instruction", "policy_id", "operator", "outcome", "apo_ros_version", "stats_id"):
        assert key in custom
    assert custom["seed"] == "5" and custom["truncated"] == "false"


def test_find_bags_reports_what_it_skipped_and_why(tmp_path):
    """One search for `bags info` and `train`: nothing is dropped silently, and random bytes named
    .mcap are called what they are, not a killed recording."""
    from apo_ros.recording import find_bags

    write_synthetic_episode(str(tmp_path / "good"), ["policy"] * 3, size=8)
    noise = np.random.default_rng(0).bytes(4096)
    (tmp_path / "noise").mkdir()
    (tmp_path / "noise" / "noise.mcap").write_bytes(noise)  # no metadata.yaml
    shutil.copytree(tmp_path / "good", tmp_path / "noise_bag")  # metadata.yaml, MCAP replaced
    (tmp_path / "noise_bag" / "good.mcap").write_bytes(noise)
    shutil.copytree(tmp_path / "good", tmp_path / "killed")
    (tmp_path / "killed" / "metadata.yaml").unlink()
    (tmp_path / "empty").mkdir()

    found = find_bags([str(tmp_path), str(tmp_path / "good" / "good.mcap"), str(tmp_path / "empty")])
    assert found.bags == [str(tmp_path / "good"), str(tmp_path / "noise_bag")]  # good.mcap: same bag
    skipped = {os.path.basename(path): why for path, why in found.skipped}
    assert set(skipped) == {"noise", "killed", "empty"}
    assert "not an MCAP file" in skipped["noise"] and "killed" not in skipped["noise"]
    assert "killed" in skipped["killed"] and "bags repair" in skipped["killed"]
    assert skipped["empty"].startswith("no bags found")
    with pytest.raises(BagError, match=r"noise_bag: good.mcap is not an MCAP file") as info:
        read_episode(str(tmp_path / "noise_bag"))
    assert "repair" not in str(info.value) and "killed" not in str(info.value)
    with pytest.raises(BagError, match=r"noise.mcap: not an MCAP file"):
        read_episode(str(tmp_path / "noise" / "noise.mcap"))
