"""Controlled check of the policy-step targets: the token ids the policy produced (recorded in the
bags) against a re-tokenization of the actions they decoded to (what the trainer did before bags
carried ids).

    python -m apo_ros.demo.compare_targets --base BASE_CHECKPOINT --demos DEMO_DIR --out OUT

1. round 0: the base deployed with the simulated operator (`--episodes`, seeds from
   `--round-seed`), recorded with its token ids (skipped when OUT/round0 exists);
2. for each training seed and each target kind ("recorded", "retokenized"): plain NLL on the
   demos + the base's own steps (every policy step of round 0, no preference term), `--steps`
   at constant `--lr` from the base, batch `--batch-size`. The two kinds differ only in the
   targets of the policy's steps;
3. success of the base and of every trained policy on the same `--eval-episodes` seeds from
   `--eval-seed`. Also: how often the recorded ids differ from the re-tokenized proposal per
   action dimension, and the base's mean NLL of each kind of target on its own steps.
Writes OUT/results.json and prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import numpy as np

TARGETS = ("recorded", "retokenized")


def _register_own_steps_bc() -> str:
    """A bc variant over demos + the interaction bags' policy steps (plain NLL)."""
    from apo_ros.training.method_configs import BCConfig
    from apo_ros.training.registry import METHODS, Method, needs_demos, pooled, register
    from apo_ros.training.samples import SOURCE_CODE

    name = "bc_own_steps"
    if name not in METHODS:
        register(Method(name, "bc on the demos and the deployed policy's own steps",
                        "apo_ros.training.losses:bc_step",
                        pooled(lambda s: s.is_demo | ((s.source == SOURCE_CODE["policy"]) & ~s.is_demo)),
                        needs_reference=False, default_lr=1e-4, check=needs_demos(),
                        config=dataclasses.make_dataclass("BcOwnStepsConfig", [], bases=(BCConfig,))))
    return name


def _target_statistics(base, round_dir: str, cache: str) -> dict:
    import torch

    from apo_ros.training.samples import SOURCE_CODE, LabelConfig, encode_targets, load_samples

    samples = load_samples([], [round_dir], cache_dir=cache).label(LabelConfig())
    rows = np.nonzero((samples.source == SOURCE_CODE["policy"]) & np.isfinite(samples.proposed).all(-1))[0]
    recorded, mask = encode_targets(base, samples, rows)
    retokenized, _ = base.encode_actions(samples.action_targets(rows, 1))
    with torch.no_grad():
        base.eval()
        inputs = base.prepare(None, samples.proprio[rows], samples.instruction_texts(rows),
                              object_state=samples.object_state[rows])
        nll = {kind: (-base.token_logps(inputs, t, mask)).mean(0).tolist()
               for kind, t in (("recorded", recorded), ("retokenized", retokenized))}
    differ = (recorded != retokenized).float().mean(0).tolist()
    return {"policy_steps": int(len(rows)), "fraction_differing_per_dim": differ,
            "base_nll_per_dim": nll}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="base policy checkpoint (deployed in round 0)")
    ap.add_argument("--demos", required=True, help="expert demo bags (folder)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--task", default="lemon_on_plate")
    ap.add_argument("--episodes", type=int, default=20, help="round-0 deployments")
    ap.add_argument("--round-seed", type=int, default=2_000_000)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=3, help="training seeds per target kind")
    ap.add_argument("--eval-episodes", type=int, default=100)
    ap.add_argument("--eval-seed", type=int, default=500_000)
    args = ap.parse_args(argv)

    import torch

    from apo_ros.policies import load_policy
    from apo_ros.runtime.session import run_session
    from apo_ros.sim.evaluate import evaluate
    from apo_ros.training import samples as S
    from apo_ros.training.trainer import TrainConfig, train_policy

    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    cache = os.path.join(args.out, "cache")
    round_dir = os.path.join(args.out, "round0")
    results: dict = {"args": vars(args)}
    if not os.path.isdir(round_dir):
        summary = run_session(args.task, args.base, "scripted", args.episodes, round_dir, args.round_seed,
                              device="cpu", cameras=(), render=False)
        results["round0"] = {"successes": summary.successes, "steps": summary.steps,
                             "human_steps": summary.human_steps}
    base = load_policy(args.base, device="cpu")
    results["targets"] = _target_statistics(base, round_dir, cache)

    def success(policy) -> dict:
        policy.eval()
        r = evaluate(args.task, policy, episodes=args.eval_episodes, seed0=args.eval_seed, render=False,
                     cameras=(), batch=10)
        return {"successes": int(r["successes"]), "episodes": int(r["episodes"]),
                "success": [int(e["success"]) for e in r["per_episode"]]}

    results["base"] = success(base)
    print(json.dumps({"base": results["base"]["successes"]}), file=sys.stderr, flush=True)
    method = _register_own_steps_bc()
    original = S.SampleSet.recorded_tokens
    for kind in TARGETS:
        for seed in range(args.seeds):
            out = os.path.join(args.out, f"{kind}_seed{seed}")
            if kind == "retokenized":  # the trainer as it was: no recorded ids are used
                S.SampleSet.recorded_tokens = lambda self, index, chunk, space, per_step: (
                    np.zeros((len(index), chunk, per_step), np.int64), np.zeros((len(index), chunk), bool))
            try:
                config = TrainConfig(method=method, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                                     schedule="constant", warmup_steps=0, seed=seed, progress=False,
                                     cache_dir=cache, threads=1, save_every=0, log_every=args.steps)
                path = train_policy(config, [args.demos], [round_dir], args.base, out, log=lambda m: None)
            finally:
                S.SampleSet.recorded_tokens = original
            results[f"{kind}_seed{seed}"] = success(load_policy(path, device="cpu"))
            print(json.dumps({f"{kind}_seed{seed}": results[f"{kind}_seed{seed}"]["successes"]}),
                  file=sys.stderr, flush=True)
    for kind in TARGETS:
        n = [results[f"{kind}_seed{s}"]["successes"] for s in range(args.seeds)]
        results[f"{kind}_mean_successes"] = float(np.mean(n))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    brief = {k: v for k, v in results.items() if k.endswith("mean_successes") or k == "targets"}
    brief["base"] = results["base"]["successes"]
    print(json.dumps(brief, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
