"""Bin action tokenizers: OpenVLA's 256-bin rule exactly, and a grid whose every id round-trips.

layout "openvla" (OpenVLA's ActionTokenizer, bit-exact; the VLAs use it):
edges = linspace(-1, 1, n_bins); centers = midpoints (n_bins - 1 of them).
encode: clip to [-1, 1], d = digitize(a, edges) in [1, n_bins], id = vocab_size - d.
decode: index = clip(vocab_size - id - 1, 0, n_bins - 2), value = centers[index].
n_bins ids but n_bins - 1 values: the two highest-value ids (vocab_size - n_bins, reached only by
exactly +1, and the one above it) decode to the same top centre. A closed gripper (+1) encodes to
the first, and its decoded value re-encodes to the second: decode-then-encode does not return the
id the policy chose.

layout "grid" (the project's own bin heads): n_bins values = linspace(-1, 1, n_bins), both
extremes included; encode = the nearest value, decode = that value. Every id decodes to a value
of its own and re-encodes to itself, so a gripper at 0 or 1 and a translation clipped at the
q01/q99 bound are represented exactly.

Both layouts give the highest id to the lowest value and use the last n_bins ids of the
vocabulary: [vocab_size - n_bins, vocab_size - 1].
"""

from __future__ import annotations

import numpy as np

BIN_LAYOUTS: tuple[str, ...] = ("openvla", "grid")
# how a bin policy's predictions become actions: the most likely bin, or the expected value of
# each arm dimension (the gripper keeps its most likely bin)
DECODE_MODES: tuple[str, ...] = ("argmax", "mean")


class BinTokenizer:
    def __init__(self, vocab_size: int, n_bins: int = 256, layout: str = "openvla"):
        if n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {n_bins}")
        if vocab_size < n_bins:
            raise ValueError(f"vocab_size {vocab_size} is smaller than n_bins {n_bins}")
        if layout not in BIN_LAYOUTS:
            raise ValueError(f"bin layout must be one of {BIN_LAYOUTS}, got {layout!r}")
        self.vocab_size = int(vocab_size)
        self.n_bins = int(n_bins)
        self.layout = layout
        self.bins = np.linspace(-1.0, 1.0, self.n_bins)
        if layout == "openvla":
            self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0
        else:  # grid: the values are the grid points themselves
            self.bin_centers = self.bins.copy()

    @property
    def action_token_begin_idx(self) -> int:
        """Lowest id an action can encode to (OpenVLA's name)."""
        return self.vocab_size - self.n_bins

    @property
    def id_range(self) -> tuple[int, int]:
        """Inclusive (lowest, highest) action token id."""
        return self.vocab_size - self.n_bins, self.vocab_size - 1

    def describe(self) -> str:
        """What an id means, in one string (recorded beside the ids a policy produced)."""
        return f"bins:{self.layout}:n={self.n_bins}:vocab={self.vocab_size}"

    def is_action_id(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        lo, hi = self.id_range
        return (ids >= lo) & (ids <= hi)

    def encode(self, actions) -> np.ndarray:
        """Normalized actions [..., D] -> token ids [..., D] (int64). NaN is refused."""
        a = np.asarray(actions, dtype=np.float64)
        if np.isnan(a).any():
            raise ValueError("cannot tokenize NaN actions")
        a = np.clip(a, -1.0, 1.0)
        if self.layout == "grid":
            index = np.rint((a + 1.0) * (0.5 * (self.n_bins - 1))).astype(np.int64)
            return (self.vocab_size - 1 - index).astype(np.int64)
        d = np.digitize(a, self.bins)  # in [1, n_bins]
        return (self.vocab_size - d).astype(np.int64)

    def decode(self, ids) -> np.ndarray:
        """Token ids [..., D] -> normalized actions [..., D]. Ids outside the action range decode to
        the nearest extreme bin (as OpenVLA); check `is_action_id` first where that matters."""
        ids = np.asarray(ids, dtype=np.int64)
        index = np.clip(self.vocab_size - ids - 1, 0, self.bin_centers.shape[0] - 1)
        return self.bin_centers[index]

    def bin_index(self, ids) -> np.ndarray:
        """Token id -> class index in [0, n_bins) (0 = lowest id); for heads that predict bins."""
        return np.asarray(ids, dtype=np.int64) - self.action_token_begin_idx

    def ids_from_bin_index(self, index) -> np.ndarray:
        return np.asarray(index, dtype=np.int64) + self.action_token_begin_idx
