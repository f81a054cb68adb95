"""The action space: layout, normalization statistics, tokenizers, and the safety filter.

The FAST tokenizer (scipy + tokenizers) and the safety filter load on first use, so importing
`apo_ros.actions` for the layout or the bin tokenizer stays light."""

from apo_ros.actions.bins import BinTokenizer
from apo_ros.actions.space import ACTION_DIM, ACTION_NAMES, GRIPPER_INDEX, NORMALIZE_MASK
from apo_ros.actions.statistics import ActionStatistics, load_statistics, save_statistics
from apo_ros.lazy import lazy_exports

_LAZY = {
    "FastDecodeError": "apo_ros.actions.fast",
    "FastTokenizer": "apo_ros.actions.fast",
    "FilterResult": "apo_ros.actions.safety",
    "SafetyConfig": "apo_ros.actions.safety",
    "SafetyFilter": "apo_ros.actions.safety",
    "zero_action": "apo_ros.actions.safety",
}

__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "ACTION_DIM", "ACTION_NAMES", "GRIPPER_INDEX", "NORMALIZE_MASK",
    "ActionStatistics", "BinTokenizer", "FastDecodeError", "FastTokenizer",
    "FilterResult", "SafetyConfig", "SafetyFilter", "load_statistics", "save_statistics",
    "zero_action",
]
