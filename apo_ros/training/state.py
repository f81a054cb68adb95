"""Training state on disk without pickle: tensors in safetensors, small state in JSON.

`torch.save` is pickle (loading it can run code), so a resumable checkpoint here is:

    trainer_state/
      trainable.safetensors   the trainable parameters by name (all weights of a small policy,
                              the LoRA adapter of a VLA)
      optimizer.safetensors   every tensor of optimizer.state_dict()["state"], keyed "<index>.<name>"
      rng.safetensors         torch CPU (and CUDA) generator states
      state.json              step, config, sampler state, optimizer param groups and non-tensor
                              optimizer state, data and reference facts
"""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import load_file, save_file

STATE_DIR = "trainer_state"


def save_trainable(policy: torch.nn.Module, path: str) -> None:
    tensors = {name: p.detach().cpu().contiguous()
               for name, p in policy.named_parameters() if p.requires_grad}
    save_file(tensors, path)


def load_trainable(policy: torch.nn.Module, path: str) -> None:
    tensors = load_file(path)
    params = dict(policy.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise ValueError(f"{path}: trainable parameters do not match the policy "
                         f"(missing {missing[:5]}, unexpected {extra[:5]})")
    with torch.no_grad():
        for name, value in tensors.items():
            if params[name].shape != value.shape:
                raise ValueError(f"{path}: {name} has shape {tuple(value.shape)}, the policy's is "
                                 f"{tuple(params[name].shape)}")
            params[name].copy_(value.to(params[name].device, params[name].dtype))


def optimizer_to_files(optimizer: torch.optim.Optimizer, path: str) -> dict:
    """Write the optimizer's tensors to `path` (safetensors); return the JSON-able rest."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in sd["state"].items():
        for name, value in entry.items():
            key = f"{index}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().cpu().contiguous()
            else:
                scalars[key] = value
    save_file(tensors, path)
    return {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_files(optimizer: torch.optim.Optimizer, path: str, rest: dict) -> None:
    tensors = load_file(path)
    state: dict = {}
    for key, value in list(tensors.items()) + list(rest.get("scalars", {}).items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def rng_to_file(path: str) -> None:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    save_file(tensors, path)


def rng_from_file(path: str) -> None:
    tensors = load_file(path)
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_state(directory: str, *, policy: torch.nn.Module, optimizer: torch.optim.Optimizer,
               state: dict) -> None:
    """Write trainer_state/ into `directory` (the caller makes the whole checkpoint atomic)."""
    folder = os.path.join(directory, STATE_DIR)
    os.makedirs(folder, exist_ok=True)
    save_trainable(policy, os.path.join(folder, "trainable.safetensors"))
    state = dict(state)
    state["optimizer"] = optimizer_to_files(optimizer, os.path.join(folder, "optimizer.safetensors"))
    rng_to_file(os.path.join(folder, "rng.safetensors"))
    with open(os.path.join(folder, "state.json"), "w") as f:
        json.dump(state, f, indent=1)


def read_state(directory: str) -> dict:
    path = os.path.join(directory, STATE_DIR, "state.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read training state ({err})") from None


def load_state(directory: str, *, policy: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore trainable weights, optimizer and RNG from `directory`; return state.json."""
    folder = os.path.join(directory, STATE_DIR)
    state = read_state(directory)
    load_trainable(policy, os.path.join(folder, "trainable.safetensors"))
    optimizer_from_files(optimizer, os.path.join(folder, "optimizer.safetensors"), state["optimizer"])
    rng_from_file(os.path.join(folder, "rng.safetensors"))
    return state


def list_checkpoints(out: str) -> list[tuple[int, str]]:
    """(step, directory) of the complete periodic checkpoints under `<out>/checkpoints`, in order."""
    folder = os.path.join(out, "checkpoints")
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        if name.startswith("step-") and name[5:].isdigit():
            path = os.path.join(folder, name)
            if os.path.isfile(os.path.join(path, STATE_DIR, "state.json")):
                found.append((int(name[5:]), path))
    return sorted(found)


def write_checkpoint(out: str, step: int, *, policy, optimizer: torch.optim.Optimizer, state: dict,
                     policy_extra: dict, keep: int) -> str:
    """`<out>/checkpoints/step-N/` = policy/ (loadable) + trainer_state/ (resume), written to a
    temporary folder and renamed (atomic); only the newest `keep` are kept."""
    import shutil

    from apo_ros.policies import save_policy

    folder = os.path.join(out, "checkpoints")
    os.makedirs(folder, exist_ok=True)
    final = os.path.join(folder, f"step-{step:08d}")
    tmp = os.path.join(folder, f".tmp-step-{step:08d}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_policy(policy, os.path.join(tmp, "policy"), extra={**policy_extra, "step": step})
    save_state(tmp, policy=policy, optimizer=optimizer, state=state)
    if os.path.isdir(final):
        shutil.rmtree(final)
    os.rename(tmp, final)
    for _step, old in list_checkpoints(out)[:-max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final
