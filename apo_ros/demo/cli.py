"""`apo-ros demo`: the correction flywheel end to end on the simulator, and the method comparison."""

from __future__ import annotations

import argparse
import sys


def run_demo_command(args: argparse.Namespace) -> int:
    from apo_ros.demo.flywheel import DemoConfig, run_demo
    from apo_ros.demo.report import results_markdown

    overrides = {k: v for k, v in (("task", args.task), ("out", args.out), ("rounds", args.rounds),
                                   ("seeds", args.seeds), ("workers", args.workers)) if v is not None}
    config = DemoConfig.quick(**overrides) if args.quick else DemoConfig(**overrides)
    if config.rounds < 0 or config.seeds < 1 or config.workers < 1:
        from apo_ros.errors import UserError

        raise UserError("--rounds must be >= 0, --seeds and --workers >= 1")
    print(f"apo-ros demo: task {config.task}, {'quick' if args.quick else 'default'} mode, "
          f"{config.seeds} training seed(s), {config.rounds} lifelong round(s), output in {config.out}",
          file=sys.stderr)
    results = run_demo(config, progress=not args.no_progress and sys.stderr.isatty())
    print(results_markdown(results))
    print(f"results: {config.out}/results.json, results.md, results.png "
          f"(inspect any bag with `apo-ros bags info/plot {config.out}/rounds/round0`)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the correction flywheel end to end on the simulator, APO vs baselines",
        description="Record expert demos, train a base policy (bc), deploy it with a simulated "
        "operator at the SpaceMouse, train dagger / sirius / kto / tpo / apo from the same data and "
        "budget, evaluate all on the same seeded states, and run lifelong rounds. No ROS, no GPU, "
        "no downloads. Writes results.json / .md / .png and keeps every bag and checkpoint.",
    )
    p.add_argument("--task", default=None,
                   help="lemon_on_plate_easy (default) | lemon_on_plate | square_on_stick | hang_cup")
    p.add_argument("--quick", action="store_true", help="the short variant (a few minutes)")
    p.add_argument("--rounds", type=int, default=None, help="lifelong rounds after round 0 "
                   "(default 2; quick 1)")
    p.add_argument("--seeds", type=int, default=None, help="training seeds per method (default 2; quick 1)")
    p.add_argument("--workers", type=int, default=None, help="parallel worker processes (default 2)")
    p.add_argument("--out", default=None, help="output directory (default demo_out)")
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of the live display")
    p.set_defaults(func=run_demo_command)
