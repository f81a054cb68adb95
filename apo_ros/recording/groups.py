"""Episodes grouped the way `apo-ros demo` lays out its bags, for per-round and per-method summaries.

The demo writes, under its output folder (the one holding study_config.json):

    <task>/seed<p>/demos/<bag>                  expert demonstrations
    <task>/seed<p>/fresh_demos/<bag>            the fresh-expert control's new demos
    <task>/seed<p>/rounds/round0/<bag>          the base policy deployed with the operator
    <task>/seed<p>/rounds/round<r>/<tag>/<bag>  generation r of a method (tag: method_lr..._s...)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from apo_ros.recording.episode import Episode

_LAYOUT = re.compile(r"(?:^|/)(?P<task>[^/]+)/seed(?P<seed>\d+)/(?:(?P<demos>demos|fresh_demos)|"
                     r"rounds/round(?P<round>\d+)(?:/(?P<tag>[^/]+))?)/[^/]+/?$")


@dataclass(frozen=True)
class RunGroup:
    task: str
    seed: int  # pipeline seed
    part: str  # "demos" | "fresh_demos" | "round"
    round: int  # -1 for demos
    method: str  # "expert" for demos, "base" for round 0, else the method of the tag

    @property
    def label(self) -> str:
        return self.part if self.part != "round" else f"round{self.round} {self.method}"


def run_group(bag_path: str) -> RunGroup | None:
    """Where a bag sits in a demo output folder, or None when it is not laid out like one."""
    m = _LAYOUT.search(os.path.abspath(bag_path).replace(os.sep, "/"))
    if m is None:
        return None
    task, seed = m["task"], int(m["seed"])
    if m["demos"]:
        return RunGroup(task, seed, m["demos"], -1, "expert")
    r = int(m["round"])
    tag = m["tag"]
    method = tag.split("_lr")[0] if tag else "base"
    return RunGroup(task, seed, "round", r, method)


def _totals(episodes: list[Episode], human_of) -> dict:
    steps = sum(len(e.steps) for e in episodes)
    human = sum(human_of(e) for e in episodes)
    successes = sum(e.outcome == "success" for e in episodes)
    return {"episodes": len(episodes), "successes": successes,
            "success_rate": round(successes / len(episodes), 4) if episodes else 0.0,
            "interventions": sum(len(e.interventions()) for e in episodes),
            "steps": steps, "human_steps": human,
            "intervention_ratio": round(human / steps, 6) if steps else 0.0}


def summarize_groups(episodes: list[Episode]) -> dict | None:
    """{"rounds": [...], "methods": [...]} for the episodes in a demo layout (None if none is).

    rounds: one row per (task, part/round, method) over the pipeline seeds; methods: one row per
    (task, method) over its deployment rounds (round 0 counts as the base's)."""
    groups: dict[RunGroup, list[Episode]] = {}
    for ep in episodes:
        g = run_group(ep.path)
        if g is not None:
            groups.setdefault(g, []).append(ep)
    if not groups:
        return None

    def human_of(e: Episode) -> int:
        return sum(s.source == "human" for s in e.steps)

    by_round: dict[tuple, list[Episode]] = {}
    by_method: dict[tuple, list[Episode]] = {}
    seeds: dict[tuple, set] = {}
    for g, eps in groups.items():
        key = (g.task, g.part, g.round, g.method)
        by_round.setdefault(key, []).extend(eps)
        seeds.setdefault(key, set()).add(g.seed)
        if g.part == "round":
            by_method.setdefault((g.task, g.method), []).extend(eps)
    order = sorted(by_round.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][3]))
    rounds = [{"task": t, "part": p, "round": r, "method": m, "pipeline_seeds": len(seeds[(t, p, r, m)]),
               **_totals(eps, human_of)} for (t, p, r, m), eps in order]
    methods = [{"task": t, "method": m, **_totals(eps, human_of)}
               for (t, m), eps in sorted(by_method.items())]
    return {"rounds": rounds, "methods": methods}


def format_group_tables(doc: dict) -> list[str]:
    """The per-round and per-method tables as text lines."""
    lines = []
    for title, rows, first in (("per round", doc["rounds"], ("task", "part", "method")),
                               ("per method (deployment rounds)", doc["methods"], ("task", "method"))):
        header = (*first, "episodes", "success", "interv", "human/steps")
        table = [header]
        for r in rows:
            part = [r["task"]] + ([r["part"] if r["part"] != "round" else f"round{r['round']}"]
                                  if "part" in r else []) + [r["method"]]
            table.append((*part, str(r["episodes"]), f"{r['success_rate']:.0%}", str(r["interventions"]),
                          f"{r['intervention_ratio']:.1%}"))
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines.append(f"{title}:")
        for row in table:
            lines.append("  " + "  ".join(c.ljust(w) if i < len(first) else c.rjust(w)
                                          for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    return lines
