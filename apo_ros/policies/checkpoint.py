"""Policy checkpoints: one directory, safetensors only, with a content hash as the policy id.

Layout (every kind):

    apo_policy.json          {"format": "apo_ros.policy", "version": 1, "kind", "config", "training",
                              "policy_id", "files", "created", "apo_ros_version"}
    dataset_statistics.json  action statistics, OpenVLA layout (apo_ros.actions.statistics)
    action_tokenizer.json    which action tokenizer and its ids (bins / FAST range)
    small:     model.safetensors
    vla_*:     backbone/     transformers save_pretrained (config.json, model.safetensors,
                             tokenizer + processor files) — LoRA merged in by default
               adapter/      peft LoRA adapter (adapter_config.json, adapter_model.safetensors),
                             only when saved with merge_lora=False
    vla_fast:  fast_tokenizer/  FastTokenizer.save (fast_tokenizer.json, tokenizer.json)

`policy_id` = first 12 hex digits of sha256 over the kind + architecture config (canonical JSON)
and every file except apo_policy.json (relative path + bytes, sorted): weights, statistics and
tokenizers. Training notes (`extra`) are not part of it, so the same weights give the same id.
Bags record it in their metadata.

Saving is atomic: everything is written into a temporary sibling directory which is then renamed
into place (an existing checkpoint at the target is replaced; any other existing non-empty
directory is refused). Loading never unpickles: a directory with only .bin/.pt/.pth/.pkl/.ckpt
weights is refused, and a checkpoint that ships its own Python code (transformers `auto_map`)
loads only with `trust_remote_code=True`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile

from apo_ros import __version__
from apo_ros.actions.statistics import STATISTICS_FILENAME, load_statistics, save_statistics
from apo_ros.policies.errors import (
    CheckpointError,
    PickleRefusedError,
    find_pickles,
    require_file,
)
from apo_ros.policies.factory import policy_class

CONFIG_FILENAME = "apo_policy.json"
FORMAT = "apo_ros.policy"
FORMAT_VERSION = 1


def compute_policy_id(directory: str, kind: str, config: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"kind": kind, "config": config}, sort_keys=True).encode())
    paths = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), directory)
            if rel != CONFIG_FILENAME:
                paths.append(rel)
    for rel in sorted(paths):
        h.update(rel.replace(os.sep, "/").encode() + b"\0")
        with open(os.path.join(directory, rel), "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()[:12]


def _replace_dir(tmp: str, directory: str) -> None:
    if os.path.lexists(directory):
        if not os.path.isdir(directory):
            raise CheckpointError(f"{directory}: exists and is not a directory; refusing to overwrite")
        if os.listdir(directory) and not os.path.isfile(os.path.join(directory, CONFIG_FILENAME)):
            raise CheckpointError(f"{directory}: exists, is not empty and is not an apo_ros policy "
                                  "checkpoint; refusing to overwrite it")
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.old-", dir=os.path.dirname(directory))
        os.rename(directory, os.path.join(old, "ckpt"))
        os.rename(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, directory)


def save_policy(policy, directory: str, *, extra: dict | None = None, merge_lora: bool = True) -> str:
    """Write `policy` to `directory` atomically; returns (and sets on the policy) its policy_id.
    `extra`: training facts (objective, steps, data, parent policy id...) kept in apo_policy.json.
    `merge_lora`: LoRA policies save merged full weights (default) or the base + adapter."""
    directory = os.path.abspath(directory)
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.tmp-", dir=parent)
    try:
        config = policy.save_parts(tmp, merge_lora=merge_lora)
        save_statistics(tmp, policy.stats)
        pid = compute_policy_id(tmp, policy.kind, config)
        files = {}
        for root, _dirs, names in os.walk(tmp):
            for name in names:
                rel = os.path.relpath(os.path.join(root, name), tmp)
                files[rel.replace(os.sep, "/")] = os.path.getsize(os.path.join(root, name))
        document = {
            "format": FORMAT, "version": FORMAT_VERSION, "kind": policy.kind, "policy_id": pid,
            "config": config, "training": _jsonable(extra or {}), "files": dict(sorted(files.items())),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "apo_ros_version": __version__,
        }
        with open(os.path.join(tmp, CONFIG_FILENAME), "w") as f:
            json.dump(document, f, indent=2)
        _replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    policy.policy_id = pid
    policy.checkpoint_dir = directory
    return pid


def _jsonable(value):
    """Round-trip through JSON so a bad `extra` fails before anything is renamed into place."""
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def read_checkpoint_config(directory: str) -> dict:
    """The parsed apo_policy.json of a checkpoint, validated; CheckpointError naming the problem."""
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise CheckpointError(f"{directory}: no such policy checkpoint directory")
    path = os.path.join(directory, CONFIG_FILENAME)
    if not os.path.isfile(path):
        pickles = find_pickles(directory)
        if pickles:
            raise PickleRefusedError(f"{directory}: not an apo_ros policy checkpoint (no {CONFIG_FILENAME}) "
                                     f"and its weights are pickle files {pickles}, which apo_ros never loads")
        hint = ""
        if os.path.isfile(os.path.join(directory, "config.json")):
            hint = (" — it looks like a transformers checkpoint: build a policy from it with "
                    f"`apo-ros policy new --kind vla_bins --pretrained {directory} --out DIR`")
        raise CheckpointError(
            f"{directory}: not an apo_ros policy checkpoint ({CONFIG_FILENAME} missing){hint}")
    try:
        with open(path) as f:
            document = json.load(f)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an apo_ros policy config (format != {FORMAT!r})")
    if document.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint version {document.get('version')!r}")
    missing = [k for k in ("kind", "config", "policy_id") if k not in document]
    if missing:
        raise CheckpointError(f"{path}: missing keys {missing}")
    return document


def policy_id(directory: str) -> str:
    """The policy id recorded in a checkpoint (cheap; `verify_policy_id` recomputes it)."""
    return str(read_checkpoint_config(directory)["policy_id"])


def verify_policy_id(directory: str) -> bool:
    """Recompute the content hash and compare with the recorded id (reads every weight byte)."""
    document = read_checkpoint_config(directory)
    return compute_policy_id(os.path.abspath(directory), document["kind"], document["config"]) == \
        document["policy_id"]


def load_policy(directory: str, *, device: str | None = None, trust_remote_code: bool = False,
                lora: bool | None = None):
    """Rebuild a saved policy. `device`: None = CUDA + bf16 when available, else CPU float32.
    `lora` (VLA kinds): None = as saved (a fresh zero adapter for training when the policy was
    built with LoRA), False = plain merged weights (inference), True = force a fresh adapter."""
    directory = os.path.abspath(directory)
    document = read_checkpoint_config(directory)
    kind = document["kind"]
    try:
        cls = policy_class(kind)
    except ValueError as err:
        raise CheckpointError(f"{directory}: {err}") from None
    require_file(directory, STATISTICS_FILENAME, "action statistics")
    try:
        stats = load_statistics(directory)
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{directory}: bad action statistics: {err}") from None
    policy = cls.load_parts(directory, document["config"], stats, device=device,
                            trust_remote_code=trust_remote_code, lora=lora)
    policy.policy_id = str(document["policy_id"])
    policy.checkpoint_dir = directory
    policy.training_info = document.get("training", {})
    return policy
