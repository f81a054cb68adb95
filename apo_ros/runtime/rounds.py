"""Training rounds on request (the trainer node's core): one round at a time, in a background
thread; each round starts from the previous round's checkpoint and, when done, announces the new
one (the policy node hot-swaps to it)."""

from __future__ import annotations

import os
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from apo_ros.training.trainer import TrainConfig, train_policy

# train_fn(init_checkpoint, out_dir, round_index) -> new checkpoint directory
TrainFn = Callable[[str, str, int], str]


@dataclass
class RoundResult:
    index: int
    checkpoint: str = ""  # empty when the round failed
    error: str = ""  # one line; the traceback goes to the log


@dataclass
class TrainingRounds:
    train_fn: TrainFn
    init_checkpoint: str  # round 1 starts here
    out_dir: str  # round k writes <out_dir>/round_<k>
    on_done: Callable[[RoundResult], None] | None = None  # called from the training thread
    history: list[RoundResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.current = self.init_checkpoint

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    def request(self) -> tuple[bool, str]:
        """Start a round unless one is running. Returns (started, message) for a Trigger reply."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False, f"round {len(self.history) + 1} is still training"
            index = len(self.history) + 1
            out = os.path.join(self.out_dir, f"round_{index:03d}")
            self._thread = threading.Thread(target=self._run, args=(index, self.current, out),
                                            name=f"training-round-{index}", daemon=True)
            self._thread.start()
        return True, f"round {index} started from {self.current or 'scratch'} -> {out}"

    def _run(self, index: int, init: str, out: str) -> None:
        try:
            ckpt = self.train_fn(init, out, index)
            result = RoundResult(index, checkpoint=str(ckpt))
            self.current = result.checkpoint
        except Exception as err:  # a failed round is reported, the node keeps serving
            traceback.print_exc()
            result = RoundResult(index, error=f"{type(err).__name__}: {err}")
        self.history.append(result)
        if self.on_done is not None:
            self.on_done(result)

    def wait(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)


def make_train_fn(*, demos: list[str], data: list[str], config_path: str = "", method: str = "apo",
                  steps: int = 500, device: str | None = None) -> TrainFn:
    """A TrainFn over apo_ros.training.train_policy: options from `config_path` (TrainConfig YAML)
    when given, else method / steps / device."""

    def train(init: str, out: str, index: int) -> str:
        overrides = {"method": method, "steps": steps, "device": device, "progress": False}
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if config_path:
            config = TrainConfig.from_yaml(config_path, **overrides)
        else:
            config = TrainConfig.from_dict(overrides, source="trainer_node parameters")
        return str(train_policy(config, list(demos), list(data), init, out))

    return train
