"""The `apo-ros` command. Each area registers its own subcommands; heavy imports happen inside
the handlers so `apo-ros --help` stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys

from apo_ros import __version__
from apo_ros.errors import EXIT_USER_ERROR, UserError, user_message

# Each module exposes `register(subparsers)`, adding one or more subcommands whose parsers set
# `func=handler(args) -> int`.
COMMAND_MODULES = (
    "apo_ros.sim.cli",  # sim view / sim eval
    "apo_ros.recording.cli",  # bags info / plot / repair
    "apo_ros.policies.cli",  # policy new / info
    "apo_ros.training.cli",  # train
    "apo_ros.runtime.cli",  # session
    "apo_ros.demo.cli",  # demo
    "apo_ros.serving.cli",  # serve
    "apo_ros.bench",  # bench
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apo-ros",
        description="Deploy a VLA policy, correct it with a SpaceMouse, record rosbag2 episodes, "
        "and train a better policy with Action Preference Optimization (APO).",
    )
    parser.add_argument("--version", action="version", version=f"apo_ros {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # bad input, missing or unwritable files -> one clear line, exit 2
        message = user_message(err)
        if message is None:  # a bug: keep the traceback
            raise
        print(f"apo-ros: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR


__all__ = ["UserError", "build_parser", "main"]  # UserError lives in apo_ros.errors


if __name__ == "__main__":
    sys.exit(main())
