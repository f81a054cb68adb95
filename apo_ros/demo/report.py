"""Results of the method comparison: confidence intervals, results.json / .md / .png."""

from __future__ import annotations

import json
import math
import os

METHOD_ORDER = ("base", "dagger", "sirius", "kto", "tpo", "apo")


def wilson_ci(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a success rate (well-behaved at 0 and n)."""
    if trials <= 0:
        return (0.0, 1.0)
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def method_entry(per_seed: list[tuple[int, int]]) -> dict:
    """per_seed: (successes, episodes) for each training seed -> pooled rate, CI and per-seed rates."""
    k = sum(s for s, _ in per_seed)
    n = sum(e for _, e in per_seed)
    lo, hi = wilson_ci(k, n)
    return {
        "success_rate": k / n if n else 0.0,
        "ci95": [round(lo, 4), round(hi, 4)],
        "episodes": n,
        "successes": k,
        "per_seed": [s / e if e else 0.0 for s, e in per_seed],
    }


def results_markdown(results: dict) -> str:
    methods = results["methods"]
    lines = [
        f"# apo_ros demo — {results['task']}",
        "",
        "Success rate on the same seeded initial states (95% Wilson interval, pooled over training seeds).",
        "",
        "| method | success rate | 95% CI | episodes | per training seed |",
        "|---|---|---|---|---|",
    ]
    for name in METHOD_ORDER:
        if name not in methods:
            continue
        m = methods[name]
        seeds = ", ".join(f"{r:.2f}" for r in m.get("per_seed", []))
        lines.append(f"| {name} | {m['success_rate']:.2f} | [{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}] | "
                     f"{m['episodes']} | {seeds} |")
    if results.get("rounds"):
        lines += ["", "## Lifelong rounds", "", "| round | method | success rate | intervention ratio |",
                  "|---|---|---|---|"]
        for r in results["rounds"]:
            lines.append(f"| {r['round']} | {r['method']} | {r['success_rate']:.2f} | "
                         f"{r['intervention_ratio']:.3f} |")
    d = results.get("data", {})
    lines += ["", f"Data: {d.get('demo_episodes', 0)} expert demos, {d.get('interaction_episodes', 0)} "
              f"interaction episodes, {d.get('interventions', 0)} interventions. "
              f"Run time {results.get('seconds', 0):.0f} s."]
    return "\n".join(lines) + "\n"


def plot_results(results: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in METHOD_ORDER if m in results["methods"]]
    has_rounds = bool(results.get("rounds"))
    fig, axes = plt.subplots(1, 2 if has_rounds else 1, figsize=(11 if has_rounds else 6, 4), squeeze=False)
    ax = axes[0][0]
    rates = [results["methods"][m]["success_rate"] for m in methods]
    lo = [r - results["methods"][m]["ci95"][0] for m, r in zip(methods, rates)]
    hi = [results["methods"][m]["ci95"][1] - r for m, r in zip(methods, rates)]
    colors = ["#888888" if m == "base" else ("#d62728" if m == "apo" else "#1f77b4") for m in methods]
    ax.bar(methods, rates, yerr=[lo, hi], capsize=4, color=colors)
    ax.set_ylim(0, 1)
    ax.set_ylabel("success rate (95% CI)")
    ax.set_title(f"{results['task']}: methods on the same seeded states")
    if has_rounds:
        ax2 = axes[0][1]
        by_method: dict[str, list[dict]] = {}
        for r in results["rounds"]:
            by_method.setdefault(r["method"], []).append(r)
        for name, rows in by_method.items():
            rows = sorted(rows, key=lambda r: r["round"])
            rounds = [r["round"] for r in rows]
            ax2.plot(rounds, [r["success_rate"] for r in rows], marker="o", label=f"{name} success")
            ax2.plot(rounds, [r["intervention_ratio"] for r in rows], marker="x", linestyle="--",
                     label=f"{name} intervention ratio")
        ax2.set_xticks(sorted({r["round"] for r in results["rounds"]}))
        ax2.set_xlabel("round")
        ax2.set_ylim(0, 1)
        ax2.set_title("lifelong loop")
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_results(results: dict, out_dir: str) -> dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "json": os.path.join(out_dir, "results.json"),
        "md": os.path.join(out_dir, "results.md"),
        "png": os.path.join(out_dir, "results.png"),
    }
    with open(paths["json"] + ".tmp", "w") as f:
        json.dump(results, f, indent=2)
    os.replace(paths["json"] + ".tmp", paths["json"])
    with open(paths["md"], "w") as f:
        f.write(results_markdown(results))
    plot_results(results, paths["png"])
    return paths
