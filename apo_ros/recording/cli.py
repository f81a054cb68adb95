"""`apo-ros bags info | plot | repair`: look at, draw and salvage episode bags."""

from __future__ import annotations

import argparse
import json
import sys

from apo_ros.errors import UserError, check_writable

DEFAULT_K = 10


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to `apo-ros`."""
    p = sub.add_parser("bags", help="episode bags: info, plot, repair",
                       description="Inspect, draw and repair rosbag2 episode bags.")
    bags = p.add_subparsers(dest="bags_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    info = bags.add_parser("info", help="per-episode steps, interventions, labels; totals",
                           description="Per episode: steps, duration, interventions, human steps, "
                           "undesirable steps at K, outcome, truncated; then totals and the "
                           "intervention ratio (human steps / all executed steps). PATHs are bags "
                           "or directories searched for bags. Exit 1 if any bag is bad, 2 if none "
                           "is readable.")
    info.add_argument("paths", nargs="+", metavar="PATH", help="bag directories or folders of bags")
    info.add_argument("--json", action="store_true", help="print one JSON document")
    info.add_argument("--k", type=int, default=DEFAULT_K,
                      help=f"undesirable policy steps before each intervention (default {DEFAULT_K})")
    info.set_defaults(func=run_info)

    plot = bags.add_parser("plot", help="timeline PNG: who acted when, undesirable steps, outcomes",
                           description="One row per episode, time on x, colored spans for policy / "
                           "human / expert / undesirable steps, the outcome marked at the end.")
    plot.add_argument("paths", nargs="+", metavar="PATH", help="bag directories or folders of bags")
    plot.add_argument("-o", "--output", default="timeline.png", help="PNG to write (default timeline.png)")
    plot.add_argument("--k", type=int, default=DEFAULT_K,
                      help=f"K for undesirable steps (default {DEFAULT_K})")
    plot.set_defaults(func=run_plot)

    rep = bags.add_parser("repair", help="salvage a bag whose writer died (kill -9, crash)",
                          description="Rewrite every complete record of a damaged MCAP bag into a new "
                          "bag (default PATH_repaired), marked truncated. The original is not modified.")
    rep.add_argument("path", metavar="PATH", help="the damaged bag directory or its .mcap file")
    rep.add_argument("-o", "--output", default=None, help="the new bag (default PATH_repaired)")
    rep.add_argument("--force", action="store_true", help="rewrite even a bag that reads fine")
    rep.set_defaults(func=run_repair)


def _load(paths: list[str], *, load_images: bool = False):
    from apo_ros.recording.reader import read_episodes

    episodes, bad = read_episodes(paths, load_images=load_images)
    for path, problem in bad:
        print(f"apo-ros bags: bad bag {path}: {problem}", file=sys.stderr)
    if not episodes:  # nothing to show: an error, not an empty table
        where = " ".join(paths)
        raise UserError(f"no readable bag in {where}" if bad else f"no bags found in {where}")
    return episodes, bad


def summarize(episodes, k: int = DEFAULT_K) -> dict:
    """The `bags info --json` document."""
    from apo_ros.recording.labels import label_episode

    rows = []
    for ep in episodes:
        labels = label_episode(ep, k=k)
        rows.append({
            "path": ep.path,
            "steps": len(ep.steps),
            "duration_s": round(ep.duration_ns / 1e9, 3),
            "interventions": len(labels.intervention_spans),
            "human_steps": int(labels.is_human.sum()),
            "undesirable_steps": labels.num_undesirable,
            "outcome": ep.outcome,
            "truncated": ep.truncated,
        })
    steps = sum(r["steps"] for r in rows)
    human = sum(r["human_steps"] for r in rows)
    totals = {
        "episodes": len(rows),
        "steps": steps,
        "interventions": sum(r["interventions"] for r in rows),
        "human_steps": human,
        "undesirable_steps": sum(r["undesirable_steps"] for r in rows),
        "intervention_ratio": round(human / steps, 6) if steps else 0.0,
    }
    return {"episodes": rows, "totals": totals}


def run_info(args: argparse.Namespace) -> int:

    if args.k < 0:
        raise UserError(f"--k must be >= 0, got {args.k}")
    episodes, bad = _load(args.paths)
    doc = summarize(episodes, args.k)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        header = ("path", "steps", "dur_s", "interv", "human", f"undes@K={args.k}", "outcome", "truncated")
        table = [header] + [(r["path"], str(r["steps"]), f"{r['duration_s']:.1f}", str(r["interventions"]),
                             str(r["human_steps"]), str(r["undesirable_steps"]), r["outcome"],
                             "yes" if r["truncated"] else "no") for r in doc["episodes"]]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            print("  ".join(cell.ljust(w) if i in (0, 6) else cell.rjust(w)
                            for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
        t = doc["totals"]
        print(f"total: {t['episodes']} episodes, {t['steps']} steps, {t['interventions']} interventions, "
              f"{t['human_steps']} human steps, {t['undesirable_steps']} undesirable steps, "
              f"intervention ratio {t['intervention_ratio']:.1%}")
        if bad:
            print(f"{len(bad)} bad bag(s), listed on stderr")
    return 1 if bad else 0


def run_plot(args: argparse.Namespace) -> int:
    from apo_ros.recording.plot import plot_timeline

    if args.k < 0:
        raise UserError(f"--k must be >= 0, got {args.k}")
    check_writable(args.output, "-o", create_parents=False)
    episodes, bad = _load(args.paths)
    plot_timeline(episodes, args.output, k=args.k)
    print(f"wrote {args.output} ({len(episodes)} episodes)")
    return 1 if bad else 0


def run_repair(args: argparse.Namespace) -> int:
    from apo_ros.recording.reader import BagError
    from apo_ros.recording.repair import repair_bag

    if args.output:
        check_writable(args.output, "-o")
    try:
        report = repair_bag(args.path, args.output, force=args.force)
    except BagError as err:
        raise UserError(str(err)) from None
    print(report.summary())
    if report.skipped_topics:
        print(f"topics not rewritten (unknown schema): {', '.join(report.skipped_topics)}", file=sys.stderr)
    return 0
