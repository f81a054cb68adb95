"""apo_ros.recording: episode bags (rosbag2 / MCAP) — schema, writer, reader, labeling, repair.

Names are imported lazily so `apo-ros --help` does not pay for rosbags / numpy.
"""

from __future__ import annotations

from apo_ros.lazy import lazy_exports

_EXPORTS = {
    "EpisodeWriter": "apo_ros.recording.writer",
    "install_signal_handlers": "apo_ros.recording.writer",
    "Step": "apo_ros.recording.episode",
    "Episode": "apo_ros.recording.episode",
    "OUTCOMES": "apo_ros.recording.episode",
    "read_episode": "apo_ros.recording.reader",
    "read_episodes": "apo_ros.recording.reader",
    "find_bags": "apo_ros.recording.reader",
    "FoundBags": "apo_ros.recording.reader",
    "BagError": "apo_ros.recording.reader",
    "label_episode": "apo_ros.recording.labels",
    "label_sources": "apo_ros.recording.labels",
    "EpisodeLabels": "apo_ros.recording.labels",
    "SIRIUS_CLASSES": "apo_ros.recording.labels",
    "repair_bag": "apo_ros.recording.repair",
    "RepairReport": "apo_ros.recording.repair",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
