"""apo_ros.training: bags -> labeled samples, the objectives, the method registry (one entry per
method: `method_names()`), and the trainer. Names are imported lazily so `apo-ros --help` does not pay for
torch.

    config.py        TrainConfig: every field a YAML key and a CLI flag (`policy`: the --init
                     kind's options, one class per kind in apo_ros.policies.options)
    method_configs.py  each method's own settings (AposConfig, KTOConfig ...), checked by their class
    registry.py      one entry per method: data check, sampler, step loss, config class, default lr
    objectives.py    the losses on plain tensors (TRL style)
    cache.py         bags -> decoded columns, cached on disk
    samples.py       SampleSet: labeled steps, segments, validation split, target tokens
    samplers.py      uniform / balanced / TPO-window samplers (deterministic, resumable)
    augmentation.py  image shift + brightness
    batches.py       rows -> policy inputs and targets for one step
    reference.py     the frozen reference's (cached) scores and z0's mismatched pairs
    distributed.py   DDP under torchrun / accelerate
    metrics.py       metrics.csv / TensorBoard, validation, best weights, early stopping
    state.py         checkpoints and resume state without pickle
    policy_init.py   --init: a checkpoint or a fresh policy of a kind
    trainer.py       the loop: train_policy
"""

from __future__ import annotations

from apo_ros.lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "apo_ros.training.config",
    "PolicyOptions": "apo_ros.policies.options",
    "TrainingError": "apo_ros.training.trainer",
    "train_policy": "apo_ros.training.trainer",
    "prepare_run": "apo_ros.training.trainer",
    "METHODS": "apo_ros.training.registry",
    "Method": "apo_ros.training.registry",
    "register": "apo_ros.training.registry",
    "unregister": "apo_ros.training.registry",
    "method_names": "apo_ros.training.registry",
    "get_method": "apo_ros.training.registry",
    "MethodConfig": "apo_ros.training.method_configs",
    "DataError": "apo_ros.training.cache",
    "LabelConfig": "apo_ros.training.samples",
    "SampleSet": "apo_ros.training.samples",
    "load_samples": "apo_ros.training.samples",
    "kto_loss": "apo_ros.training.objectives",
    "apo_loss": "apo_ros.training.objectives",
    "bc_loss": "apo_ros.training.objectives",
    "tpo_loss": "apo_ros.training.objectives",
    "sirius_weights": "apo_ros.training.objectives",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
