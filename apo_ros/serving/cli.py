"""`apo-ros serve`: serve a checkpoint on openpi's websocket protocol (docs/serving.md).

    apo-ros serve --policy checkpoints/round2 --device cuda            # on the GPU box
    apo-ros session --task lemon_on_plate --policy ws://gpu-box:8000 ...  # on the robot PC
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from apo_ros.errors import UserError
from apo_ros.policies.checkpoint import load_policy
from apo_ros.serving.server import PolicyServer, ServeConfig


def register(sub: argparse._SubParsersAction) -> None:
    """Add `serve` to `apo-ros`."""
    p = sub.add_parser(
        "serve", help="serve a checkpoint to remote clients over websockets (openpi protocol)",
        description="Load a policy checkpoint and answer observations with action chunks on "
        "openpi's websocket protocol (msgpack, numpy arrays without pickle): metadata on connect, "
        "then one reply {actions (T, 7), ok, policy_id, statistics_id, server_timing} per "
        "observation. Clients: policy_node / `apo-ros session` / `apo-ros sim eval` with "
        "--policy ws://HOST:PORT, or openpi-client's WebsocketClientPolicy. Saving a new "
        "checkpoint into the same directory hot-swaps it (the replies' policy_id changes). "
        "Observation keys and action layout: docs/serving.md.")
    p.add_argument("--policy", required=True, metavar="CKPT", help="policy checkpoint directory")
    p.add_argument("--host", default="0.0.0.0",
                   help="address to listen on (default 0.0.0.0: every interface; 127.0.0.1: this "
                   "machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000, openpi's; 0 = any free)")
    p.add_argument("--device", default=None, help="torch device: cuda, cuda:1, cpu (default: cuda "
                   "when available)")
    p.add_argument("--watch-s", type=float, default=2.0, metavar="S",
                   help="re-read the checkpoint's policy id every S seconds and hot-swap to a new "
                   "one (0 = never; default 2)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow a checkpoint that ships its own Python code (only code you trust)")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    try:
        config = ServeConfig(host=args.host, port=args.port, device=args.device, watch_s=args.watch_s)
    except ValueError as err:
        raise UserError(str(err)) from None

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)  # a line per connection is ours
    try:
        policy = load_policy(args.policy, device=args.device, trust_remote_code=args.trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"--policy {args.policy}: {err}") from None
    policy.eval()
    try:
        server = PolicyServer(policy, config, checkpoint=args.policy)
    except OSError as err:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    meta = server.slot.metadata()
    print(f"serving policy {meta['policy_id']} ({meta['kind']}, chunk {meta['chunk_size']}, cameras "
          f"{','.join(meta['cameras'])}, statistics {meta['statistics_id']}) on "
          f"ws://{args.host}:{server.port} - device {policy.device}; Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    print(f"served {server.requests} requests ({server.errors} errors)", file=sys.stderr)
    return 0
