"""FAST-style action-chunk tokenizer (as pi0-FAST tokenizes chunks), with explicit decode failure.

encode: normalized chunk [T, D] -> orthonormal DCT over time per dimension -> x scale -> round to
int -> clip to [min_token, max_token] -> flatten row-major (frequency 0 of every dimension first,
then frequency 1, ...) -> one character per coefficient, chr(CHAR_OFFSET + v - min_token) ->
byte-level BPE (HuggingFace `tokenizers`) -> token ids.

decode reverses it and says whether it worked: a sequence that does not decode to exactly T x D
coefficients (truncated, padded, corrupted, out-of-vocabulary ids, broken UTF-8) gives
`ok=False` and an all-zero chunk, never a zero chunk that looks valid.

Why CHAR_OFFSET = 0x100: every coefficient then becomes a 2-byte UTF-8 letter, so the byte-level
pre-tokenizer sees a uniform stream (no spaces, digits or control characters that regex-based
splitting would treat specially), and a token sequence cut inside a character shows up as
invalid UTF-8 instead of a plausible value.

Why [min_token, max_token] defaults to +-ceil(scale * sqrt(T)): for an orthonormal DCT every
coefficient is bounded by the L2 norm of its column, which is at most sqrt(T) for values in
[-1, 1], so normalized chunks never clip. Data outside that range (unnormalized actions) widens
the range at fit time; at encode time values beyond it are clipped and counted (`clip_count`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence

import numpy as np
from scipy.fft import dct, idct

CHAR_OFFSET = 0x100
# Characters must stay below the UTF-16 surrogate block to be valid Python/Rust strings.
_MAX_CHARS = 0xD800 - CHAR_OFFSET
CONFIG_FILENAME = "fast_tokenizer.json"
TOKENIZER_FILENAME = "tokenizer.json"
FORMAT_VERSION = 1


class FastDecodeError(ValueError):
    """A token sequence that does not decode to a (time_horizon, action_dim) chunk."""


class FastTokenizer:
    """DCT + scale/round + byte-level BPE tokenizer for normalized action chunks [T, D].

    Call `fit(chunks)` (or `load(dir)`) before encoding. Token ids are the BPE's own ids in
    [0, vocab_size); a policy that shares a language model's vocabulary maps them into its range.
    """

    def __init__(self, time_horizon: int, action_dim: int = 7, scale: float = 10.0,
                 vocab_size: int = 1024):
        if time_horizon < 1 or action_dim < 1:
            raise ValueError(f"time_horizon and action_dim must be >= 1, got {time_horizon}, {action_dim}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        if vocab_size <= 256:
            raise ValueError(f"vocab_size must exceed the 256 byte-level base tokens, got {vocab_size}")
        self.time_horizon = int(time_horizon)  # T: actions per chunk
        self.action_dim = int(action_dim)  # D: values per action
        self.scale = float(scale)  # DCT coefficients are multiplied by this before rounding
        self.requested_vocab_size = int(vocab_size)  # BPE target; the trained size may be smaller
        bound = int(math.ceil(self.scale * math.sqrt(self.time_horizon)))
        self.min_token = -bound  # lowest representable rounded coefficient
        self.max_token = bound  # highest representable rounded coefficient
        self.clip_count = 0  # coefficients clipped to [min_token, max_token] by encode since reset
        self._tokenizer = None  # tokenizers.Tokenizer once fitted / loaded

    # ------------------------------------------------------------------ properties

    @property
    def fitted(self) -> bool:
        return self._tokenizer is not None

    @property
    def vocab_size(self) -> int:
        """Actual number of token ids after fit (ids are 0 .. vocab_size - 1)."""
        return self._require().get_vocab_size() if self.fitted else self.requested_vocab_size

    @property
    def num_coefficients(self) -> int:
        return self.time_horizon * self.action_dim

    def __repr__(self) -> str:
        return (f"FastTokenizer(time_horizon={self.time_horizon}, action_dim={self.action_dim}, "
                f"scale={self.scale}, vocab_size={self.vocab_size}, fitted={self.fitted})")

    # ------------------------------------------------------------------ coefficients

    def _check_chunks(self, chunks, what: str = "chunk") -> np.ndarray:
        a = np.asarray(chunks, dtype=np.float64)
        if a.shape[-2:] != (self.time_horizon, self.action_dim):
            raise ValueError(f"{what} must end in ({self.time_horizon}, {self.action_dim}), "
                             f"got shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{what} contains NaN or Inf; refusing to tokenize")
        return a

    def coefficients(self, chunks) -> np.ndarray:
        """Chunks [..., T, D] -> rounded, scaled DCT coefficients [..., T, D] (int64, unclipped)."""
        a = self._check_chunks(chunks)
        return np.rint(dct(a, type=2, axis=-2, norm="ortho") * self.scale).astype(np.int64)

    def chunks_from_coefficients(self, coefficients) -> np.ndarray:
        c = np.asarray(coefficients, dtype=np.float64)
        return idct(c / self.scale, type=2, axis=-2, norm="ortho")

    def _to_string(self, coefficients: np.ndarray) -> str:
        clipped = np.clip(coefficients, self.min_token, self.max_token)
        self.clip_count += int((clipped != coefficients).sum())
        codes = (clipped.reshape(-1) - self.min_token + CHAR_OFFSET).tolist()
        return "".join(map(chr, codes))

    def _from_string(self, text: str) -> np.ndarray:
        """Decoded text -> coefficients [T, D]; FastDecodeError on any mismatch."""
        if len(text) != self.num_coefficients:
            raise FastDecodeError(f"tokens decode to {len(text)} coefficients, expected "
                                  f"{self.num_coefficients} ({self.time_horizon} x {self.action_dim})")
        codes = np.fromiter(map(ord, text), dtype=np.int64, count=len(text)) - CHAR_OFFSET
        span = self.max_token - self.min_token
        bad = (codes < 0) | (codes > span)
        if bad.any():
            first = text[int(np.argmax(bad))]
            reason = "invalid UTF-8 byte sequence" if first == "\ufffd" else f"character {first!r}"
            raise FastDecodeError(f"tokens decode to a value outside the coefficient alphabet ({reason})")
        return (codes + self.min_token).reshape(self.time_horizon, self.action_dim)

    # ------------------------------------------------------------------ fitting

    def fit(self, chunks: Iterable, *, min_frequency: int = 2) -> FastTokenizer:
        """Train the BPE on normalized chunks (an iterable of [T, D] arrays or one [N, T, D])."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        data = [self._check_chunks(c, "fit chunk") for c in chunks]
        if not data:
            raise ValueError("fit needs at least one chunk")
        coeffs = self.coefficients(np.stack(data))
        self.min_token = min(self.min_token, int(coeffs.min()))
        self.max_token = max(self.max_token, int(coeffs.max()))
        if self.max_token - self.min_token >= _MAX_CHARS:
            raise ValueError(f"coefficient range [{self.min_token}, {self.max_token}] is too wide "
                             f"for one character per coefficient; normalize the actions or lower scale")
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=self.requested_vocab_size, min_frequency=min_frequency, show_progress=False,
            special_tokens=[], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            max_token_length=10000)
        saved_clips = self.clip_count
        strings = [self._to_string(c) for c in coeffs]
        self.clip_count = saved_clips  # fitting data never clips (range covers it); keep the counter clean
        tokenizer.train_from_iterator(strings, trainer=trainer, length=len(strings))
        self._tokenizer = tokenizer
        return self

    def _require(self):
        if self._tokenizer is None:
            raise RuntimeError("FastTokenizer is not fitted: call fit(chunks) or FastTokenizer.load(dir)")
        return self._tokenizer

    # ------------------------------------------------------------------ encode / decode

    def encode(self, chunk) -> list[int]:
        """One normalized chunk [T, D] -> token ids."""
        tokenizer = self._require()
        coeffs = self.coefficients(self._check_chunks(chunk))
        if coeffs.ndim != 2:
            raise ValueError(f"encode takes one ({self.time_horizon}, {self.action_dim}) chunk; "
                             f"use encode_batch for shape {coeffs.shape}")
        return tokenizer.encode(self._to_string(coeffs)).ids

    def encode_batch(self, chunks) -> list[list[int]]:
        """Chunks [B, T, D] -> B token-id lists (lengths differ)."""
        tokenizer = self._require()
        coeffs = self.coefficients(chunks).reshape(-1, self.time_horizon, self.action_dim)
        return [e.ids for e in tokenizer.encode_batch([self._to_string(c) for c in coeffs])]

    def _decode_text(self, tokens: Sequence[int], text: str | None = None) -> np.ndarray:
        tokenizer = self._require()
        ids = np.asarray(tokens)
        if ids.ndim != 1:
            raise FastDecodeError(f"tokens must be a flat sequence of ids, got shape {ids.shape}")
        if ids.size == 0:
            raise FastDecodeError("empty token sequence")
        if not np.issubdtype(ids.dtype, np.integer):
            raise FastDecodeError(f"token ids must be integers, got dtype {ids.dtype}")
        out_of_vocab = (ids < 0) | (ids >= tokenizer.get_vocab_size())
        if out_of_vocab.any():
            raise FastDecodeError(f"token id {int(ids[np.argmax(out_of_vocab)])} is outside the "
                                  f"vocabulary [0, {tokenizer.get_vocab_size()})")
        if text is None:
            text = tokenizer.decode(ids.tolist(), skip_special_tokens=False)
        return self.chunks_from_coefficients(self._from_string(text))

    def decode_or_raise(self, tokens: Sequence[int]) -> np.ndarray:
        """Token ids -> normalized chunk [T, D]; FastDecodeError saying why when they are invalid."""
        return self._decode_text(tokens)

    def decode(self, tokens: Sequence[int]) -> tuple[np.ndarray, bool]:
        """Token ids -> (chunk [T, D], ok). On failure: (zeros, False) — always check `ok`."""
        try:
            return self._decode_text(tokens), True
        except FastDecodeError:
            return np.zeros((self.time_horizon, self.action_dim)), False

    def decode_batch(self, token_lists: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """B token-id lists -> (chunks [B, T, D], ok [B] bool); failed rows are zeros."""
        tokenizer = self._require()
        chunks = np.zeros((len(token_lists), self.time_horizon, self.action_dim))
        ok = np.zeros(len(token_lists), dtype=bool)
        lists = [list(t) for t in token_lists]
        vocab = tokenizer.get_vocab_size()
        # Decode the lists whose ids are all in range in one call; the rest fail in _decode_text.
        in_range = [bool(t) and all(isinstance(i, (int, np.integer)) and 0 <= i < vocab for i in t)
                    for t in lists]
        texts = iter(tokenizer.decode_batch([t for t, good in zip(lists, in_range) if good],
                                            skip_special_tokens=False))
        for row, (tokens, good) in enumerate(zip(lists, in_range)):
            try:
                chunks[row] = self._decode_text(tokens, next(texts) if good else None)
                ok[row] = True
            except FastDecodeError:
                pass
        return chunks, ok

    # ------------------------------------------------------------------ persistence

    def config_dict(self) -> dict:
        return {"format": "apo_ros.FastTokenizer", "version": FORMAT_VERSION,
                "time_horizon": self.time_horizon, "action_dim": self.action_dim,
                "scale": self.scale, "requested_vocab_size": self.requested_vocab_size,
                "min_token": self.min_token, "max_token": self.max_token,
                "char_offset": CHAR_OFFSET}

    def save(self, directory: str) -> str:
        """Write fast_tokenizer.json (settings) and tokenizer.json (the BPE) into `directory`."""
        tokenizer = self._require()
        os.makedirs(directory, exist_ok=True)
        tokenizer.save(os.path.join(directory, TOKENIZER_FILENAME))
        path = os.path.join(directory, CONFIG_FILENAME)
        with open(path + ".tmp", "w") as f:
            json.dump(self.config_dict(), f, indent=2)
        os.replace(path + ".tmp", path)
        return directory

    @classmethod
    def load(cls, directory: str) -> FastTokenizer:
        from tokenizers import Tokenizer

        path = os.path.join(directory, CONFIG_FILENAME)
        try:
            with open(path) as f:
                cfg = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no FAST tokenizer settings in {directory}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(cfg, dict) or cfg.get("format") != "apo_ros.FastTokenizer":
            raise ValueError(f"{path}: not an apo_ros FAST tokenizer settings file")
        if cfg.get("version") != FORMAT_VERSION or cfg.get("char_offset") != CHAR_OFFSET:
            raise ValueError(f"{path}: unsupported version {cfg.get('version')} / char_offset "
                             f"{cfg.get('char_offset')}")
        try:
            tok = cls(int(cfg["time_horizon"]), int(cfg["action_dim"]), float(cfg["scale"]),
                      int(cfg["requested_vocab_size"]))
            tok.min_token, tok.max_token = int(cfg["min_token"]), int(cfg["max_token"])
        except KeyError as err:
            raise ValueError(f"{path}: missing key {err}") from None
        bpe_path = os.path.join(directory, TOKENIZER_FILENAME)
        if not os.path.exists(bpe_path):
            raise FileNotFoundError(f"{bpe_path}: missing (the BPE model of the FAST tokenizer)")
        try:
            tok._tokenizer = Tokenizer.from_file(bpe_path)
        except Exception as err:  # tokenizers raises a bare Exception on a malformed file
            raise ValueError(f"{bpe_path}: cannot load the BPE model ({err})") from None
        return tok
