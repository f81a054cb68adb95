"""`PolicyServer`: serves one apo_ros policy on openpi's websocket protocol (see `protocol`).

Each client connection gets the metadata, then one reply per observation. Inference runs under one
lock (one model, one accelerator); connections are served by threads, so a slow client never
blocks another one's connect. A malformed request gets a text-frame error reply and the
connection stays open. `/healthz` answers plain HTTP 200 (for load balancers and scripts).

Hot-swap: when the policy came from a checkpoint directory, the server re-reads the directory's
policy id every `watch_s` seconds; a new id (a new checkpoint saved into the same path, or a
symlink pointed elsewhere) is loaded off the request path and replaces the served policy between
two requests. Every reply names the policy id and statistics id that computed it.
"""

from __future__ import annotations

import http
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from apo_ros import __version__
from apo_ros.policies.checkpoint import load_policy, policy_id
from apo_ros.serving import protocol

log = logging.getLogger("apo_ros.serving")


@dataclass
class ServeConfig:
    host: str = "0.0.0.0"  # listen on every interface (the robot PC connects over the network)
    port: int = 8000  # openpi's default; 0 = a free port (see PolicyServer.port)
    device: str | None = None  # torch device for checkpoints (None: cuda when available)
    watch_s: float = 2.0  # re-read the checkpoint's policy id this often for hot-swap (0 = never)
    max_message_mb: float = 64.0  # largest accepted request (two 224x224 images are ~0.3 MB)

    def __post_init__(self) -> None:
        if not 0 <= int(self.port) <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.watch_s < 0:
            raise ValueError(f"watch_s must be >= 0, got {self.watch_s}")
        if self.max_message_mb <= 0:
            raise ValueError(f"max_message_mb must be > 0, got {self.max_message_mb}")


def statistics_id(policy: Any) -> str:
    stats = getattr(policy, "stats", None)
    return stats.statistics_id() if stats is not None and hasattr(stats, "statistics_id") else ""


class PolicySlot:
    """The served policy and its ids, swapped atomically between requests."""

    def __init__(self, policy: Any):
        self._lock = threading.Lock()
        self._set(policy)

    def _set(self, policy: Any) -> None:
        self.policy = policy
        self.policy_id = str(getattr(policy, "policy_id", None) or type(policy).__name__)
        self.statistics_id = statistics_id(policy)
        self._metadata = self._describe(policy)  # built here: a connect never waits for inference

    def swap(self, policy: Any) -> None:
        with self._lock:  # waits for a running inference to finish
            old = self.policy_id
            self._set(policy)
        log.info("hot-swapped policy %s -> %s", old, self.policy_id)

    def infer(self, observation: Any) -> tuple[np.ndarray, bool, str, str]:
        """(chunk, ok, policy_id, statistics_id), all from the same policy."""
        with self._lock:
            chunk, ok = self.policy.select_action(observation)
            return chunk, bool(ok), self.policy_id, self.statistics_id

    def metadata(self) -> dict:
        """What a client gets on connect (the policy served at this moment)."""
        return self._metadata

    def _describe(self, p: Any) -> dict:
        cameras = list(getattr(p, "cameras", ()))
        return {
            "server": "apo_ros", "apo_ros_version": __version__,
            "protocol_version": protocol.PROTOCOL_VERSION,
            "policy_id": self.policy_id, "statistics_id": self.statistics_id,
            "kind": str(getattr(p, "kind", type(p).__name__)),
            "chunk_size": int(getattr(p, "chunk_size", 1)),
            "action_dim": len(protocol.ACTION_LAYOUT), "action_layout": list(protocol.ACTION_LAYOUT),
            "cameras": cameras, "image_keys": {c: protocol.camera_key(c) for c in cameras},
            "state_key": protocol.STATE_KEY, "state_layout": list(protocol.STATE_LAYOUT),
            "prompt_key": protocol.PROMPT_KEY,
            "uses_object_state": bool(getattr(p, "uses_object_state", False)),
        }


class PolicyServer:
    """`PolicyServer(policy, config, checkpoint=DIR).start()` serves in a background thread;
    `serve_forever()` in the calling one. `checkpoint` enables hot-swap from that directory."""

    def __init__(self, policy: Any, config: ServeConfig | None = None, *, checkpoint: str | None = None):
        from websockets.sync.server import serve

        self.config = config or ServeConfig()
        self.slot = PolicySlot(policy)
        self.checkpoint = checkpoint
        self.requests = 0
        self.errors = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._failed_id: str | None = None
        self._server = serve(self._handle, self.config.host, int(self.config.port), compression=None,
                             max_size=int(self.config.max_message_mb * 2**20),
                             process_request=self._health)

    # ---- lifecycle ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._server.socket.getsockname()[1])

    @property
    def url(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "", "::") else "127.0.0.1"
        return f"ws://{host}:{self.port}"

    def start(self) -> PolicyServer:
        self._spawn(self._serve, "policy-server")
        self._start_watch()
        return self

    def _serve(self) -> None:
        try:
            self._server.serve_forever()
        except (ValueError, OSError):
            if not self._stop.is_set():  # closed before the loop started: nothing to report
                raise

    def serve_forever(self) -> None:
        self._start_watch()
        self._server.serve_forever()

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        for t in self._threads:
            t.join(timeout=5.0)

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _spawn(self, target: Any, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _start_watch(self) -> None:
        if self.checkpoint and self.config.watch_s > 0:
            self._spawn(self._watch, "policy-server-watch")

    # ---- requests ----------------------------------------------------------------------------
    def _health(self, connection: Any, request: Any) -> Any:
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        return None

    def _handle(self, connection: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        peer = connection.remote_address
        log.info("client %s connected (policy %s)", peer, self.slot.policy_id)
        try:
            connection.send(protocol.packb(self.slot.metadata()))
            while True:
                connection.send(self.answer(connection.recv()))
        except ConnectionClosed:
            pass
        log.info("client %s disconnected", peer)

    def answer(self, message: bytes | str) -> bytes | str:
        """The reply frame to one request frame: msgpack bytes, or a text error that names the
        problem (the connection stays usable)."""
        self.requests += 1
        try:
            if isinstance(message, str):
                raise protocol.ProtocolError("expected a binary msgpack frame, got a text frame")
            request = protocol.unpackb(message)
            observation = protocol.request_to_observation(request, self._cameras())
        except protocol.ProtocolError as err:
            return self._error(f"bad request: {err}")
        t0 = time.perf_counter()
        try:
            chunk, ok, pid, sid = self.slot.infer(observation)
        except (ValueError, RuntimeError, KeyError, IndexError, TypeError) as err:
            log.exception("inference failed")
            return self._error(f"inference failed: {type(err).__name__}: {err}")
        infer_ms = (time.perf_counter() - t0) * 1e3
        actions = np.asarray(chunk)
        if actions.dtype.kind != "f":
            actions = actions.astype(np.float64)
        reply = {"actions": actions, "ok": ok, "policy_id": pid, "statistics_id": sid,
                 "server_timing": {"infer_ms": infer_ms}}
        if protocol.STAMP_KEY in request:
            reply["stamp_ns"] = observation.stamp_ns
        return protocol.packb(reply)

    def _cameras(self) -> tuple[str, ...]:
        return tuple(getattr(self.slot.policy, "cameras", ()))

    def _error(self, message: str) -> str:
        self.errors += 1
        log.warning("%s", message)
        return f"error: {message}"

    # ---- hot-swap ----------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.wait(self.config.watch_s):
            self.reload_if_changed()

    def reload_if_changed(self) -> bool:
        """Load and serve the checkpoint directory's policy when its id changed; True if swapped."""
        assert self.checkpoint is not None
        try:
            new_id = policy_id(self.checkpoint)
        except (OSError, ValueError):  # mid-rename, or a broken save: keep serving the old one
            return False
        if new_id in (self.slot.policy_id, self._failed_id):
            return False
        log.info("checkpoint %s changed to %s; loading", self.checkpoint, new_id)
        try:
            policy = load_policy(self.checkpoint, device=self.config.device)
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            self._failed_id = new_id
            log.error("cannot load %s (%s); still serving %s", self.checkpoint, err, self.slot.policy_id)
            return False
        policy.eval()
        self.slot.swap(policy)
        return True
