"""`apo-ros bags info | plot | video | export | repair`: look at, draw, film, share and salvage
episode bags."""

from __future__ import annotations

import argparse
import json
import os
import sys

from apo_ros.errors import UserError, check_writable
from apo_ros.recording.export import ExportConfig, export_lerobot
from apo_ros.recording.groups import format_group_tables, summarize_groups
from apo_ros.recording.labels import label_episode
from apo_ros.recording.plot import plot_group_summary, plot_timeline
from apo_ros.recording.reader import BagError, find_bags, read_episode, read_episodes
from apo_ros.recording.repair import repair_bag
from apo_ros.recording.video import (
    VideoConfig,
    group_by_initial_state,
    video_name,
    write_episode_video,
    write_grid_still,
    write_grid_video,
    write_still,
)

DEFAULT_K = 10


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to `apo-ros`."""
    p = sub.add_parser("bags", help="episode bags: info, plot, video, export, repair",
                       description="Inspect, draw, film, export and repair rosbag2 episode bags.")
    bags = p.add_subparsers(dest="bags_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    info = bags.add_parser("info", help="per-episode steps, interventions, labels; totals",
                           description="Per episode: steps, duration, interventions, human steps, "
                           "undesirable steps at K, outcome, truncated; then totals and the "
                           "intervention ratio (human steps / all executed steps). PATHs are bags "
                           "or directories searched for bags; for the output folder of `apo-ros demo` "
                           "also per-round and per-method summaries (success, interventions). Exit 1 "
                           "if any bag is bad, 2 if none is readable.")
    info.add_argument("paths", nargs="+", metavar="PATH", help="bag directories or folders of bags")
    info.add_argument("--json", action="store_true", help="print one JSON document")
    info.add_argument("--k", type=int, default=DEFAULT_K,
                      help=f"undesirable policy steps before each intervention (default {DEFAULT_K})")
    info.set_defaults(func=run_info)

    plot = bags.add_parser("plot", help="timeline PNG: who acted when, undesirable steps, outcomes",
                           description="One row per episode, time on x, colored spans for policy / "
                           "human / expert / undesirable steps, the outcome marked at the end. For the "
                           "output folder of `apo-ros demo` also OUTPUT_summary.png: success rate and "
                           "intervention ratio per round and method.")
    plot.add_argument("paths", nargs="+", metavar="PATH", help="bag directories or folders of bags")
    plot.add_argument("-o", "--output", default="timeline.png", help="PNG to write (default timeline.png)")
    plot.add_argument("--k", type=int, default=DEFAULT_K,
                      help=f"K for undesirable steps (default {DEFAULT_K})")
    plot.set_defaults(func=run_plot)

    vid = bags.add_parser("video", help="MP4 of an episode: cameras, who acted, take-overs, outcome",
                          description="Write an H.264 MP4 of an episode: its cameras side by side, each "
                          "frame stamped with the step, the source of the action (policy / human / "
                          "expert / hold) and the outcome, and a timeline strip under the images with "
                          "the take-overs and the undesirable steps before them. A folder gives one "
                          "video per episode in the -o directory; with --grid, episodes of the same task "
                          "and seed (the same initial state under several policies) play side by side, "
                          "one video per initial state.")
    vid.add_argument("paths", nargs="+", metavar="PATH", help="bag directories or folders of bags")
    vid.add_argument("-o", "--output", required=True,
                     help="the .mp4 (one bag, or one --grid group) or a directory for several; a .png "
                     "writes one still frame instead (a few steps into the first take-over)")
    vid.add_argument("--grid", action="store_true",
                     help="episodes with the same task and seed side by side (one video per seed)")
    vid.add_argument("--columns", type=int, default=0, help="grid columns (default: up to 3)")
    vid.add_argument("--k", type=int, default=DEFAULT_K,
                     help=f"K for undesirable steps (default {DEFAULT_K})")
    vid.add_argument("--size", type=int, default=256, help="camera image height in pixels (default 256)")
    vid.add_argument("--fps", type=float, default=0.0,
                     help="frames per second (default: the control rate, i.e. real time)")
    vid.add_argument("--no-progress", action="store_true", help="no progress bar")
    vid.set_defaults(func=run_video)

    exp = bags.add_parser("export", help="the bags as a LeRobot dataset (v3.0: parquet + mp4)",
                          description="Write the episodes as a LeRobotDataset v3.0 directory: "
                          "meta/info.json, meta/stats.json, meta/tasks.parquet, meta/episodes/, "
                          "data/chunk-000/file-000.parquet, videos/<camera>/chunk-000/file-000.mp4. "
                          "Per frame: observation.state, the cameras, action, the source "
                          "(complementary_info.is_intervention / .source), the policy's proposal and "
                          "the APO labels at K (complementary_info.apo_desirable / apo_undesirable).")
    exp.add_argument("paths", nargs="+", metavar="PATH", help="bag directories or folders of bags")
    exp.add_argument("--format", choices=["lerobot"], default="lerobot", help="output format (lerobot)")
    exp.add_argument("-o", "--output", required=True, help="the dataset directory to create")
    exp.add_argument("--k", type=int, default=DEFAULT_K,
                     help=f"K for the APO labels (default {DEFAULT_K})")
    exp.add_argument("--fps", type=int, default=0, help="dataset fps (default: the bags' control rate)")
    exp.add_argument("--overwrite", action="store_true", help="replace an existing dataset at -o")
    exp.add_argument("--no-progress", action="store_true", help="no progress bar")
    exp.set_defaults(func=run_export)

    rep = bags.add_parser("repair", help="salvage a bag whose writer died (kill -9, crash)",
                          description="Rewrite every complete record of a damaged MCAP bag into a new "
                          "bag (default PATH_repaired), marked truncated. The original is not modified.")
    rep.add_argument("path", metavar="PATH", help="the damaged bag directory or its .mcap file")
    rep.add_argument("-o", "--output", default=None, help="the new bag (default PATH_repaired)")
    rep.add_argument("--force", action="store_true", help="rewrite even a bag that reads fine")
    rep.set_defaults(func=run_repair)


def _load(paths: list[str], *, load_images: bool = False):
    episodes, bad = read_episodes(paths, load_images=load_images)
    for path, problem in bad:
        print(f"apo-ros bags: bad bag {path}: {problem}", file=sys.stderr)
    if not episodes:  # nothing to show: an error, not an empty table
        where = " ".join(paths)
        raise UserError(f"no readable bag in {where}" if bad else f"no bags found in {where}")
    return episodes, bad


def summarize(episodes, k: int = DEFAULT_K) -> dict:
    """The `bags info --json` document."""
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
    doc = {"episodes": rows, "totals": totals}

    groups = summarize_groups(episodes)
    if groups is not None:  # an `apo-ros demo` output folder
        doc.update(groups)
    return doc


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
        if "rounds" in doc:
            print("\n".join(format_group_tables(doc)))
        if bad:
            print(f"{len(bad)} bad bag(s), listed on stderr")
    return 1 if bad else 0


def run_plot(args: argparse.Namespace) -> int:
    if args.k < 0:
        raise UserError(f"--k must be >= 0, got {args.k}")
    check_writable(args.output, "-o", create_parents=False)
    episodes, bad = _load(args.paths)
    plot_timeline(episodes, args.output, k=args.k)
    print(f"wrote {args.output} ({len(episodes)} episodes)")

    groups = summarize_groups(episodes)
    if groups is not None:  # an `apo-ros demo` output folder
        root, ext = os.path.splitext(args.output)
        summary_png = f"{root}_summary{ext or '.png'}"
        plot_group_summary(groups, summary_png)
        print(f"wrote {summary_png} ({len(groups['rounds'])} round groups, {len(groups['methods'])} methods)")
    return 1 if bad else 0


def run_video(args: argparse.Namespace) -> int:
    if args.k < 0:
        raise UserError(f"--k must be >= 0, got {args.k}")
    if not 32 <= args.size <= 1080:
        raise UserError(f"--size must be between 32 and 1080 pixels, got {args.size}")
    if args.fps < 0:
        raise UserError(f"--fps must be >= 0, got {args.fps}")
    config = VideoConfig(panel_height=args.size, k=args.k, fps=args.fps)
    progress = not args.no_progress and sys.stderr.isatty()
    found = find_bags(args.paths)
    for path, problem in found.skipped:
        print(f"apo-ros bags: bad bag {path}: {problem}", file=sys.stderr)
    if not found.bags:
        raise UserError(f"no bags found in {' '.join(args.paths)}")
    to_png = args.output.lower().endswith(".png")
    to_file = to_png or args.output.lower().endswith(".mp4")
    root = args.paths[0] if os.path.isdir(args.paths[0]) else os.path.dirname(args.paths[0])
    bad = len(found.skipped)
    written = []
    if args.grid:
        episodes = []
        for bag in found.bags:
            try:
                episodes.append(read_episode(bag))
            except BagError as err:
                print(f"apo-ros bags: bad bag {err.path}: {err.problem}", file=sys.stderr)
                bad += 1
        groups = {k: v for k, v in group_by_initial_state(episodes).items() if any(e.steps for e in v)}
        if not groups:
            raise UserError("no readable episode with executed steps")
        if to_file and len(groups) > 1:
            raise UserError(f"-o {args.output}: {len(groups)} initial states (task, seed) found; give a "
                            "directory for one video each")
        for (task, seed), eps in sorted(groups.items()):
            name = f"{task or 'task'}_seed{seed or 'x'}.mp4"
            out = args.output if to_file else os.path.join(args.output, name)
            check_writable(out, "-o")
            if to_png:
                i = write_grid_still(eps, out, config)
                written.append((out, 0, f"still: frame {i + 1}, {len(eps)} episodes"))
                continue
            n = write_grid_video(eps, out, config, columns=args.columns, progress=progress)
            written.append((out, n, f"{len(eps)} episodes"))
    else:
        if to_file and len(found.bags) > 1:
            raise UserError(f"-o {args.output}: {len(found.bags)} bags found; give a directory for one "
                            "video each (or --grid)")
        for bag in found.bags:
            out = args.output if to_file else os.path.join(args.output, video_name(bag, root))
            check_writable(out, "-o")
            try:
                ep = read_episode(bag)
            except BagError as err:
                print(f"apo-ros bags: bad bag {err.path}: {err.problem}", file=sys.stderr)
                bad += 1
                continue
            if not ep.steps:
                print(f"apo-ros bags: {bag}: no executed steps, no video", file=sys.stderr)
                bad += 1
                continue
            if to_png:
                i = write_still(ep, out, config)
                written.append((out, 0, f"still: frame {i + 1} of {len(ep.steps)} steps"))
                continue
            n = write_episode_video(ep, out, config, progress=progress)
            written.append((out, n, f"{len(ep.steps)} steps, {len(ep.interventions())} take-over(s), "
                            f"{ep.outcome}"))
    for out, n, what in written:
        print(f"wrote {out} ({f'{n} frames; ' if n else ''}{what})")
    if not written:
        raise UserError("no video written")
    return 1 if bad else 0


def run_export(args: argparse.Namespace) -> int:
    if args.k < 0:
        raise UserError(f"--k must be >= 0, got {args.k}")
    if args.fps < 0:
        raise UserError(f"--fps must be >= 0, got {args.fps}")
    check_writable(args.output, "-o")
    report = export_lerobot(args.paths, args.output, ExportConfig(k=args.k, fps=args.fps),
                            overwrite=args.overwrite,
                            progress=not args.no_progress and sys.stderr.isatty())
    for path, problem in report.skipped:
        print(f"apo-ros bags: skipped {path}: {problem}", file=sys.stderr)
    print(report.summary())
    return 1 if report.skipped else 0


def run_repair(args: argparse.Namespace) -> int:
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
