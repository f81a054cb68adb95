"""apo_ros.training: bags -> labeled samples, objectives (bc, dagger, sirius, kto, tpo, apo), and
the trainer. Names are imported lazily so `apo-ros --help` does not pay for torch."""

from __future__ import annotations

from apo_ros.lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "apo_ros.training.trainer",
    "TrainingError": "apo_ros.training.trainer",
    "train_policy": "apo_ros.training.trainer",
    "METHODS": "apo_ros.training.trainer",
    "DataError": "apo_ros.training.data",
    "LabelConfig": "apo_ros.training.data",
    "SampleSet": "apo_ros.training.data",
    "load_samples": "apo_ros.training.data",
    "kto_loss": "apo_ros.training.objectives",
    "apo_loss": "apo_ros.training.objectives",
    "bc_loss": "apo_ros.training.objectives",
    "tpo_loss": "apo_ros.training.objectives",
    "sirius_weights": "apo_ros.training.objectives",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
