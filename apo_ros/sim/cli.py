"""`apo-ros sim ...`: look at the tabletop, evaluate policies on it.

    apo-ros sim tasks
    apo-ros sim eval --task square_on_stick --policy expert --episodes 50 --json
    apo-ros sim eval --task square_on_stick --policy checkpoints/apo_round1 --episodes 50
    apo-ros sim view --task hang_cup --seed 3 -o sheet.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from apo_ros.control.action_queue import MERGE_RULES
from apo_ros.control.policy_runner import EXECUTIONS, RunnerConfig
from apo_ros.errors import UserError, check_writable
from apo_ros.sim.task_specs import TASK_SPECS, task_names


def _user_error(message: str) -> Exception:
    return UserError(message)


def load_policy_arg(value: str):
    """'expert' stays a name; anything else is a checkpoint directory loaded lazily, or a policy
    server ws://HOST:PORT."""
    if value == "expert":
        return "expert"
    if not value.startswith(("ws://", "wss://")) and not os.path.isdir(value):
        raise _user_error(f"--policy {value!r}: not 'expert', a checkpoint directory or a "
                          "ws://HOST:PORT policy server")
    # the policy server client and torch load only when a policy is given
    from apo_ros.serving.source import open_policy

    try:
        policy = open_policy(value)
    except (OSError, ValueError, KeyError) as err:
        raise _user_error(f"--policy {value}: {err}") from None
    policy.eval()
    return policy


def _check_task(name: str) -> str:
    if name not in TASK_SPECS:
        raise _user_error(f"unknown task {name!r}; choose one of: {', '.join(task_names())}")
    return name


def cmd_tasks(args: argparse.Namespace) -> int:
    for name, task in TASK_SPECS.items():
        print(f"{name:16s} max_steps={task.max_steps:<4d} \"{task.instruction}\"")
    return 0


def _check_numbers(args: argparse.Namespace) -> None:
    for flag, value, low in (("--max-steps", args.max_steps, 1), ("--image-size", args.image_size, 8),
                             ("--noise", getattr(args, "noise", None), 0),
                             ("--frames", getattr(args, "frames", None), 1)):
        if value is not None and value < low:
            raise _user_error(f"{flag} must be >= {low}, got {value}")


def cmd_eval(args: argparse.Namespace) -> int:
    task = _check_task(args.task)
    if args.episodes < 1:
        raise _user_error("--episodes must be at least 1")
    _check_numbers(args)
    policy = load_policy_arg(args.policy)
    from apo_ros.sim.evaluate import evaluate  # MuJoCo

    def progress(i: int, record: dict) -> None:
        if not args.json:
            mark = "ok " if record["success"] else "FAIL"
            print(f"  episode {i + 1:3d}/{args.episodes} seed {record['seed']:5d} {mark} "
                  f"{record['steps']} steps", flush=True)

    runner = None
    if args.latency_ms or args.execution or args.merge:  # the action queue's settings
        if args.latency_ms < 0:
            raise _user_error(f"--latency-ms must be >= 0, got {args.latency_ms}")
        runner = RunnerConfig(execution=args.execution or "sync", merge=args.merge or "replace",
                              delay_ticks=int(round(args.latency_ms / 100.0)))  # 10 Hz ticks
    result = evaluate(task, policy, episodes=args.episodes, seed0=args.seed,
                      image_size=args.image_size, max_steps=args.max_steps,
                      expert_noise=args.noise, progress=progress, runner=runner)
    summary = {k: result[k] for k in ("task", "episodes", "successes", "success_rate", "mean_steps")}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{task}: {summary['successes']}/{summary['episodes']} successes "
              f"(rate {summary['success_rate']:.2f}), mean {summary['mean_steps']:.1f} steps, "
              f"{result['seconds']:.1f} s")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    task = _check_task(args.task)
    if not 16 <= args.size <= 640:
        raise _user_error("--size must be between 16 and 640 pixels")
    _check_numbers(args)
    check_writable(args.output, "-o", create_parents=False)  # before the episode runs
    policy = load_policy_arg(args.policy)
    if args.output.lower().endswith(".mp4"):
        return _view_video(task, policy, args)
    from apo_ros.sim.view import contact_sheet, record_episode, write_png  # MuJoCo, OpenCV

    run = record_episode(task, args.seed, policy, size=args.size, image_size=args.image_size,
                         max_steps=args.max_steps)
    outcome = "success" if run["success"] else "failure"
    title = (f"{task} seed {args.seed} policy {os.path.basename(str(args.policy))}: "
             f"\"{run['instruction']}\" - {outcome} in {run['steps']} steps")
    sheet = contact_sheet(run["frames"], run["labels"], columns=args.frames, title=title)
    try:
        write_png(args.output, sheet)
    except OSError as err:
        raise _user_error(str(err)) from None
    print(f"wrote {args.output} ({sheet.shape[1]}x{sheet.shape[0]}): {outcome} in {run['steps']} "
          "steps", file=sys.stderr if args.quiet else sys.stdout)
    return 0


def _view_video(task: str, policy, args: argparse.Namespace) -> int:
    """`sim view -o X.mp4`: the episode recorded as a session and filmed as `bags video` films bags."""
    from apo_ros.recording.video import VideoConfig  # PyAV
    from apo_ros.runtime.video import record_episode_video  # MuJoCo

    run = record_episode_video(task, args.seed, policy, args.output, operator=args.operator,
                               image_size=args.image_size, max_steps=args.max_steps, bags_dir=args.keep_bag,
                               config=VideoConfig(panel_height=args.size if args.size >= 32 else 32),
                               progress=not args.quiet and sys.stderr.isatty())
    print(f"wrote {args.output} ({run['frames']} frames): {run['outcome']} in {run['steps']} steps, "
          f"{run['interventions']} take-over(s)" + (f"; bag {run['bag']}" if run["bag"] else ""),
          file=sys.stderr if args.quiet else sys.stdout)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to `apo-ros`."""
    p = sub.add_parser("sim", help="MuJoCo tabletop: list tasks, evaluate policies, view episodes",
                       description="The simulated tabletop (arm from urdf/apo_arm.urdf).")
    sim = p.add_subparsers(dest="sim_command", metavar="SIM_COMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])

    t = sim.add_parser("tasks", help="list the tasks and their instructions",
                       description="List the simulator tasks with their language instructions.")
    t.set_defaults(func=cmd_tasks)

    e = sim.add_parser("eval", help="success rate of a policy over seeded episodes",
                       description="Run N seeded episodes (seeds SEED..SEED+N-1) and report the "
                       "success rate. --json prints {task, episodes, successes, success_rate, "
                       "mean_steps}.")
    e.add_argument("--task", required=True, help=f"one of {', '.join(task_names())}")
    e.add_argument("--policy", default="expert",
                   help="'expert' (scripted, privileged), a checkpoint directory or a policy "
                   "server ws://HOST:PORT (apo-ros serve)")
    e.add_argument("--episodes", type=int, default=50, help="number of episodes (default 50)")
    e.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    e.add_argument("--max-steps", type=int, default=None, help="episode length (task default)")
    e.add_argument("--image-size", type=int, default=64, help="camera size for learned policies")
    e.add_argument("--noise", type=float, default=0.0, help="expert action noise scale")
    e.add_argument("--latency-ms", type=float, default=0.0,
                   help="simulated inference latency: each chunk arrives this much later, in "
                   "whole 100 ms control ticks (default 0)")
    e.add_argument("--execution", choices=EXECUTIONS, default=None,
                   help="sync: the arm waits (zero motion) for each chunk (the default); async: "
                   "the next chunk is computed while the queue runs, late actions dropped")
    e.add_argument("--merge", choices=MERGE_RULES, default=None,
                   help="async: how a new chunk joins the queued actions (default replace)")
    e.add_argument("--json", action="store_true", help="print one JSON line")
    e.set_defaults(func=cmd_eval)

    v = sim.add_parser("view", help="contact sheet (PNG) or video (MP4) of one episode",
                       description="Run one seeded episode and write a PNG contact sheet (a row of "
                       "front-camera frames and a row of wrist-camera frames along it) or, when -o "
                       "ends in .mp4, the episode's video as `apo-ros bags video` draws it (cameras, "
                       "who acted at each step, take-overs, outcome).")
    v.add_argument("--task", required=True, help=f"one of {', '.join(task_names())}")
    v.add_argument("--seed", type=int, default=0, help="episode seed (default 0)")
    v.add_argument("-o", "--output", default="sheet.png",
                   help="PNG (contact sheet) or .mp4 (video) to write (default sheet.png)")
    v.add_argument("--policy", default="expert",
                   help="'expert' (scripted) or a checkpoint directory")
    v.add_argument("--size", type=int, default=160, help="frame size in pixels (default 160)")
    v.add_argument("--frames", type=int, default=8, help="frames per camera row (default 8)")
    v.add_argument("--image-size", type=int, default=64, help="camera size the policy sees")
    v.add_argument("--max-steps", type=int, default=None, help="episode length (task default)")
    v.add_argument("--operator", choices=["none", "scripted"], default="none",
                   help="video only: 'scripted' lets the simulated operator take over (default none)")
    v.add_argument("--keep-bag", metavar="DIR", default=None,
                   help="video only: keep the episode's bag in DIR")
    v.add_argument("--quiet", action="store_true", help="report on stderr")
    v.set_defaults(func=cmd_view)
