"""`apo-ros demo`: the correction flywheel end to end on the simulator, and the method comparison.

Three sizes of the same study (apo_ros.demo.study): `--quick` (a few minutes), the default (the
newcomer's first command, under 20 minutes on 2 cores) and `--full` (the powered two-task
comparison behind the README's results). Every option of `StudyConfig` is a flag too
(`--pipeline_seeds 5`, `--tasks "[hang_cup]"`) or a key of a `--config` YAML file; a rerun with
the same `--out` resumes where the last one stopped.
"""

from __future__ import annotations

import argparse
import sys

from apo_ros.config import add_config_arguments, config_from_args, load_yaml, merge
from apo_ros.demo.config import TEST_SEED0, StudyConfig
from apo_ros.demo.report import study_markdown, winner_line
from apo_ros.demo.study import method_videos_for, run_study

# The three presets (StudyConfig fields over its defaults; the defaults are the full study).
PRESETS: dict[str, dict] = {
    "quick": dict(tasks=["lemon_on_plate"], pipeline_seeds=1, base_steps=2000,
                  interaction_episodes=40, methods=["dagger_retrain", "apo", "fresh_matched"],
                  lifelong_methods=["dagger_retrain"], sweep_lrs=[1e-3], sweep_steps=[1000],
                  validation_episodes=10, test_episodes=50, rounds=1, round_episodes=20,
                  round_test_episodes=50, out="demo_out"),
    "default": dict(tasks=["lemon_on_plate"], pipeline_seeds=3,
                    methods=["dagger", "apo", "apo_natural", "fresh_matched", "dagger_retrain",
                             "fresh_matched_retrain"],
                    sweep_lrs=[3e-4, 1e-3], sweep_steps=[2000], validation_episodes=30,
                    test_episodes=100, rounds=2, round_episodes=30, round_test_episodes=100,
                    out="demo_out"),
    # every compared method but the unmatched fresh control (the matched one shows the headroom)
    "full": dict(methods=["dagger", "sirius", "kto", "tpo", "apo", "apo_natural", "fresh_matched",
                          "dagger_retrain", "fresh_matched_retrain"], out="study_out"),
}


def run_demo_command(args: argparse.Namespace) -> int:
    mode = "full" if args.full else "quick" if args.quick else "default"
    preset = dict(PRESETS[mode])
    if args.config:
        preset = merge(preset, load_yaml(args.config))
    config = config_from_args(StudyConfig, args, overrides=preset)
    print(f"apo-ros demo ({mode}): tasks {', '.join(config.tasks)}, {config.policy_kind} policy, "
          f"{config.pipeline_seeds} pipeline seed(s), {len(config.methods)} methods x "
          f"{len(config.sweep_lrs) * len(config.sweep_steps)} settings, {config.test_episodes} test "
          f"episodes per policy, {config.rounds} lifelong round(s); output in {config.out} "
          "(rerun with the same --out to resume)", file=sys.stderr)
    results = run_study(config, progress=not args.no_progress and sys.stderr.isatty(),
                        log=lambda m: print(m, file=sys.stderr, flush=True))
    print(study_markdown(results))
    if args.videos:
        videos = method_videos_for(config, results, log=lambda m: print(m, file=sys.stderr, flush=True))
        print(f"videos: {videos['grid']} (every policy on test seed {TEST_SEED0}, side by side), "
              f"{videos['still']}")
    for task, t in results["tasks"].items():
        print(winner_line(task, t.get("winner", {})))
    print(f"results: {config.out}/results.json, results.md, results.png (bags: "
          f"`apo-ros bags info {config.out}/{config.tasks[0]}/seed0/rounds/round0`)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the correction flywheel end to end on the simulator, APO vs baselines",
        description="Record expert demos, train a base policy (bc), deploy it with a simulated "
        "operator at the SpaceMouse, tune and train dagger / sirius / kto / tpo / apo and a "
        "fresh-expert control from the same base, evaluate all on the same seeded states with "
        "bootstrap intervals over pipeline seeds and episodes, and run lifelong rounds. No ROS, no "
        "GPU, no downloads. Writes results.json / .md / .png and keeps every bag and checkpoint; "
        "a rerun with the same --out resumes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the short variant (a few minutes)")
    size.add_argument("--full", action="store_true",
                      help="the powered two-task study behind the README's results (hours of CPU)")
    p.add_argument("--config", metavar="YAML", help="StudyConfig fields from a YAML file")
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of the live display")
    p.add_argument("--no-videos", dest="videos", action="store_false",
                   help="skip the videos of every policy on one test state (OUT/videos; a few seconds each)")
    add_config_arguments(p, StudyConfig)
    p.set_defaults(func=run_demo_command)
