"""Where a run starts: a checkpoint directory, or a policy kind built fresh with statistics from
the training demos. `check_init` validates --init and the policy options BEFORE any bag is read."""

from __future__ import annotations

import os

import numpy as np
import torch

from apo_ros.errors import ConfigError
from apo_ros.policies.factory import policy_kind, policy_kinds
from apo_ros.training.cache import DataError
from apo_ros.training.config import TrainConfig
from apo_ros.training.samples import SampleSet


def is_kind(init: str) -> bool:
    return init in policy_kinds() and not os.path.isdir(init)


def check_init(init: str, config: TrainConfig) -> None:
    """Raise a one-line error now when --init is neither a kind nor a loadable checkpoint
    directory, or when the policy options do not fit the kind (before the data is loaded)."""
    if is_kind(init):
        config.policy_options(init)  # ConfigError naming a wrong option
        return
    errors = []
    for kind in policy_kinds():  # the options are ignored below, but must still fit some kind
        try:
            config.policy_options(kind)
            break
        except ConfigError as err:
            errors.append(err)
    else:
        raise errors[0]  # naming the options the first kind does not take
    if not os.path.isdir(init):
        raise DataError(f"--init {init}: neither a checkpoint directory nor a policy kind "
                        f"({', '.join(policy_kinds())})")
    from apo_ros.policies.checkpoint import read_checkpoint_config

    read_checkpoint_config(init)  # CheckpointError naming the missing / malformed file


def statistics_from_samples(samples: SampleSet):
    """Action statistics of the training demos (all training rows when there are no demos), with
    proprio and object-pose mean / std in `extra` for the small and state policies."""
    from apo_ros.actions.statistics import ActionStatistics

    train = samples.trainable_rows()
    rows = samples.is_demo & train if (samples.is_demo & train).any() else train
    stats = ActionStatistics.from_actions(samples.actions[rows],
                                          num_trajectories=len(np.unique(samples.episode[rows])))
    proprio = samples.proprio[rows].astype(np.float64)
    stats.extra["proprio"] = {"mean": proprio.mean(0).tolist(), "std": proprio.std(0).tolist()}
    if samples.object_state.shape[1]:
        objects = samples.object_state[rows].astype(np.float64)
        stats.extra["object_state"] = {"mean": objects.mean(0).tolist(), "std": objects.std(0).tolist()}
    return stats


def init_policy(init: str, config: TrainConfig, samples: SampleSet, device: str | None):
    """(policy, facts about where it came from). A kind name builds a fresh policy with
    statistics from the training demos; anything else is a checkpoint directory."""
    from apo_ros.policies import build_policy, load_policy

    torch.manual_seed(config.seed)  # fresh weights / fresh LoRA adapters are a function of the seed
    if is_kind(init):
        stats = statistics_from_samples(samples)
        options = config.policy_options(init).build_options()
        if device is not None:
            options["device"] = device
        policy = build_policy(init, stats, instructions=list(samples.instructions), **options)
        if policy_kind(init).fits_tokenizer:
            _fit_fast_tokenizer(policy, samples)
        return policy, {"init": init, "init_kind": init, "init_options": {k: v for k, v in options.items()
                                                                            if k != "device"},
                        "init_policy_id": None}
    check_init(init, config)
    policy = load_policy(init, device=device)  # its architecture is fixed: policy options unused
    return policy, {"init": os.path.abspath(init), "init_kind": policy.kind,
                    "init_policy_id": policy.policy_id}


def _fit_fast_tokenizer(policy, samples: SampleSet) -> None:
    """Fit the FAST BPE on the training actions' chunks (as pi0-FAST fits it on its data), not
    on the synthetic chunks a fresh vla_fast starts with."""
    train = samples.trainable_rows() & ~samples.continues_chunk  # labels come later
    rows = np.nonzero(samples.is_demo & train)[0] if (samples.is_demo & train).any() else np.nonzero(train)[0]
    chunks = samples.action_targets(rows, int(policy.chunk_size)).reshape(len(rows), policy.chunk_size, -1)
    policy.refit_fast_tokenizer(chunks.astype(np.float64))
