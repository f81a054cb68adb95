"""Bags -> decoded columns, cached on disk.

Decoding a bag (MCAP + zstd + images) is the slow part of loading training data, so each bag's
decoded columns are written once to `<cache_dir>/<key>/` as plain `.npy` files (no pickle) plus
`meta.json`, and loaded memory-mapped afterwards. The key hashes the bag's files (relative name,
size, mtime) and the cache format version, so an edited / repaired bag gives a new entry.
Entries are written to a temporary folder and renamed (atomic).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence

import numpy as np

from apo_ros.actions.space import ACTION_DIM
from apo_ros.errors import UserError
from apo_ros.observation import PROPRIO_DIM

CACHE_VERSION = 4  # 2: obs_stamp_ns column; 3: object_state and proposed columns; 4: token columns
SOURCE_NAMES: tuple[str, ...] = ("policy", "human", "expert")
SOURCE_CODE = {name: i for i, name in enumerate(SOURCE_NAMES)}


class DataError(UserError, ValueError):
    """A problem with the training data (no usable bags, inconsistent cameras, ...)."""


def default_cache_dir() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "apo_ros", "samples")


def find_bags(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """Expand PATH arguments with the recording area's `find_bags` (the rules `bags info` uses):
    (bag directories as absolute paths, "path: why" for each PATH or folder skipped)."""
    from apo_ros.recording import find_bags as find

    found = find(list(paths))
    return [os.path.abspath(b) for b in found.bags], [f"{path}: {why}" for path, why in found.skipped]


def bag_fingerprint(bag: str) -> list:
    """(relative name, size, mtime_ns) of every file in the bag: changes when the bag does."""
    entries = []
    for root, _dirs, files in os.walk(bag):
        for name in sorted(files):
            full = os.path.join(root, name)
            st = os.stat(full)
            entries.append([os.path.relpath(full, bag), st.st_size, st.st_mtime_ns])
    return sorted(entries)


def cache_key(bag: str) -> str:
    payload = json.dumps({"version": CACHE_VERSION, "files": bag_fingerprint(bag)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


# ---------------------------------------------------------------------------------------------
# One episode -> columns
# ---------------------------------------------------------------------------------------------
def episode_columns(episode) -> dict:
    """Decode an Episode into numpy columns (N = its steps)."""
    steps = episode.steps
    n = len(steps)
    if n == 0:
        raise DataError(f"{episode.path}: episode has no executed steps")
    cameras = sorted(steps[0].observation.images)
    cols: dict = {}
    for cam in cameras:
        try:
            cols[f"image_{cam}"] = np.stack([np.asarray(s.observation.images[cam], dtype=np.uint8)
                                             for s in steps])
        except (KeyError, ValueError) as err:
            raise DataError(f"{episode.path}: camera {cam!r} missing or changing shape ({err})") from None
    cols["proprio"] = np.stack([s.observation.proprio() for s in steps]).astype(np.float32)
    cols["actions"] = np.stack([np.asarray(s.action, dtype=np.float64) for s in steps]).astype(np.float32)
    nan = np.full(ACTION_DIM, np.nan)
    cols["proposed"] = np.stack([nan if s.proposed is None else np.asarray(s.proposed, dtype=np.float64)
                                 for s in steps]).astype(np.float32)
    cols["tokens"], cols["token_space"], token_spaces = _token_columns(steps)
    if cols["actions"].shape != (n, ACTION_DIM) or cols["proprio"].shape != (n, PROPRIO_DIM):
        raise DataError(f"{episode.path}: actions {cols['actions'].shape} / proprio "
                        f"{cols['proprio'].shape} do not have {ACTION_DIM} / {PROPRIO_DIM} values")
    try:
        cols["source"] = np.array([SOURCE_CODE[s.source] for s in steps], dtype=np.int8)
    except KeyError as err:
        raise DataError(f"{episode.path}: unknown action source {err}") from None
    object_states = [s.observation.object_state() for s in steps]
    sizes = sorted({o.shape[0] for o in object_states})
    if len(sizes) > 1:
        raise DataError(f"{episode.path}: object poses change count within the episode ({sizes} values)")
    cols["object_state"] = np.stack(object_states).astype(np.float32).reshape(n, sizes[0])
    cols["stamp_ns"] = np.array([s.stamp_ns for s in steps], dtype=np.int64)
    cols["obs_stamp_ns"] = np.array([s.observation.stamp_ns for s in steps], dtype=np.int64)
    instructions = sorted({s.observation.instruction for s in steps})
    cols["instruction"] = np.array([instructions.index(s.observation.instruction) for s in steps],
                                   dtype=np.int32)
    meta = {"path": episode.path, "n": n, "cameras": cameras, "instructions": instructions,
            "outcome": episode.outcome, "truncated": bool(episode.truncated), "token_spaces": token_spaces,
            "metadata": {k: str(v) for k, v in episode.metadata.items()}}
    return {"columns": cols, "meta": meta}


def _token_columns(steps) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(ids int64 [n, W] (-1 = none; W = the widest step's ids, 0 when no step has any),
    token space int16 [n] (index into the returned list, -1 = none), token spaces)."""
    spaces: list[str] = []
    width = max((len(s.tokens) for s in steps if s.tokens is not None), default=0)
    ids = np.full((len(steps), width), -1, np.int64)
    space = np.full(len(steps), -1, np.int16)
    for i, s in enumerate(steps):
        if s.tokens is None or not s.token_space:
            continue
        if s.token_space not in spaces:
            spaces.append(s.token_space)
        space[i] = spaces.index(s.token_space)
        ids[i, :len(s.tokens)] = np.asarray(s.tokens, dtype=np.int64)
    return ids, space, spaces


def _write_entry(root: str, key: str, decoded: dict) -> str:
    final = os.path.join(root, key)
    tmp = os.path.join(root, f".tmp-{key}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name, arr in decoded["columns"].items():
        np.save(os.path.join(tmp, name + ".npy"), arr, allow_pickle=False)
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(decoded["meta"], f)
    try:
        os.rename(tmp, final)
    except OSError:  # another process wrote the same entry first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _read_entry(entry: str) -> dict:
    with open(os.path.join(entry, "meta.json")) as f:
        meta = json.load(f)
    cols = {}
    for name in os.listdir(entry):
        if name.endswith(".npy"):
            cols[name[:-4]] = np.load(os.path.join(entry, name), mmap_mode="r", allow_pickle=False)
    return {"columns": cols, "meta": meta}


def load_bag(bag: str, cache_dir: str | None) -> tuple[dict, bool]:
    """Decoded columns of one bag, from the cache when present. Returns (decoded, from_cache).
    Raises with a message naming the bag on any problem."""
    from apo_ros.recording import read_episodes

    key = cache_key(bag) if cache_dir else None
    if cache_dir and key:
        entry = os.path.join(cache_dir, key)
        if os.path.isfile(os.path.join(entry, "meta.json")):
            decoded = _read_entry(entry)
            decoded["meta"]["path"] = bag
            return decoded, True
    episodes, errors = read_episodes([bag])
    if errors or not episodes:
        raise DataError("; ".join(f"{p}: {m}" for p, m in errors) or f"{bag}: no episode read")
    decoded = episode_columns(episodes[0])
    if cache_dir and key:
        os.makedirs(cache_dir, exist_ok=True)
        entry = _write_entry(cache_dir, key, decoded)
        decoded = _read_entry(entry)  # memory-mapped from now on; frees the decoded copy
        decoded["meta"]["path"] = bag
    return decoded, False


