"""`apo-ros session`: the whole loop in one process (simulator, policy, operator, recorder)."""

from __future__ import annotations

import argparse
import json
import os

from apo_ros.actions.safety import SafetyConfig
from apo_ros.control.action_queue import MERGE_RULES
from apo_ros.control.policy_runner import EXECUTIONS
from apo_ros.errors import UserError, check_writable
from apo_ros.sim.task_specs import TASK_SPECS, task_names


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to `apo-ros`."""
    p = sub.add_parser(
        "session",
        help="run a policy (or the expert) on the simulator with a simulated operator; one bag per episode",
        description="The in-process session: the MuJoCo arm, the policy runner (with the safety filter), "
        "the teleop arbiter with the simulated operator behind the SpaceMouse interface, and the recorder, "
        "in lock-step. Writes one rosbag2 episode per episode into --bags, tagged with interventions "
        "(`apo-ros bags info DIR` lists them). `--policy expert` records expert demonstrations.",
    )
    p.add_argument("--task", required=True,
                   help=" | ".join(task_names()))
    p.add_argument("--policy", required=True, metavar="CKPT|ws://HOST:PORT|expert",
                   help="checkpoint directory, a policy server (apo-ros serve) as ws://HOST:PORT, or "
                   "'expert' for the scripted expert (demos)")
    p.add_argument("--operator", choices=("scripted", "none"), default="scripted",
                   help="simulated operator that takes over when the policy goes wrong (default: scripted)")
    p.add_argument("--episodes", type=int, default=1, help="number of episodes (default 1)")
    p.add_argument("--bags", required=True, metavar="DIR", help="directory the episode bags are written to")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode (episode k: seed + k)")
    p.add_argument("--max-steps", type=int, help="control steps per episode (default: the task's)")
    p.add_argument("--image-size", type=int, default=64, help="camera image side in pixels (default 64)")
    p.add_argument("--image-format", choices=("raw", "jpeg"), default="raw", help="image storage in the bags")
    p.add_argument("--safety-config", default="", metavar="YAML",
                   help="safety limits (default config/safety.yaml)")
    p.add_argument("--device", help="torch device for the checkpoint (default: cuda when available)")
    p.add_argument("--expert-noise", type=float, default=0.0, help="action noise of the expert (0 = none)")
    p.add_argument("--operator-noise", type=float, default=0.0,
                   help="action noise of the scripted operator's corrections (0 = none, the expert's "
                   "action at each state; 1 = about 1 cm per step at full speed)")
    p.add_argument("--replan-every", type=int, default=0,
                   help="re-plan after this many actions of a chunk (0 = whole chunks)")
    p.add_argument("--execution", choices=EXECUTIONS, default="async",
                   help="async (default): the next chunk is computed while the queue runs, actions "
                   "whose tick passed are dropped; sync: the arm waits (zero motion) for each chunk")
    p.add_argument("--latency-ms", type=float, default=0.0,
                   help="simulated inference latency: each chunk arrives this much later, in whole "
                   "control ticks (default 0)")
    p.add_argument("--merge", choices=MERGE_RULES, default="replace",
                   help="how a new chunk joins the queued actions (default replace)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no live progress line")
    p.set_defaults(func=run_session_cli)


def run_session_cli(args: argparse.Namespace) -> int:
    # every argument is checked before the simulator or a model is built
    if args.task not in TASK_SPECS:
        raise UserError(f"--task {args.task}: unknown task; choose from {', '.join(task_names())}")
    for flag, value, low in (("--episodes", args.episodes, 1), ("--max-steps", args.max_steps, 1),
                             ("--image-size", args.image_size, 8), ("--replan-every", args.replan_every, 0),
                             ("--expert-noise", args.expert_noise, 0),
                             ("--operator-noise", args.operator_noise, 0),
                             ("--latency-ms", args.latency_ms, 0)):
        if value is not None and value < low:
            raise UserError(f"{flag} must be >= {low}, got {value}")
    if os.path.exists(args.bags) and not os.path.isdir(args.bags):
        raise UserError(f"--bags {args.bags}: exists and is not a directory")
    check_writable(args.bags, "--bags")
    remote = args.policy.startswith(("ws://", "wss://"))
    if args.policy != "expert" and not remote and not os.path.isdir(args.policy):
        raise UserError(f"--policy {args.policy}: not a checkpoint directory, a ws://HOST:PORT policy "
                        "server or 'expert'")
    if args.safety_config:
        SafetyConfig.from_yaml(args.safety_config)  # a ConfigError names the file and the key
    from apo_ros.runtime.session import run_session  # MuJoCo, torch

    try:
        summary = run_session(args.task, args.policy, args.operator, args.episodes, args.bags, args.seed,
                              max_steps=args.max_steps, image_size=args.image_size,
                              image_format=args.image_format, safety_config=args.safety_config,
                              device=args.device, expert_noise=args.expert_noise,
                              operator_noise=args.operator_noise,
                              replan_every=args.replan_every, progress=not args.no_progress and not args.json,
                              execution=args.execution, merge=args.merge,
                              delay_ticks=int(round(args.latency_ms / 1000.0 * 10.0)))  # 10 Hz ticks
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from None
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2, default=str))
        return 0
    d = summary.to_dict()
    for e in summary.episodes:
        print(f"{e.path}  {e.outcome:<8} steps {e.steps:>4}  human {e.human_steps:>4}  "
              f"interventions {e.interventions}")
    lat, flt = d["latency_ms"], d["filter"]
    print(f"{d['successes']}/{len(summary.episodes)} successes, {d['interventions']} interventions, "
          f"intervention ratio {d['intervention_ratio']:.1%}, policy {d['policy_id']}")
    print(f"policy latency p50 {lat['p50']:.2f} ms p99 {lat['p99']:.2f} ms; safety filter: "
          f"{flt['rejected']} rejected, {flt['modified']} modified; {summary.wall_s:.1f} s")
    return 0
