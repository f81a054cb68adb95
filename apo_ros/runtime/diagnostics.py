"""A checkpoint deployed under the simulated operator: the session's figures and the operator's
agreement with the expert and the demos (docs/sim.md, "before and after").

    python -m apo_ros.runtime.diagnostics --policy CKPT --bags OUT [--demos DEMOS]

Runs the policy (noise-free, no cameras: for state policies) for `--episodes` seeded episodes
under the simulated operator and reports the session figures and `operator_metrics` on the bags
it wrote."""

from __future__ import annotations

import argparse
import json

from apo_ros.runtime.session import run_session
from apo_ros.sim.operator import OperatorConfig, SimulatedOperator
from apo_ros.sim.operator_metrics import operator_metrics


def deploy_with_operator(task: str, policy_dir: str, bags_dir: str, episodes: int = 30,
                         seed0: int = 300_000, demo_dirs=(), config=None) -> dict:
    """Deploy a (state) policy checkpoint under the simulated operator; return the session's
    figures (successes, interventions, human steps, corrected episodes that succeeded) and the
    operator's agreement metrics on the bags it wrote."""

    operator = SimulatedOperator(task, config or OperatorConfig(), seed=seed0)
    summary = run_session(task, policy_dir, operator, episodes, bags_dir, seed0, device="cpu",
                          render=False, cameras=())
    corrected = [e for e in summary.episodes if e.interventions > 0]
    d = summary.to_dict()
    return {"task": task, "episodes": episodes, "successes": d["successes"],
            "interventions": d["interventions"], "steps": d["steps"], "human_steps": d["human_steps"],
            "corrected_episodes": len(corrected),
            "corrected_episodes_succeeded": sum(e.outcome == "success" for e in corrected),
            "operator": operator_metrics([bags_dir], list(demo_dirs))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apo_ros.runtime.diagnostics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="lemon_on_plate", help="task (default lemon_on_plate)")
    parser.add_argument("--episodes", type=int, default=30, help="episodes (default 30)")
    parser.add_argument("--policy", required=True, help="checkpoint directory")
    parser.add_argument("--bags", required=True, help="directory for the episode bags")
    parser.add_argument("--demos", nargs="*", default=[], help="demo bags (nearest-demo agreement)")
    parser.add_argument("--seed", type=int, default=300_000, help="seed of the first episode")
    args = parser.parse_args(argv)
    print(json.dumps(deploy_with_operator(args.task, args.policy, args.bags, args.episodes, args.seed,
                                          args.demos), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
