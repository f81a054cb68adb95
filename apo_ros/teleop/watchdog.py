"""The policy watchdog: has the policy stopped answering?

The arbiter feeds it every policy command it receives (`answered`, late ones too: a late answer
is still a live policy) and asks at each control step and timer tick (`check`). When the policy
has been silent for `timeout_s` while it is expected to act, `check` says "lost" once (the
arbiter holds the arm and says why); when an answer arrives after that, "back" once (the arbiter
resumes, if it held because of the watchdog). A silent policy is never mistaken for a slow one:
the arm holds within one check interval plus `timeout_s` of the last answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NS = 1_000_000_000


@dataclass
class PolicyWatchdog:
    timeout_s: float = 1.0
    _last_ns: int | None = None  # the last answer (None: none yet, or expecting none)
    lost: bool = False
    losses: int = 0

    def expect(self, now_ns: int) -> None:
        """Start (or restart) expecting answers from now (start-up, resume, hand-back)."""
        if self._last_ns is None or now_ns > self._last_ns:
            self._last_ns = now_ns

    def answered(self, now_ns: int) -> str | None:
        """A policy command arrived; "back" when the policy was lost."""
        self._last_ns = now_ns
        if self.lost:
            self.lost = False
            return "back"
        return None

    def check(self, now_ns: int) -> str | None:
        """"lost" when the policy has been silent for timeout_s (once per loss)."""
        if self.lost or self._last_ns is None or self.timeout_s <= 0:
            return None
        if now_ns - self._last_ns > int(self.timeout_s * NS):
            self.lost = True
            self.losses += 1
            return "lost"
        return None

    def silent_for(self, now_ns: int) -> float:
        return 0.0 if self._last_ns is None else max(0.0, (now_ns - self._last_ns) / NS)


class WatchdogHold:
    """The watchdog driving an arbiter (apo_ros.teleop.arbiter.TeleopArbiter): the arm holds
    when the policy falls silent while it drives, and resumes when it answers again -- unless
    the operator took the decision in between (teleop/hold, teleop/resume)."""

    def __init__(self, arbiter: Any, timeout_s: float):
        self.arbiter = arbiter
        self.dog = PolicyWatchdog(timeout_s)
        self.holding = False  # the arm holds because of the watchdog

    def on_answer(self, now_ns: int) -> list[Any]:
        """A policy command arrived: the arbiter's events (a resume after a watchdog hold)."""
        if self.dog.answered(now_ns) == "back" and self.holding:
            self.holding = False
            return self.arbiter.resume(now_ns)
        return []

    def on_step(self, now_ns: int) -> list[Any]:
        """A control step opened: the arbiter's events (a hold when the policy fell silent)."""
        if self.arbiter.mode.value != "autonomous":
            self.dog.expect(now_ns)  # the silence that counts starts when the policy drives again
            return []
        if self.dog.check(now_ns) == "lost":
            self.holding = True
            return self.arbiter.hold(now_ns, f"the policy has not answered for "
                                             f"{self.dog.silent_for(now_ns):.2f} s")
        return []

    def operator_decided(self) -> None:
        self.holding = False
