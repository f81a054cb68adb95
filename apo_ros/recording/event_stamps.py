"""When an intervention began and ended, on the bag's clock.

The arbiter announces `intervention_start` / `intervention_end` on episode/events (a String: no
stamp), and a recorder receiving it would stamp it on arrival, some milliseconds after the step
it belongs to. The step is known exactly, though: an intervention starts at the first human step
(the executed action whose source is "human", at its observation stamp) and ends at the first
step after it with another source. `EventStamper` pairs each announcement with that step,
whichever of the two arrives first, so the events carry the same stamps as the in-process
session writes. An announcement no step confirms within `wait_s` (the operator handed back while
nobody acted, say) keeps its arrival time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NS = 1_000_000_000
PAIRED = {"intervention_start": True, "intervention_end": False}  # kind -> human run begins?


@dataclass
class EventStamper:
    wait_s: float = 1.0
    _human: bool = False  # is the current run of executed steps human?
    _run_stamp: int = 0  # the stamp of the first step of the current run
    _run_seen_ns: int = -1  # when that step arrived (receiver's clock)
    _pending: list[tuple[str, int]] = field(default_factory=list)  # (kind, arrival)

    def on_action(self, source: str, obs_stamp_ns: int, now_ns: int) -> list[tuple[int, str]]:
        """An executed action arrived; returns the events to write now, as (stamp, kind)."""
        human = source == "human"
        out = self._expired(now_ns)
        if human != self._human or self._run_seen_ns < 0:
            self._human, self._run_stamp, self._run_seen_ns = human, int(obs_stamp_ns), now_ns
            for kind, arrived in list(self._pending):
                if PAIRED[kind] == human:
                    self._pending.remove((kind, arrived))
                    out.append((self._run_stamp, kind))
        return out

    def on_event(self, kind: str, now_ns: int) -> list[tuple[int, str]]:
        """An event arrived; returns the events to write now, as (stamp, kind)."""
        out = self._expired(now_ns)
        if kind not in PAIRED:
            return out + [(now_ns, kind)]
        fresh = self._run_seen_ns >= 0 and now_ns - self._run_seen_ns <= int(self.wait_s * NS)
        if fresh and self._human == PAIRED[kind]:
            out.append((self._run_stamp, kind))  # its step came first
        else:
            self._pending.append((kind, now_ns))
        return out

    def flush(self, now_ns: int) -> list[tuple[int, str]]:
        """What is still waiting (the episode ends): at its arrival time."""
        out = [(arrived, kind) for kind, arrived in self._pending]
        self._pending.clear()
        return out

    def _expired(self, now_ns: int) -> list[tuple[int, str]]:
        late = [(k, t) for k, t in self._pending if now_ns - t > int(self.wait_s * NS)]
        for item in late:
            self._pending.remove(item)
        return [(t, k) for k, t in late]
