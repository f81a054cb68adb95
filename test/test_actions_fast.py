"""FastTokenizer: reconstruction bounded by the scale, explicit decode failure, save/load."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from apo_ros.actions import FastDecodeError, FastTokenizer
from apo_ros.actions.fast import CHAR_OFFSET

T, D = 10, 7


def smooth_chunks(n: int, seed: int = 0, horizon: int = T) -> np.ndarray:
    """Normalized chunks like real ones: smooth motion per dimension + noise, binary gripper."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, horizon)[None, :, None]
    freq = rng.uniform(0.2, 2.0, (n, 1, D))
    phase = rng.uniform(0.0, 6.3, (n, 1, D))
    amp = rng.uniform(0.1, 0.9, (n, 1, D))
    chunks = amp * np.sin(2 * np.pi * freq * t + phase) + rng.normal(0, 0.02, (n, horizon, D))
    chunks[..., 6] = rng.random((n, 1)) > 0.5
    return np.clip(chunks, -1.0, 1.0)


@pytest.fixture(scope="module")
def fitted() -> FastTokenizer:
    return FastTokenizer(T, D, scale=10.0, vocab_size=512).fit(smooth_chunks(300))


def test_round_trip_error_bounded_and_compresses(fitted):
    chunks = smooth_chunks(50, seed=1)
    ids = fitted.encode_batch(chunks)
    assert all(0 <= i < fitted.vocab_size for seq in ids for i in seq)
    # The BPE must actually compress: fewer tokens than coefficients on average.
    assert np.mean([len(s) for s in ids]) < T * D / 2
    decoded, ok = fitted.decode_batch(ids)
    assert ok.all()
    # Rounding moves each scaled coefficient by <= 0.5; the orthonormal inverse DCT keeps the L2
    # norm per dimension, so each value moves by at most sqrt(T) * 0.5 / scale.
    bound = math.sqrt(T) * 0.5 / fitted.scale
    assert np.abs(decoded - chunks).max() <= bound + 1e-9
    # The L2 error per dimension obeys the same bound.
    assert np.linalg.norm(decoded - chunks, axis=1).max() <= bound + 1e-9
    single, ok1 = fitted.decode(fitted.encode(chunks[0]))
    assert ok1 and np.allclose(single, decoded[0])
    assert fitted.clip_count == 0


def test_error_shrinks_with_scale():
    train, test = smooth_chunks(200, seed=2), smooth_chunks(40, seed=3)
    errors = []
    for scale in (2.0, 10.0, 50.0, 200.0):
        tok = FastTokenizer(T, D, scale=scale, vocab_size=600).fit(train)
        decoded, ok = tok.decode_batch(tok.encode_batch(test))
        assert ok.all()
        err = np.abs(decoded - test).max()
        assert err <= math.sqrt(T) * 0.5 / scale + 1e-9
        errors.append(err)
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0] / 20


def test_exact_coefficient_layout(fitted):
    """Row-major [T, D] flattening: frequency 0 of all dims first; one char per coefficient."""
    chunk = np.zeros((T, D))
    chunk[:, 2] = 0.5  # constant -> only the DC coefficient of dim 2 is non-zero
    coeffs = fitted.coefficients(chunk)
    assert coeffs[0, 2] == round(0.5 * math.sqrt(T) * 10) and np.count_nonzero(coeffs) == 1
    text = fitted._tokenizer.decode(fitted.encode(chunk))
    assert len(text) == T * D
    assert ord(text[2]) == CHAR_OFFSET + coeffs[0, 2] - fitted.min_token
    assert {ord(c) for i, c in enumerate(text) if i != 2} == {CHAR_OFFSET - fitted.min_token}


def test_extreme_normalized_chunks_never_clip(fitted):
    """+-1 everywhere is the worst case for the DC coefficient; the default range covers it."""
    for value in (-1.0, 1.0):
        chunk = np.full((T, D), value)
        decoded, ok = fitted.decode(fitted.encode(chunk))
        assert ok and np.abs(decoded - chunk).max() <= math.sqrt(T) * 0.5 / 10
    assert fitted.clip_count == 0


def test_out_of_range_values_are_clipped_and_counted(fitted):
    tok = FastTokenizer.__new__(FastTokenizer)
    tok.__dict__.update(fitted.__dict__)
    tok.clip_count = 0
    chunk = np.zeros((T, D))
    chunk[:, 0] = 40.0  # far outside [-1, 1]
    decoded, ok = tok.decode(tok.encode(chunk))
    assert ok and tok.clip_count == 1  # only the DC coefficient of dim 0 overflows
    assert decoded[:, 0].max() < 40.0


def test_truncated_and_padded_tokens_fail(fitted):
    ids = fitted.encode(smooth_chunks(1, seed=4)[0])
    for bad in (ids[:-1], ids[1:], ids + ids[-1:], [], ids[: len(ids) // 2]):
        chunk, ok = fitted.decode(bad)
        assert not ok and chunk.shape == (T, D) and not chunk.any()
        with pytest.raises(FastDecodeError, match="coefficients|empty"):
            fitted.decode_or_raise(bad)


def test_out_of_vocab_and_malformed_ids_fail(fitted):
    ids = fitted.encode(smooth_chunks(1, seed=5)[0])
    for bad, message in ((ids[:-1] + [fitted.vocab_size], "outside the vocabulary"),
                         (ids[:-1] + [-1], "outside the vocabulary"),
                         ([ids], "flat sequence"),
                         ([0.5] * len(ids), "integers")):
        assert not fitted.decode(bad)[1]
        with pytest.raises(FastDecodeError, match=message):
            fitted.decode_or_raise(bad)


def byte_token_ids(tok: FastTokenizer, text: str) -> list[int]:
    """Spell `text` with single-byte tokens (always in a byte-level BPE vocabulary)."""
    from tokenizers import pre_tokenizers

    (pieces,) = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False).pre_tokenize_str(text)
    return [tok._tokenizer.token_to_id(ch) for ch in pieces[0]]


def test_corrupted_tokens_fail(fitted):
    chunk = smooth_chunks(1, seed=6)[0]
    text = fitted._tokenizer.decode(fitted.encode(chunk))
    # Byte-level spelling of the same text decodes fine: the check is on content, not on ids.
    good = byte_token_ids(fitted, text)
    assert fitted.decode(good)[1]
    # A valid character just outside the coefficient alphabet, at the right length.
    outside = chr(CHAR_OFFSET + fitted.max_token - fitted.min_token + 1)
    bad = byte_token_ids(fitted, outside + text[1:])
    with pytest.raises(FastDecodeError, match="outside the coefficient alphabet"):
        fitted.decode_or_raise(bad)
    # Drop the lead byte of the 2nd character: a lone continuation byte is invalid UTF-8, which
    # decodes to one replacement character, so the count still matches and the content check acts.
    bad = good[:2] + good[3:]
    with pytest.raises(FastDecodeError, match="invalid UTF-8"):
        fitted.decode_or_raise(bad)
    assert not fitted.decode(bad)[1]
    # A character replaced by two continuation bytes: wrong bytes, text of the right length.
    cont = good[1]
    bad = [cont, cont] + good[2:]
    with pytest.raises(FastDecodeError, match="UTF-8|coefficient"):
        fitted.decode_or_raise(bad)


def test_decode_batch_flags_each_row(fitted):
    ids = fitted.encode_batch(smooth_chunks(4, seed=7))
    ids[1] = ids[1][:-1]
    ids[3] = ids[3] + [10**6]
    chunks, ok = fitted.decode_batch(ids)
    assert ok.tolist() == [True, False, True, False]
    assert not chunks[1].any() and not chunks[3].any() and chunks[0].any()


def test_save_load_round_trip(fitted, tmp_path):
    fitted.save(str(tmp_path / "fast"))
    assert sorted(p.name for p in (tmp_path / "fast").iterdir()) == ["fast_tokenizer.json", "tokenizer.json"]
    loaded = FastTokenizer.load(str(tmp_path / "fast"))
    chunks = smooth_chunks(10, seed=8)
    assert loaded.encode_batch(chunks) == fitted.encode_batch(chunks)
    assert loaded.vocab_size == fitted.vocab_size
    assert (loaded.min_token, loaded.max_token, loaded.scale) == (fitted.min_token, fitted.max_token, 10.0)
    np.testing.assert_array_equal(loaded.decode_batch(fitted.encode_batch(chunks))[0],
                                  fitted.decode_batch(fitted.encode_batch(chunks))[0])


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="fast_tokenizer.json"):
        FastTokenizer.load(str(tmp_path))
    (tmp_path / "fast_tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        FastTokenizer.load(str(tmp_path))
    (tmp_path / "fast_tokenizer.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not an apo_ros FAST"):
        FastTokenizer.load(str(tmp_path))


def test_usage_errors():
    tok = FastTokenizer(T, D)
    with pytest.raises(RuntimeError, match="not fitted"):
        tok.encode(np.zeros((T, D)))
    with pytest.raises(ValueError, match="must end in"):
        tok.fit([np.zeros((T + 1, D))])
    with pytest.raises(ValueError, match="NaN"):
        tok.fit([np.full((T, D), np.nan)])
    with pytest.raises(ValueError, match="256"):
        FastTokenizer(T, D, vocab_size=200)
    with pytest.raises(ValueError, match="at least one"):
        tok.fit([])
