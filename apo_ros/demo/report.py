"""The study's results: success rates with bootstrap intervals, paired differences, lifelong
rounds; results.json / results.md / results.png."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import numpy as np

from apo_ros.demo.config import CONTROLS, study_methods
from apo_ros.demo.keys import evaluation_key, lifelong_key
from apo_ros.demo.stats import bootstrap_difference, bootstrap_mean, bootstrap_ratio

POLICY_LABEL = {"fresh": "fresh-expert control (bc, as many episodes as deployments)",
                "fresh_matched": "matched fresh-expert control (bc, as many steps as the corrections)"}


def policy_order() -> tuple[str, ...]:
    """The tables' order: the base, the registered learning methods, the controls."""
    return ("base", *study_methods())


def _ordered(names) -> list[str]:
    """The compared policies in the tables' order: the known ones, then the variants."""
    order = policy_order()
    return [n for n in order if n in names] + sorted(n for n in names if n not in order)


def _label(name: str, variants: dict) -> str:
    if name in variants:
        v = variants[name]
        extra = ", ".join(f"{k}={x}" for k, x in v.items() if k != "method")
        return f"{name} ({v['method']}{': ' + extra if extra else ''})"
    return POLICY_LABEL.get(name, name)


def _matrix(results: dict, keys: list[str], field: str = "success") -> np.ndarray:
    return np.asarray([results[k][field] for k in keys], dtype=np.float64)


def build_results(config, results: dict, chosen: dict, *, wall_s: float, job_s: float) -> dict:
    c = config
    seeds = range(c.pipeline_seeds)
    draws = c.bootstrap_draws
    out: dict = {"config": asdict(c), "tasks": {}, "wall_s": round(wall_s, 1), "job_s": round(job_s, 1),
                 "policy_kind": c.policy_kind,
                 "controls": [m for m in c.methods if c.is_control(m)]}
    for ti, task in enumerate(c.tasks):
        names = ["base", *c.methods]
        mats = {n: _matrix(results, [evaluation_key(task, p, n, chosen) for p in seeds]) for n in names}
        policies = {}
        for n in names:
            entry = bootstrap_mean(mats[n], draws=draws, seed=ti)
            if n != "base":
                ch = chosen[f"{task}/{n}"]
                entry.update(lr=ch["lr"], steps=ch["steps"], validation=ch["validation"],
                             seeds_agreeing=ch.get("seeds_agreeing"))
                # Recovery: success on the test states the base failed; retention: on those it solved.
                failed = 1.0 - mats["base"]
                if failed.sum() > 0:
                    entry["recovery"] = bootstrap_ratio(mats[n] * failed, failed, draws=draws, seed=ti)
                if mats["base"].sum() > 0:
                    entry["retention"] = bootstrap_ratio(mats[n] * mats["base"], mats["base"], draws=draws,
                                                         seed=ti)
            policies[n] = entry
        paired = {}
        for n in c.methods:
            paired[f"{n} - base"] = bootstrap_difference(mats[n], mats["base"], draws=draws, seed=ti)
        if "apo" in c.methods:
            for n in c.methods:
                if n != "apo":
                    paired[f"apo - {n}"] = bootstrap_difference(mats["apo"], mats[n], draws=draws, seed=ti)
        rounds: dict = {}
        r0 = [results[f"{task}/seed{p}/round0"] for p in seeds]
        for m in c.lifelong_methods:
            rows = []
            for r in range(0, c.rounds + 1):
                if r == 0:
                    succ, sessions = mats["base"], r0
                else:
                    succ = _matrix(results, [evaluation_key(task, p, m, chosen) if r == 1 else
                                             f"{lifelong_key(task, p, m, chosen)}/test{r}" for p in seeds])
                    sessions = [results[f"{lifelong_key(task, p, m, chosen)}/round{r}"] for p in seeds]
                human = np.asarray([[e["human_steps"] for e in s["per_episode"]] for s in sessions], float)
                steps = np.asarray([[e["steps"] for e in s["per_episode"]] for s in sessions], float)
                rows.append({"round": r, "success": bootstrap_mean(succ, draws=draws, seed=ti),
                             "intervention_ratio": bootstrap_ratio(human, steps, draws=draws, seed=ti),
                             "interventions": int(sum(s["interventions"] for s in sessions)),
                             "deployment_successes": int(sum(s["successes"] for s in sessions)),
                             "deployment_episodes": int(sum(len(s["per_episode"]) for s in sessions))})
            rounds[m] = rows
        outcomes: dict[str, int] = {}
        ends: dict[str, int] = {}
        for s in r0:
            for e in s["per_episode"]:
                ends[e["end_reason"] or "success"] = ends.get(e["end_reason"] or "success", 0) + 1
                for o in e["intervention_outcomes"]:
                    outcomes[o] = outcomes.get(o, 0) + 1
        failures: dict[str, int] = {}
        for p in seeds:
            for f in results[f"{task}/seed{p}/test/base"]["failures"]:
                failures[f or "success_or_time_limit"] = failures.get(f or "success_or_time_limit", 0) + 1
        out["tasks"][task] = {
            "policies": policies, "paired": paired, "rounds": rounds,
            "winner": winner(policies, paired, c.methods,
                             controls=out["controls"]),
            "sweep": {m: chosen[f"{task}/{m}"]["sweep"] for m in c.methods},
            "round0": {"episodes": sum(len(s["per_episode"]) for s in r0),
                       "interventions": int(sum(s["interventions"] for s in r0)),
                       "human_steps": int(sum(s["human_steps"] for s in r0)),
                       "steps": int(sum(s["steps"] for s in r0)),
                       "intervention_outcomes": outcomes, "episode_ends": ends},
            "base_test_failures": failures,
        }
    return out


def winner(policies: dict, paired: dict, methods, controls=CONTROLS) -> dict:
    """The method a user should run: the learning method (controls aside) with the highest test
    success, and whether its paired interval against the base lies above zero."""
    learners = [m for m in methods if m not in controls]
    if not learners:
        return {}
    best = max(learners, key=lambda m: policies[m]["mean"])
    d = paired[f"{best} - base"]
    return {"method": best, "success": policies[best]["mean"], "minus_base": d["diff"],
            "ci95": d["ci95"], "above_base": bool(d["ci95"][0] > 0)}


def winner_line(task: str, w: dict) -> str:
    if not w:
        return f"{task}: no learning method was compared."
    verdict = ("above the base (paired interval above zero)" if w["above_base"] else
               "not distinguishable from the base" if w["ci95"][1] > 0 else "below the base")
    return (f"{task}: best method {w['method']} ({w['success']:.3f}, {w['minus_base']:+.3f} against "
            f"the base [{w['ci95'][0]:+.3f}, {w['ci95'][1]:+.3f}]): {verdict}.")


def sampling_note(c: dict) -> str:
    """Which batch sampling each compared method used (the tables' stated setting)."""
    shared = (c.get("train_overrides") or {}).get("sampling")
    if shared:
        return f"Batch sampling: {shared} for every method."
    named = [f"{n}: {v['sampling']}" for n, v in (c.get("variants") or {}).items()
             if "sampling" in v and n in c.get("methods", [])]
    return ("Batch sampling: each method's default (bc, dagger, sirius, tpo: the data's natural "
            "shares; kto, apo: the released 0.5 desirable / 0.25 human / 0.25 undesirable mix)"
            + (f"; {', '.join(named)}" if named else "") + ".")


def _ci(e: dict, key: str = "mean") -> str:
    return f"{e[key]:.3f} [{e['ci95'][0]:.3f}, {e['ci95'][1]:.3f}]"


def study_markdown(res: dict) -> str:
    c = res["config"]
    kind = ("state policy (MLP over proprio + object poses, no images)" if res["policy_kind"] == "state"
            else "small image policy (CNN over both 64 px cameras)")
    lines = [f"# apo_ros study - {', '.join(c['tasks'])}", "",
             f"Policy: {kind}. {c['pipeline_seeds']} pipeline seeds (demos, base, deployment, methods "
             f"all redrawn), {c['demo_episodes']} expert demos and {c['interaction_episodes']} operator "
             f"deployments per seed; every method tuned the same way (lr in {c['sweep_lrs']} x steps in "
             f"{c['sweep_steps']}, chosen on {c['validation_episodes']} validation episodes per seed), "
             f"then {c['test_episodes']} test episodes per policy and seed on the same initial states. "
             "Intervals: 95% bootstrap over pipeline seeds and test episodes. Settings shared by every "
             f"method: {c.get('train_overrides') or 'the trainer defaults'}"
             + (f"; base demos from {c['demo_task']}" if c.get("demo_task") else "") + ". "
             + sampling_note(c), ""]
    for task, t in res["tasks"].items():
        lines += [f"## {task}", "", f"**{winner_line(task, t.get('winner', {}))}**", "",
                  "| policy | success [95% CI] | per pipeline seed | recovery | retention | lr | steps | "
                  "validation | seeds choosing it |", "|---|---|---|---|---|---|---|---|---|"]
        for n in _ordered(t["policies"]):
            e = t["policies"][n]
            seeds = ", ".join(f"{v:.2f}" for v in e["per_seed"])
            kept = " | ".join(_ci(e[k]) if k in e else "-" for k in ("recovery", "retention"))
            agree = e.get("seeds_agreeing")
            agree_text = "-" if agree is None else f"{agree}/{len(e['per_seed'])}"
            tuned = (f"{e['lr']:g} | {e['steps']} | {e['validation']:.2f} | {agree_text}"
                     if n != "base" else "- | - | - | -")
            lines.append(f"| {_label(n, c.get('variants', {}))} | {_ci(e)} | {seeds} | {kept} | {tuned} |")
        lines += ["", "Recovery: success on the test states where the base failed; retention: on those "
                  "it solved. Seeds choosing it: pipeline seeds whose own validation picks the same "
                  "setting."]
        lines += ["", "| paired difference | mean [95% CI] | P(> 0) | per pipeline seed |",
                  "|---|---|---|---|"]
        for name, d in t["paired"].items():
            seeds = ", ".join(f"{v:+.2f}" for v in d["per_seed"])
            lines.append(f"| {name} | {d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] | "
                         f"{d['p_above_zero']:.2f} | {seeds} |")
        if t["rounds"]:
            lines += ["", "| round | method | success [95% CI] | intervention ratio [95% CI] | "
                      "interventions |", "|---|---|---|---|---|"]
            for m, rows in t["rounds"].items():
                for r in rows:
                    lines.append(f"| {r['round']} | {m} | {_ci(r['success'])} | "
                                 f"{_ci(r['intervention_ratio'])} | {r['interventions']} |")
        r0 = t["round0"]
        lines += ["", f"Round 0: {r0['episodes']} deployments, {r0['interventions']} interventions, "
                  f"{r0['human_steps']} of {r0['steps']} steps by the operator; intervention outcomes "
                  f"{r0['intervention_outcomes']}; episode ends {r0['episode_ends']}.", ""]
    lines.append(f"Wall time {res['wall_s'] / 60:.1f} min over all runs of this study (resumed or "
                 f"concurrent runs counted once), {res['job_s'] / 60:.1f} min of job time.")
    return "\n".join(lines) + "\n"


def plot_study(res: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(res["tasks"])
    fig, axes = plt.subplots(len(tasks), 2, figsize=(12, 3.8 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        t = res["tasks"][task]
        names = _ordered(t["policies"])
        means = [t["policies"][n]["mean"] for n in names]
        lo = [m - t["policies"][n]["ci95"][0] for n, m in zip(names, means)]
        hi = [t["policies"][n]["ci95"][1] - m for n, m in zip(names, means)]
        controls = res.get("controls", CONTROLS)
        colors = ["#888888" if n == "base" else "#d62728" if n == "apo" else "#2ca02c" if n in controls
                  else "#1f77b4" for n in names]
        ax = axes[row][0]
        ax.bar(names, means, yerr=[lo, hi], capsize=4, color=colors)
        ax.set_ylim(0, 1)
        ax.tick_params(axis="x", labelrotation=30)
        ax.set_ylabel("test success (95% CI)")
        ax.set_title(f"{task}: every method from the base, same test states")
        ax2 = axes[row][1]
        for m, rows in t["rounds"].items():
            rr = [r["round"] for r in rows]
            ax2.plot(rr, [r["success"]["mean"] for r in rows], marker="o", label=f"{m} success")
            ax2.plot(rr, [r["intervention_ratio"]["mean"] for r in rows], marker="x", linestyle="--",
                     label=f"{m} intervention ratio")
        ax2.set_ylim(0, 1)
        ax2.set_xlabel("round")
        ax2.set_title(f"{task}: lifelong rounds")
        if t["rounds"]:
            ax2.set_xticks(sorted({r["round"] for rows in t["rounds"].values() for r in rows}))
            ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_study_results(res: dict, out_dir: str) -> dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f"results.{k}") for k in ("json", "md", "png")}
    with open(paths["json"] + ".tmp", "w") as f:
        json.dump(res, f, indent=1)
    os.replace(paths["json"] + ".tmp", paths["json"])
    with open(paths["md"], "w") as f:
        f.write(study_markdown(res))
    plot_study(res, paths["png"])
    return paths
