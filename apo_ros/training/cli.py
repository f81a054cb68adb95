"""`apo-ros train`: train a policy from bags with APO or a baseline."""

from __future__ import annotations

import argparse
import os

METHOD_CHOICES = ("bc", "dagger", "sirius", "kto", "tpo", "apo")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to `apo-ros`."""
    p = sub.add_parser(
        "train",
        help="train a policy from demo + interaction bags (bc, dagger, sirius, kto, tpo, apo)",
        description="Train a policy from expert-demo bags and interaction bags (policy steps with "
        "human corrections) and write a checkpoint the policy node can load. Multi-GPU: "
        "`accelerate launch -m apo_ros.cli train ...` or `torchrun --nproc_per_node N -m apo_ros.cli "
        "train ...`.",
    )
    p.add_argument("--method", choices=METHOD_CHOICES, default=None,
                   help="objective (default: apo, or the one in --config)")
    p.add_argument("--demos", nargs="*", default=[], metavar="PATH",
                   help="expert demo bags, or folders searched for bags")
    p.add_argument("--data", nargs="*", default=[], metavar="PATH",
                   help="interaction bags (deployments with SpaceMouse corrections), or folders of bags")
    p.add_argument("--init", required=True, metavar="CKPT_OR_KIND",
                   help="starting checkpoint directory, or a policy kind to build fresh "
                   "(small, state, vla_bins, vla_fast; statistics from the demo actions)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (final policy: DIR/policy)")
    p.add_argument("--config", metavar="YAML", help="training options (TrainConfig fields) from a YAML file")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--batch-size", type=int, help="samples per step")
    p.add_argument("--lr", type=float, help="peak learning rate (default: per method)")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--cache-dir", help="decoded-bag cache (default ~/.cache/apo_ros/samples)")
    p.add_argument("--no-cache", action="store_true", help="do not cache decoded bags")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.set_defaults(func=run_train)


def build_config(args: argparse.Namespace):
    from apo_ros.training.trainer import TrainConfig

    overrides = {"method": args.method, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                 "seed": args.seed, "device": args.device, "cache_dir": args.cache_dir}
    if args.no_cache:
        overrides["cache_dir"] = None
    if args.no_progress:
        overrides["progress"] = False
    if args.config:
        config = TrainConfig.from_yaml(args.config, **{k: v for k, v in overrides.items() if v is not None})
        if args.no_cache:
            config.cache_dir = None
        return config
    return TrainConfig.from_dict({k: v for k, v in overrides.items() if v is not None}, source="command line")


def run_train(args: argparse.Namespace) -> int:
    from apo_ros.errors import UserError
    from apo_ros.policies import CheckpointError
    from apo_ros.training.data import DataError
    from apo_ros.training.trainer import TrainingError, train_policy

    try:
        config = build_config(args)
    except ValueError as err:
        raise UserError(str(err)) from None
    if not args.demos and not args.data:
        raise UserError("no bags given: pass --demos and/or --data")
    try:
        path = train_policy(config, list(args.demos), list(args.data), args.init, args.out,
                            resume=args.resume)
    except (DataError, TrainingError, CheckpointError, FileNotFoundError) as err:
        raise UserError(str(err)) from None
    if os.environ.get("RANK", "0") == "0":  # one line from a multi-process launch
        print(path)
    return 0
