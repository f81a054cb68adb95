"""`apo-ros train`: train a policy from bags with APO or a baseline."""

from __future__ import annotations

import argparse
import os


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to `apo-ros`."""
    from apo_ros.config import add_config_arguments
    from apo_ros.policies.factory import policy_kinds
    from apo_ros.training.config import TrainConfig
    from apo_ros.training.registry import METHODS, method_names

    methods = "; ".join(f"{name}: {m.summary} (default lr {m.default_lr:g}, sampling "
                        f"{m.default_sampling}{'' if len(m.samplings) > 1 else ' only'})"
                        for name, m in METHODS.items())
    p = sub.add_parser(
        "train",
        help=f"train a policy from demo + interaction bags ({', '.join(method_names())})",
        description="Train a policy from expert-demo bags and interaction bags (policy steps with "
        f"human corrections) and write a checkpoint the policy node can load. Methods: {methods}. "
        "Every training option is a flag below and a key of the --config YAML (flags win); an "
        "option whose help starts with method names belongs to those methods only. "
        "Multi-GPU / multi-process: `torchrun --nproc_per_node N -m apo_ros.cli train ...` or "
        "`accelerate launch -m apo_ros.cli train ...` (DistributedDataParallel).",
    )
    p.add_argument("--demos", nargs="*", default=[], metavar="PATH",
                   help="expert demo bags, or folders searched for bags")
    p.add_argument("--data", nargs="*", default=[], metavar="PATH",
                   help="interaction bags (deployments with SpaceMouse corrections), or folders of bags")
    p.add_argument("--init", required=True, metavar="CKPT_OR_KIND",
                   help="starting checkpoint directory, or a policy kind to build fresh "
                   f"({', '.join(policy_kinds())}; statistics from the demo actions; options "
                   "with --policy.NAME, each naming the kinds that take it)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (final policy: DIR/policy)")
    p.add_argument("--config", metavar="YAML", help="training options (the flags below) from a YAML file")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--batch-size", type=int, dest="legacy_batch_size", metavar="N",
                   help="same as --batch_size")
    p.add_argument("--cache-dir", dest="legacy_cache_dir", metavar="DIR", help="same as --cache_dir")
    p.add_argument("--no-cache", action="store_true", help="do not cache decoded bags (--cache_dir null)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (--progress false)")
    add_config_arguments(p, TrainConfig, title="training options (TrainConfig; also keys of --config)")
    p.set_defaults(func=run_train)


def build_config(args: argparse.Namespace):
    """TrainConfig from defaults <- --config YAML <- the short flags <- the --field flags."""
    from apo_ros.config import config_from_args
    from apo_ros.training.config import TrainConfig

    short: dict = {}
    if args.legacy_batch_size is not None:
        short["batch_size"] = args.legacy_batch_size
    if args.legacy_cache_dir is not None:
        short["cache_dir"] = args.legacy_cache_dir
    if args.no_cache:
        short["cache_dir"] = None
    if args.no_progress:
        short["progress"] = False
    return config_from_args(TrainConfig, args, yaml_path=args.config, overrides=short or None)


def run_train(args: argparse.Namespace) -> int:
    from apo_ros.errors import UserError, check_writable
    from apo_ros.training.policy_init import check_init
    from apo_ros.training.trainer import train_policy

    config = build_config(args)  # ConfigError: one line naming the file / flag and the field
    if not args.demos and not args.data:
        raise UserError("no bags given: pass --demos and/or --data")
    check_writable(args.out, "--out")
    check_init(args.init, config)  # before any bag is read
    path = train_policy(config, list(args.demos), list(args.data), args.init, args.out, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # one line from a multi-process launch
        print(path)
    return 0
