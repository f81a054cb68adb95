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
