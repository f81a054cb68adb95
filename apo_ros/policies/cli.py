"""`apo-ros policy new` (an untrained policy checkpoint) and `apo-ros policy info` (what is in one)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from safetensors import safe_open

from apo_ros.actions.bins import DECODE_MODES
from apo_ros.actions.statistics import load_statistics
from apo_ros.errors import UserError, check_writable, reading
from apo_ros.policies.checkpoint import read_checkpoint_config, save_policy, verify_policy_id
from apo_ros.policies.errors import CheckpointError
from apo_ros.policies.factory import POLICY_KINDS, build_policy, policy_kinds
from apo_ros.policies.testing import default_statistics
from apo_ros.sim.task_specs import TASK_SPECS


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to `apo-ros`."""
    p = sub.add_parser("policy",
                       help=f"create or inspect policy checkpoints ({', '.join(policy_kinds())})",
                       description="Create an untrained policy checkpoint or inspect one.")
    psub = p.add_subparsers(dest="policy_command", metavar="ACTION")

    new = psub.add_parser(
        "new", help="build an untrained policy and save it as a checkpoint",
        description="Build an untrained policy of a kind and save it as a checkpoint directory. "
        "VLA kinds use --pretrained (a local transformers checkpoint, e.g. PaliGemma) or, without "
        "it, a tiny PaliGemma built from config (no download).")
    new.add_argument("kind_pos", nargs="?", choices=policy_kinds(), metavar="KIND",
                     help="policy kind (or --kind)")
    new.add_argument("--kind", choices=policy_kinds(),
                     help=", ".join(f"{k.name} ({k.summary})" for k in POLICY_KINDS.values()))
    new.add_argument("-o", "--out", required=True, metavar="DIR", help="checkpoint directory to write")
    new.add_argument("--instructions", nargs="+", metavar="TEXT",
                     help="instruction list (default: the simulator tasks' instructions)")
    new.add_argument("--stats-from", metavar="JSON",
                     help="dataset_statistics.json (OpenVLA layout) or a checkpoint directory holding one "
                     "(default: q01=-0.05 / q99=0.05 for the 6 deltas, gripper 0..1)")
    new.add_argument("--stats-key", metavar="NAME",
                     help="dataset inside --stats-from when it holds several (OpenVLA's unnorm_key)")
    new.add_argument("--pretrained", metavar="DIR",
                     help="VLA kinds: local transformers checkpoint directory")
    new.add_argument("--chunk-size", type=int, default=None,
                     help="actions per prediction (default: the kind's, "
                     + ", ".join(f"{k.name} {k.default_chunk_size}" for k in POLICY_KINDS.values()) + ")")
    new.add_argument("--no-lora", action="store_true", help="VLA kinds: train all weights instead of LoRA")
    new.add_argument("--lora-rank", type=int, default=32, help="VLA kinds: LoRA rank (default 32, alpha 16)")
    new.add_argument("--cameras", nargs="+", help="cameras read (default: small front wrist; VLAs front)")
    new.add_argument("--decode", choices=DECODE_MODES, default=None,
                     help="small / state: actions from the most likely bin (argmax, default) or the "
                     "expected value of each arm dimension (mean; the gripper keeps its argmax)")
    new.add_argument("--objects", type=int, default=None, metavar="N",
                     help="state kind: object poses read (default 2: the task's object, then its target)")
    new.add_argument("--trust-remote-code", action="store_true",
                     help="allow a --pretrained checkpoint's own Python code (only code you trust)")
    new.add_argument("--device", help="cpu, cuda ... (default: cuda when available)")
    new.add_argument("--seed", type=int, default=0, help="weight initialization seed")
    new.set_defaults(func=run_new)

    info = psub.add_parser("info",
                           help="describe a policy checkpoint (kind, id, parameters, statistics, tokenizer)",
                           description="Print what a policy checkpoint holds, without loading the model.")
    info.add_argument("directory", metavar="DIR", help="policy checkpoint directory")
    info.add_argument("--json", action="store_true", help="print one JSON document")
    info.add_argument("--verify", action="store_true",
                      help="recompute the content hash (reads every weight byte)")
    info.set_defaults(func=run_info)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _default_instructions() -> list[str]:
    # task variants share their base task's instruction: keep each instruction once
    return list(dict.fromkeys(task.instruction for task in TASK_SPECS.values()))


def _statistics(args: argparse.Namespace):
    if not args.stats_from:
        return default_statistics()
    try:
        return load_statistics(args.stats_from, args.stats_key)
    except (OSError, ValueError, KeyError) as err:
        raise UserError(str(err).strip("'\"")) from None


def _kinds_with(flag: str) -> str:
    return " and ".join(k.name for k in POLICY_KINDS.values() if getattr(k, flag))


def run_new(args: argparse.Namespace) -> int:
    name = args.kind or args.kind_pos
    if name is None:
        raise UserError(f"policy new: give the kind ({', '.join(policy_kinds())}), e.g. `--kind small`")
    if args.kind and args.kind_pos and args.kind != args.kind_pos:
        raise UserError(f"policy new: two different kinds given ({args.kind_pos}, {args.kind})")
    if args.chunk_size is not None and args.chunk_size < 1:
        raise UserError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    if args.lora_rank < 1:
        raise UserError(f"--lora-rank must be >= 1, got {args.lora_rank}")
    if args.pretrained and not os.path.isdir(args.pretrained):
        raise UserError(f"--pretrained {args.pretrained}: not a directory (a local transformers checkpoint)")
    check_writable(args.out, "--out")
    stats = _statistics(args)
    import torch  # lazy: `apo-ros --help` does not load torch

    torch.manual_seed(args.seed)
    kind = POLICY_KINDS[name]
    options: dict = {"device": args.device}
    if args.cameras and not kind.reads_images:
        raise UserError(f"--cameras: the {name} policy reads no camera (it reads object poses)")
    if args.cameras:
        options["cameras"] = tuple(args.cameras)
    if args.decode is not None:
        if not kind.bin_head:
            raise UserError(f"--decode is for the {_kinds_with('bin_head')} kinds")
        options["decode"] = args.decode
    if args.objects is not None:
        if not kind.reads_object_poses:
            raise UserError(f"--objects is for the {_kinds_with('reads_object_poses')} kind")
        options["n_objects"] = args.objects
    if args.chunk_size is not None:
        options["chunk_size"] = args.chunk_size
    elif kind.default_chunk_size != 1:
        options["chunk_size"] = kind.default_chunk_size
    if kind.pretrained:
        if args.pretrained:
            options["pretrained"] = args.pretrained
            options["trust_remote_code"] = args.trust_remote_code
        options["lora"] = None if args.no_lora else {"r": args.lora_rank, "alpha": 16, "dropout": 0.0,
                                                     "target_modules": "all-linear"}
    elif args.pretrained:
        raise UserError(f"--pretrained is for the {_kinds_with('pretrained')} kinds, not {name}")
    instructions = args.instructions or _default_instructions()
    try:
        policy = build_policy(name, stats, instructions=instructions, **options)
        pid = save_policy(policy, args.out, extra={"created_by": "apo-ros policy new", "trained": False,
                                                   "seed": args.seed})
    except (CheckpointError, ValueError) as err:
        raise UserError(str(err)) from None
    n = sum(p.numel() for p in policy.parameters())
    print(f"{name} policy {pid} ({n:,} parameters) written to {os.path.abspath(args.out)}")
    return 0


def checkpoint_summary(directory: str, verify: bool = False) -> dict:
    """What `policy info` prints: read from the files, the model is not built."""
    from apo_ros.policies.base import ACTION_TOKENIZER_FILENAME  # lazy: base imports torch
    directory = os.path.abspath(directory)
    document = read_checkpoint_config(directory)
    params: dict[str, int] = {}
    for rel in document.get("files", {}):
        if rel.endswith(".safetensors"):
            with reading(os.path.join(directory, rel)), safe_open(os.path.join(directory, rel),
                                                                  framework="pt") as f:
                total = 0
                for key in f.keys():
                    count = 1
                    for dim in f.get_slice(key).get_shape():
                        count *= dim
                    total += count
            params[rel] = total
    stats = load_statistics(directory)
    summary = {
        "directory": directory, "kind": document["kind"], "policy_id": document["policy_id"],
        "created": document.get("created"), "parameters": params,
        "statistics": {"statistics_id": stats.statistics_id(), "q01": stats.q01.round(6).tolist(),
                       "q99": stats.q99.round(6).tolist(), "mask": stats.mask.tolist(),
                       "num_transitions": stats.num_transitions},
        "config": {k: v for k, v in document["config"].items() if v not in (None, [], {})},
        "training": document.get("training", {}),
    }
    tok_path = os.path.join(directory, ACTION_TOKENIZER_FILENAME)
    if os.path.isfile(tok_path):
        with open(tok_path) as f:
            summary["action_tokenizer"] = json.load(f)
    if verify:
        summary["verified"] = verify_policy_id(directory)
    return summary


def run_info(args: argparse.Namespace) -> int:
    try:
        summary = checkpoint_summary(args.directory, verify=args.verify)
    except (CheckpointError, OSError, ValueError, KeyError) as err:
        raise UserError(str(err)) from None
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    out = sys.stdout
    out.write(f"policy     {summary['policy_id']}  ({summary['kind']})  {summary['directory']}\n")
    if summary.get("created"):
        out.write(f"created    {summary['created']}\n")
    for rel, n in summary["parameters"].items():
        out.write(f"weights    {rel}: {n:,} parameters\n")
    st = summary["statistics"]
    out.write(f"statistics {st['statistics_id']}  q01 {st['q01']}  q99 {st['q99']}  "
              f"({st['num_transitions']} transitions)\n")
    if "action_tokenizer" in summary:
        out.write(f"tokenizer  {json.dumps(summary['action_tokenizer'])}\n")
    cfg = summary["config"]
    keys = ("instructions", "cameras", "chunk_size", "source", "lora", "prompt")
    for key in keys:
        if key in cfg:
            out.write(f"{key:<10} {json.dumps(cfg[key])}\n")
    if summary["training"]:
        out.write(f"training   {json.dumps(summary['training'])}\n")
    if "verified" in summary:
        verdict = "yes" if summary["verified"] else "NO: the files do not match the recorded id"
        out.write(f"verified   {verdict}\n")
        return 0 if summary["verified"] else 1
    return 0
