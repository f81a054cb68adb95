"""Which observation stamps may open a control step, whatever the stream does.

The arbiter opens one control step per new observation and must never let one bad stamp stop
the arm for good (and with it the operator's take-over):

- a stamp more than `tolerance_s` ahead of the receiver's clock is refused ("future"), so a
  message stamped an hour ahead cannot make every real observation after it look old;
- a stamp not newer than the last accepted one is refused ("old": a duplicate or reordered
  message) -- unless it is within `tolerance_s` of the receiver's clock while the last accepted
  stamp is not: the sender's clock stepped back (a restarted driver, a reset simulation, a
  bag replayed), and the stream starts over from it ("reset");
- anything else opens a step ("ok").

Counts per verdict say what happened (for the log and /diagnostics)."""

from __future__ import annotations

from dataclasses import dataclass, field

NS = 1_000_000_000
VERDICTS = ("ok", "future", "old", "reset")


@dataclass
class StampGate:
    tolerance_s: float = 0.5
    last: int = 0  # the last accepted stamp (ns)
    counts: dict[str, int] = field(default_factory=lambda: {v: 0 for v in VERDICTS})

    def check(self, stamp_ns: int, now_ns: int) -> str:
        """The verdict on an observation stamped `stamp_ns` received at `now_ns` (same clock)."""
        tolerance = int(self.tolerance_s * NS)
        if stamp_ns <= 0 or stamp_ns > now_ns + tolerance:
            verdict = "future" if stamp_ns > 0 else "old"
        elif stamp_ns > self.last:
            verdict = "ok"
        elif abs(now_ns - stamp_ns) <= tolerance and abs(now_ns - self.last) > tolerance:
            verdict = "reset"
        else:
            verdict = "old"
        if verdict in ("ok", "reset"):
            self.last = int(stamp_ns)
        self.counts[verdict] += 1
        return verdict
