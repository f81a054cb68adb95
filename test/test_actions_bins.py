"""BinTokenizer: OpenVLA's exact id rule on hand-checked values, and the half-bin round trip."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apo_ros.actions import BinTokenizer

V = 32000  # Llama-2 base vocabulary, as OpenVLA
EDGES = np.linspace(-1.0, 1.0, 256)
HALF_BIN = 1.0 / 255.0  # bin width 2/255


@pytest.fixture
def tok() -> BinTokenizer:
    return BinTokenizer(V)


def test_hand_checked_ids(tok):
    # digitize(-1, edges) = 1 -> V - 1; digitize(0) = 128 (edges[127] < 0 < edges[128]) -> V - 128;
    # digitize(1) = 256 (1 equals the last edge) -> V - 256.
    assert tok.encode([-1.0, 0.0, 1.0]).tolist() == [V - 1, V - 128, V - 256]
    assert tok.encode(np.array([-1.0, 0.0, 1.0])).dtype == np.int64
    # Bin edges belong to the bin above them: edges[k] -> digitize = k + 1 -> V - k - 1.
    for k in (0, 1, 127, 128, 200, 254, 255):
        assert int(tok.encode(EDGES[k])) == V - k - 1
    # Just below an edge falls in the bin below.
    assert int(tok.encode(np.nextafter(EDGES[128], -2.0))) == V - 128
    # Out of range is clipped to the extremes.
    assert tok.encode([-5.0, 5.0, -1e30, 1e30]).tolist() == [V - 1, V - 256, V - 1, V - 256]


def test_hand_checked_decode(tok):
    # index = clip(V - id - 1, 0, 254); value = center[index].
    assert tok.decode(V - 1) == pytest.approx(-1.0 + HALF_BIN)  # center[0]
    assert tok.decode(V - 128) == pytest.approx(0.0, abs=1e-12)  # center[127] = 0
    assert tok.decode(V - 255) == pytest.approx(1.0 - HALF_BIN)  # center[254]
    assert tok.decode(V - 256) == pytest.approx(1.0 - HALF_BIN)  # index 255 clipped to 254
    # Non-action ids decode silently to an extreme bin (OpenVLA behaviour) -> is_action_id exists.
    assert tok.decode(5) == pytest.approx(1.0 - HALF_BIN)
    assert tok.is_action_id([V - 257, V - 256, V - 1, V]).tolist() == [False, True, True, False]


def test_id_range_and_vocab_size():
    tok = BinTokenizer(32000)
    assert tok.id_range == (31744, 31999) and tok.action_token_begin_idx == 31744
    ids = tok.encode(np.random.default_rng(0).uniform(-2, 2, (1000, 7)))
    assert ids.shape == (1000, 7) and ids.min() >= 31744 and ids.max() <= 31999
    assert BinTokenizer(257216).id_range == (256960, 257215)  # a Gemma-sized vocabulary
    small = BinTokenizer(300, n_bins=16)
    assert small.id_range == (284, 299) and len(small.bin_centers) == 15
    assert small.encode([-1.0, 1.0]).tolist() == [299, 284]


def test_bin_index_helpers(tok):
    ids = tok.encode(np.linspace(-1, 1, 50))
    idx = tok.bin_index(ids)
    assert idx.min() >= 0 and idx.max() <= 255
    np.testing.assert_array_equal(tok.ids_from_bin_index(idx), ids)


def test_errors():
    with pytest.raises(ValueError, match="NaN"):
        BinTokenizer(V).encode([0.0, np.nan])
    with pytest.raises(ValueError, match="smaller than n_bins"):
        BinTokenizer(100)
    with pytest.raises(ValueError, match="n_bins"):
        BinTokenizer(V, n_bins=1)


@settings(max_examples=500, deadline=None)
@given(st.floats(min_value=-1.0, max_value=1.0))
def test_round_trip_within_half_a_bin(a):
    tok = BinTokenizer(V)
    assert abs(float(tok.decode(tok.encode(a))) - a) <= HALF_BIN + 1e-12


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=-1.0, max_value=1.0), min_size=7, max_size=7))
def test_round_trip_is_a_fixed_point(values):
    """Decoding then re-encoding returns the same ids (centers sit inside their bins), except
    OpenVLA's top id V - 256: only a >= 1 gives it, and it decodes to the center of bin V - 255."""
    tok = BinTokenizer(V)
    ids = tok.encode(values)
    np.testing.assert_array_equal(tok.encode(tok.decode(ids)), np.maximum(ids, V - 255))
