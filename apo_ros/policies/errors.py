"""The errors a policy checkpoint raises, and the one file check that raises them: every policy
module reads its files through these, so none of them imports the checkpoint module."""

from __future__ import annotations

import json
import os

from apo_ros.errors import UserError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class CheckpointError(UserError, ValueError):
    """A policy checkpoint that is missing pieces or is malformed; the message says which."""


class PickleRefusedError(CheckpointError):
    """The weights exist only in a pickle-based format, which apo_ros never loads."""


class RemoteCodeRefusedError(CheckpointError):
    """The checkpoint needs its own Python code and trust_remote_code was not given."""


def find_pickles(directory: str) -> list[str]:
    """Relative paths of pickle-format weight files under `directory`."""
    found = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            if name.endswith(PICKLE_SUFFIXES):
                found.append(os.path.relpath(os.path.join(root, name), directory))
    return sorted(found)


def require_file(directory: str, name: str, what: str) -> str:
    """Path of `directory/name`; a CheckpointError naming it (and any pickle found instead)."""
    path = os.path.join(directory, name)
    if os.path.isfile(path):
        return path
    pickles = find_pickles(directory) if os.path.isdir(directory) else []
    if pickles:
        raise PickleRefusedError(
            f"{directory}: {what} missing ({name}); found only pickle weights {pickles}. apo_ros loads "
            "safetensors only (pickle files can run code when loaded) — convert them with "
            "safetensors (e.g. transformers `save_pretrained(..., safe_serialization=True)`) in an "
            "environment you trust")
    raise CheckpointError(f"{directory}: {what} missing ({name})")


def check_remote_code(directory: str, trust_remote_code: bool) -> None:
    """Refuse a transformers checkpoint whose config maps to its own code unless trusted."""
    path = os.path.join(directory, "config.json")
    try:
        with open(path) as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{directory}: transformers config missing (config.json)") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if cfg.get("auto_map") and not trust_remote_code:
        raise RemoteCodeRefusedError(
            f"{directory}: this checkpoint ships its own Python code (auto_map in config.json: "
            f"{sorted(cfg['auto_map'])}); it runs only with trust_remote_code=True "
            "(CLI: --trust-remote-code) — pass it only for code you have read and trust")
