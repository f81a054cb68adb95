"""The grid bin layout of the project's own bin heads: every id round-trips (the OpenVLA layout,
kept bit-exact for the VLAs, aliases its two highest ids), and old checkpoints keep their layout."""

from __future__ import annotations

import numpy as np
import pytest

from apo_ros.actions import BinTokenizer
from apo_ros.policies import build_policy, load_policy, save_policy
from apo_ros.policies.testing import default_statistics


@pytest.mark.parametrize("n_bins", [2, 64, 256])
def test_every_grid_id_decodes_to_a_value_that_encodes_back_to_it(n_bins):
    tok = BinTokenizer(n_bins, n_bins, layout="grid")
    ids = np.arange(n_bins)
    assert np.array_equal(tok.encode(tok.decode(ids)), ids)
    assert len(np.unique(tok.decode(ids))) == n_bins
    # both extremes are values of their own: a closed (1) / open (0) gripper, a translation clipped
    # at its q01 / q99 bound
    assert tok.decode(tok.encode([-1.0, 1.0])).tolist() == [-1.0, 1.0]
    # nearest value; out of range clips
    half = 1.0 / (n_bins - 1)
    assert tok.encode([-1 + 0.9 * half, 5.0]).tolist() == [n_bins - 1, 0]


def test_the_openvla_layout_still_aliases_its_top_ids():
    # the reason the bin heads moved to the grid: +1 encodes to id 0, which decodes to the top
    # centre, which re-encodes to id 1
    tok = BinTokenizer(64, 64)
    assert tok.encode(1.0) == 0 and tok.encode(tok.decode(0)) == 1


def test_a_gripper_value_round_trips_through_a_state_policy():
    stats = default_statistics()
    policy = build_policy("state", stats, instructions=["put the lemon on the plate"], device="cpu",
                          n_bins=64, hidden=16)
    assert policy.tokenizer.layout == "grid"
    chunk = np.zeros((2, 1, 7))
    chunk[0, 0, 6], chunk[1, 0, 6] = 1.0, 0.0  # closed, open
    tokens, mask = policy.encode_actions(chunk)
    decoded, ok = policy.decode_tokens(tokens, mask)
    # closed is exact; open (0, the middle of [-1, 1] where the gripper's absolute value is not
    # normalized) is the grid value nearest to it when n_bins is even
    assert ok.all() and decoded[0, 0, 6] == 1.0 and abs(decoded[1, 0, 6]) <= 1 / 63
    again, _ = policy.encode_actions(decoded)
    assert again.tolist() == tokens.tolist()


def test_a_checkpoint_saved_before_the_option_loads_with_the_openvla_layout(tmp_path):
    import json

    policy = build_policy("state", default_statistics(), instructions=["put the lemon on the plate"],
                          device="cpu", n_bins=64, hidden=16, bin_layout="openvla")
    save_policy(policy, str(tmp_path / "new"))
    assert load_policy(str(tmp_path / "new")).tokenizer.layout == "openvla"
    # an older checkpoint's config has no bin_layout key: its ids mean what they meant then
    document_file = tmp_path / "new" / "apo_policy.json"
    document = json.loads(document_file.read_text())
    document["config"].pop("bin_layout")
    document_file.write_text(json.dumps(document))
    assert load_policy(str(tmp_path / "new")).tokenizer.layout == "openvla"
    with pytest.raises(ValueError, match="bin_layout"):
        build_policy("state", default_statistics(), instructions=["x"], device="cpu", bin_layout="odd")
