"""The action space: layout, normalization statistics, tokenizers, and the safety filter."""

from apo_ros.actions.bins import BinTokenizer
from apo_ros.actions.fast import FastDecodeError, FastTokenizer
from apo_ros.actions.safety import FilterResult, SafetyConfig, SafetyFilter, zero_action
from apo_ros.actions.space import ACTION_DIM, ACTION_NAMES, GRIPPER_INDEX, NORMALIZE_MASK
from apo_ros.actions.statistics import ActionStatistics, load_statistics, save_statistics

__all__ = [
    "ACTION_DIM", "ACTION_NAMES", "GRIPPER_INDEX", "NORMALIZE_MASK",
    "ActionStatistics", "BinTokenizer", "FastDecodeError", "FastTokenizer",
    "FilterResult", "SafetyConfig", "SafetyFilter", "load_statistics", "save_statistics",
    "zero_action",
]
