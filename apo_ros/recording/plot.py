"""`apo-ros bags plot`: one row per episode, time on x, who acted when (policy / human / expert)
and which policy steps the labeler calls undesirable; the outcome at the end of each row."""

from __future__ import annotations

import os

import numpy as np

from apo_ros.recording.episode import Episode
from apo_ros.recording.labels import label_episode

COLORS = {
    "policy": "#9ecae1",  # light blue: the policy acted, desirable
    "undesirable": "#d62728",  # red: the K policy steps before a takeover
    "human": "#ff7f0e",  # orange: the operator acted
    "expert": "#2ca02c",  # green: expert demonstration
}
OUTCOME_STYLE = {  # marker, color
    "success": ("o", "#2ca02c"),
    "failure": ("X", "#d62728"),
    "abort": ("s", "#7f7f7f"),
    "unknown": ("d", "#bcbd22"),
}


def _step_classes(episode: Episode, k: int) -> list[str]:
    labels = label_episode(episode, k=k)
    return ["undesirable" if u else s for s, u in zip(episode.sources, labels.undesirable)]


def _runs(values: list[str]) -> list[tuple[int, int, str]]:
    runs, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            runs.append((start, i, values[start]))
            start = i
    return runs


def plot_timeline(episodes: list[Episode], out: str, *, k: int = 10, title: str | None = None) -> str:
    """Draw the timeline PNG (matplotlib Agg) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n = len(episodes)
    height = min(0.42 * n + 1.6, 60.0)
    fig, ax = plt.subplots(figsize=(12, height), dpi=100)
    max_t = 0.0
    total_steps = total_human = 0
    for row, ep in enumerate(episodes):
        y = n - 1 - row  # first episode on top
        if not ep.steps:
            ax.text(0, y, "  no steps", va="center", fontsize=8, color="#7f7f7f")
            continue
        stamps = np.array([s.stamp_ns for s in ep.steps], dtype=np.int64)
        t = (stamps - stamps[0]) / 1e9
        dt = float(np.median(np.diff(t))) if len(t) > 1 else 0.1
        ends = np.append(t[1:], t[-1] + dt)
        classes = _step_classes(ep, k)
        for a, b, cls in _runs(classes):
            ax.broken_barh([(t[a], ends[b - 1] - t[a])], (y - 0.35, 0.7), facecolors=COLORS[cls],
                           edgecolor="none")
        end = float(ends[-1])
        max_t = max(max_t, end)
        marker, color = OUTCOME_STYLE.get(ep.outcome, OUTCOME_STYLE["unknown"])
        ax.plot([end], [y], marker=marker, color=color, markersize=9, markeredgecolor="black",
                markeredgewidth=0.6, zorder=3)
        note = ep.outcome + (" (truncated)" if ep.truncated else "")
        ax.text(end, y, f"   {note}", va="center", fontsize=8, color=color)
        total_steps += len(ep.steps)
        total_human += sum(s.source == "human" for s in ep.steps)

    names = [os.path.basename(ep.path.rstrip("/")) or ep.path for ep in episodes]
    ax.set_yticks(range(n))
    ax.set_yticklabels([(nm if len(nm) <= 32 else "..." + nm[-29:]) for nm in reversed(names)], fontsize=8)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlim(0, max(max_t, 1e-3) * 1.15)  # room for the outcome notes
    ax.set_xlabel("time since the first action (s)")
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ratio = total_human / total_steps if total_steps else 0.0
    plural = "s" if n != 1 else ""
    ax.set_title(title or f"{n} episode{plural}, {total_steps} steps, intervention ratio {ratio:.1%} "
                 f"(undesirable = {k} policy steps before each takeover)", fontsize=10)
    handles = [Patch(color=COLORS[c], label=c) for c in ("policy", "undesirable", "human", "expert")]
    handles += [Line2D([], [], linestyle="none", marker=m, color=c, markeredgecolor="black",
                       label=o) for o, (m, c) in OUTCOME_STYLE.items()]
    fig.legend(handles=handles, loc="lower center", ncol=8, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.4 / height, 1, 1))  # keep a strip at the bottom for the legend
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_group_summary(groups: dict, out: str) -> str:
    """Per round and method of an `apo-ros demo` folder: success rate and intervention ratio
    (two bar panels, one bar per round / method group), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = groups["rounds"]
    labels = [(r["part"] if r["part"] != "round" else f"round{r['round']}\n{r['method']}")
              + (f"\n{r['task']}" if len({x['task'] for x in rows}) > 1 else "") for r in rows]
    x = np.arange(len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.1 * len(rows) + 3), 4.2), dpi=100)
    for ax, key, title in ((axes[0], "success_rate", "success rate"),
                           (axes[1], "intervention_ratio", "intervention ratio (human steps / steps)")):
        values = [r[key] for r in rows]
        colors = [COLORS["expert"] if r["part"] != "round" else
                  (COLORS["policy"] if r["method"] == "base" else COLORS["human"]) for r in rows]
        ax.bar(x, values, color=colors, edgecolor="black", linewidth=0.5)
        for xi, v, r in zip(x, values, rows):
            ax.text(xi, v, f"{v:.0%}\nn={r['episodes']}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_ylim(0, 1.15)
        ax.set_title(title, fontsize=10)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    fig.suptitle("per round and method (demos: expert; round 0: the base; later rounds: each method's "
                 "deployment)", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
