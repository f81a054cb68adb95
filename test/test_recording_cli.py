"""`apo-ros bags info | plot | repair` on real bags."""

from __future__ import annotations

import json

import numpy as np

from apo_ros.cli import main
from apo_ros.recording import read_episode
from apo_ros.recording.synthetic import write_synthetic_episode


def _session(root):
    write_synthetic_episode(str(root / "ep1"), ["policy"] * 20 + ["human"] * 5 + ["policy"] * 5, size=8)
    write_synthetic_episode(str(root / "ep2"), ["policy"] * 4 + ["human"] * 6, size=8, outcome="failure")


def test_info_json_shape_and_totals(tmp_path, capsys):
    _session(tmp_path)
    assert main(["bags", "info", str(tmp_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"episodes", "totals"}
    first = doc["episodes"][0]
    assert {"path", "steps", "interventions", "human_steps", "undesirable_steps", "outcome",
            "truncated"} <= set(first)
    assert [(e["steps"], e["interventions"], e["human_steps"], e["undesirable_steps"], e["outcome"])
            for e in doc["episodes"]] == [(30, 1, 5, 10, "success"), (10, 1, 6, 4, "failure")]
    assert doc["totals"] == {"episodes": 2, "steps": 40, "interventions": 2, "human_steps": 11,
                             "undesirable_steps": 14, "intervention_ratio": round(11 / 40, 6)}
    assert main(["bags", "info", str(tmp_path / "ep1"), "--json", "--k", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["totals"]["undesirable_steps"] == 3


def test_info_text_lists_bad_bags_and_exits_1(tmp_path, capsys):
    _session(tmp_path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "junk.mcap").write_bytes(b"not an mcap at all")
    assert main(["bags", "info", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "ep1" in out and "ep2" in out and "intervention ratio 27.5%" in out
    assert "junk" in err and "not an MCAP file" in err and "killed" not in err
    assert main(["bags", "info", str(tmp_path / "nothing_here")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_plot_writes_a_png_with_the_span_colors(tmp_path, capsys):
    _session(tmp_path / "bags")
    out = tmp_path / "timeline.png"
    assert main(["bags", "plot", str(tmp_path / "bags"), "-o", str(out)]) == 0
    import matplotlib.image as mpimg

    img = (mpimg.imread(str(out))[:, :, :3] * 255).round().astype(int)
    colors = {tuple(c) for c in img.reshape(-1, 3)[::7]}
    for hex_color in ("#9ecae1", "#d62728", "#ff7f0e"):  # policy, undesirable, human spans drawn
        rgb = tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
        assert rgb in colors, hex_color


def test_repair_command(tmp_path, capsys):
    writer, _ = write_synthetic_episode(str(tmp_path / "ep"), ["policy"] * 10, size=8, close=False,
                                        flush_interval_s=1e-9)
    writer.abort()  # what a crash leaves: chunks on disk, no summary, no metadata.yaml
    assert main(["bags", "repair", str(tmp_path / "ep")]) == 0
    assert "10 steps salvaged" in capsys.readouterr().out
    ep = read_episode(str(tmp_path / "ep_repaired"))
    assert ep.truncated and len(ep.steps) == 10
    np.testing.assert_array_equal([s.source for s in ep.steps], ["policy"] * 10)
    assert main(["bags", "repair", str(tmp_path / "ep")]) == 2  # output exists: one clear error line
    assert "already exists" in capsys.readouterr().err
