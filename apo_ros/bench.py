"""`apo-ros bench`: speed and memory figures, one section per area, each a ratio to its bare
baseline where one exists. Each section module exposes `run(quick: bool) -> dict`."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import time

SECTIONS = {
    "sim": "apo_ros.sim.bench",
    "bags": "apo_ros.recording.bench",
    "policy": "apo_ros.policies.bench",
    "train": "apo_ros.training.bench",
    "runtime": "apo_ros.nodes.bench",  # the in-process figures and the ROS graph's
    "serve": "apo_ros.serving.bench",
}


def describe_machine() -> dict:
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    return info


def run_bench(args: argparse.Namespace) -> int:
    names = args.sections or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        from apo_ros.errors import UserError

        raise UserError(f"unknown bench section(s) {unknown}; choose from {list(SECTIONS)}")
    report: dict = {"machine": describe_machine(), "sections": {}}
    for name in names:
        module = SECTIONS[name]
        try:
            mod = importlib.import_module(module)
        except ImportError as err:
            report["sections"][name] = {"error": f"not available: {err}"}
            continue
        t0 = time.perf_counter()
        if not args.json:
            print(f"[bench] {name} ...", flush=True)
        result = mod.run(quick=args.quick)
        result["bench_seconds"] = round(time.perf_counter() - t0, 2)
        report["sections"][name] = result
        if not args.json:
            print(json.dumps({name: result}, indent=2), flush=True)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(json.dumps({"machine": report["machine"]}, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="speed figures (sim, bags, policy, train, runtime, serve)",
        description="Run benchmarks and print figures, each with its bare baseline where one exists.",
    )
    # no `choices=` here: argparse rejects an empty list against choices with nargs="*"
    p.add_argument("sections", nargs="*", metavar="SECTION",
                   help=f"sections to run: {' '.join(SECTIONS)} (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--quick", action="store_true", help="shorter runs (noisier figures)")
    p.set_defaults(func=run_bench)
