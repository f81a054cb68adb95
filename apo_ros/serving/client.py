"""`RemotePolicy`: a policy served elsewhere (`apo-ros serve`, or an openpi server), behind the
same `select_action(observation) -> (chunk [T, 7], ok)` / `reset()` interface as a checkpoint.

A slow or lost server never yields a stale action:
- every request waits at most `timeout_s`; past it the connection is closed (so a late reply to
  an old observation can never be read as the answer to a new one) and `select_action` returns
  ok=False, which the runner turns into a zero-motion hold;
- every reply must echo the request's observation stamp, or it is discarded the same way;
- while the server is unreachable, each call fails at once (hold) and a reconnect is tried after
  a backoff that doubles from `backoff_s` up to `max_backoff_s`; one log line says when the
  server is lost and one when it is back.

`policy_id` / `statistics_id` are the ones the server last reported (metadata on connect, then
every reply), so a checkpoint hot-swapped on the server shows up here.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import numpy as np

from apo_ros.actions.space import ACTION_DIM
from apo_ros.observation import Observation
from apo_ros.serving import protocol

log = logging.getLogger("apo_ros.serving")


class RemotePolicyError(ValueError):
    """The policy server cannot be used (unreachable at start, bad URL, not a policy server)."""


@dataclass
class RemoteConfig:
    timeout_s: float = 0.5  # per request; at most the safety filter's max observation age
    connect_timeout_s: float = 2.0  # opening the websocket and reading the metadata
    backoff_s: float = 0.25  # first reconnect delay after a failure; doubles each failure
    max_backoff_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("timeout_s", "connect_timeout_s", "backoff_s", "max_backoff_s"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def is_remote(spec: Any) -> bool:
    """True for a policy server URL (ws:// or wss://)."""
    return isinstance(spec, str) and spec.startswith(("ws://", "wss://"))


def parse_url(url: str) -> tuple[str, RemoteConfig]:
    """'ws://host:port?timeout_s=0.3' -> ('ws://host:port', RemoteConfig(timeout_s=0.3))."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise RemotePolicyError(f"{url!r}: a policy server URL looks like ws://HOST:PORT")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as err:
        raise RemotePolicyError(f"{url!r}: {err}") from None
    fields = {"timeout_s", "connect_timeout_s", "backoff_s", "max_backoff_s"}
    options: dict[str, float] = {}
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key not in fields:
            raise RemotePolicyError(f"{url!r}: unknown option {key!r} (known: {sorted(fields)})")
        try:
            options[key] = float(value)
        except ValueError:
            raise RemotePolicyError(f"{url!r}: option {key}={value!r} is not a number") from None
    try:
        config = RemoteConfig(**options)
    except ValueError as err:
        raise RemotePolicyError(f"{url!r}: {err}") from None
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), config


class RemotePolicy:
    """A policy on a websocket policy server. `RemotePolicy("ws://gpu-box:8000")` connects at
    once (RemotePolicyError when it cannot); afterwards failures only hold and reconnect."""

    reports_policy_id = True  # policy_id follows the server (PolicyRunner re-reads it per plan)

    def __init__(self, url: str, config: RemoteConfig | None = None, *, connect: bool = True):
        self.url, url_config = parse_url(url)
        self.config = config or url_config
        self.metadata: dict = {}
        self.policy_id: str = ""
        self.statistics_id: str = ""
        self.failure_reason = ""  # why the last select_action returned ok=False ("" when it did not)
        self.failures = 0  # requests that got no usable reply
        self.reconnects = 0
        self._ws: Any = None
        self._retry_at = 0.0
        self._backoff = self.config.backoff_s
        self._lost_since: float | None = None
        self.last_round_trip_s = float("nan")  # of the last answered request
        self.last_server_infer_s = float("nan")  # the server's own inference time for it
        if connect:
            try:
                self._connect()
            except _connect_errors() as err:
                raise RemotePolicyError(f"cannot reach the policy server at {self.url}: "
                                        f"{_describe(err)}") from None

    # ---- the policy interface ----------------------------------------------------------------
    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.metadata.get("cameras") or ())

    @property
    def uses_object_state(self) -> bool:
        """True when the served policy reads object poses (a state policy)."""
        return bool(self.metadata.get("uses_object_state", False))

    @property
    def instructions(self) -> list[str]:
        """The served policy's fixed instruction list, when the server reports one."""
        return [str(i) for i in self.metadata.get("instructions") or ()]

    def action_token_space(self) -> str | None:
        return None  # the wire format carries actions, not token ids

    def select_action_with_tokens(self, observation: Observation
                                  ) -> tuple[np.ndarray, bool, np.ndarray | None]:
        chunk, ok = self.select_action(observation)
        return chunk, ok, None

    def eval(self) -> RemotePolicy:
        return self  # the server runs its policy in inference mode

    @property
    def chunk_size(self) -> int:
        return int(self.metadata.get("chunk_size") or 1)

    def select_action(self, observation: Observation) -> tuple[np.ndarray, bool]:
        """One observation -> (chunk [T, 7], ok). Never raises for a server problem: ok=False and
        a NaN chunk (the runner holds) with `failure_reason` saying why."""
        self.failure_reason = ""
        if self._ws is None:
            if time.monotonic() < self._retry_at:  # waiting out the backoff: hold, no log line
                self.failures += 1
                self.failure_reason = "policy_unavailable"
                return np.full((1, ACTION_DIM), np.nan), False
            try:  # inside the control loop: wait no longer than for a reply
                self._connect(min(self.config.connect_timeout_s, self.config.timeout_s))
            except _connect_errors() as err:
                return self._fail(f"reconnect failed ({_describe(err)})", quiet=True)
        try:
            # the server's cameras (none for a state policy); all of them for a server that
            # does not say (an openpi server)
            cameras = tuple(self.metadata["cameras"]) if "cameras" in self.metadata else None
            request = protocol.observation_to_request(observation, cameras)
        except ValueError as err:
            return self._fail(f"cannot build the request: {err}", drop=False)
        from websockets.exceptions import ConnectionClosed

        t0 = time.monotonic()
        try:
            self._ws.send(protocol.packb(request))
            message = self._ws.recv(timeout=self.config.timeout_s)
        except TimeoutError:
            return self._fail(f"no reply within {self.config.timeout_s:.3g} s")
        except (ConnectionClosed, OSError) as err:
            return self._fail(f"connection lost ({_describe(err)})")
        if isinstance(message, str):  # the server's error reply; the connection stays usable
            return self._fail(f"server error: {message}", drop=False)
        try:
            reply = protocol.unpackb(message)
            chunk, ok = protocol.actions_from_reply(reply)
        except protocol.ProtocolError as err:
            return self._fail(f"bad reply: {err}")
        stamp = reply.get("stamp_ns", request[protocol.STAMP_KEY])
        if int(stamp) != int(request[protocol.STAMP_KEY]):
            return self._fail(f"reply is for observation {stamp}, not {request[protocol.STAMP_KEY]}")
        self.policy_id = str(reply.get("policy_id", self.policy_id))
        self.statistics_id = str(reply.get("statistics_id", self.statistics_id))
        if self._lost_since is not None:
            log.warning("policy server %s is back after %.1f s (policy %s)", self.url,
                        time.monotonic() - self._lost_since, self.policy_id)
            self._lost_since = None
        self._backoff = self.config.backoff_s
        self.last_round_trip_s = time.monotonic() - t0
        timing = reply.get("server_timing")
        self.last_server_infer_s = (float(timing.get("infer_ms", "nan")) / 1e3
                                    if isinstance(timing, dict) else float("nan"))
        if not ok:
            self.failure_reason = "decode_failed"
        return chunk, ok

    def reset(self) -> None:
        """New episode: reconnect, so the episode starts with the ids of the policy the server
        serves now (its metadata) - a bag recorded from here names them. A server that is down
        is retried with the backoff, as after any failure."""
        self.close()
        try:
            self._connect()
        except _connect_errors() as err:
            self._fail(f"reconnect failed ({_describe(err)})", quiet=True)
            self.failures -= 1  # not a request

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
            self._ws = None

    def __enter__(self) -> RemotePolicy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def describe(self) -> dict:
        return {"kind": "remote", "url": self.url, "policy_id": self.policy_id,
                "statistics_id": self.statistics_id, "server": dict(self.metadata)}

    # ---- connection --------------------------------------------------------------------------
    def _connect(self, timeout_s: float | None = None) -> None:
        from websockets.sync.client import connect

        timeout_s = self.config.connect_timeout_s if timeout_s is None else timeout_s
        # entered as a context manager: websockets >= 17.1 deprecates a bare connect() (the
        # connection is closed by close(), not by leaving a block)
        ws = connect(self.url, compression=None, max_size=None, open_timeout=timeout_s).__enter__()
        try:
            first = ws.recv(timeout=timeout_s)
            if isinstance(first, str):
                raise protocol.ProtocolError(f"server sent text instead of metadata: {first[:200]}")
            metadata = protocol.unpackb(first)
            if not isinstance(metadata, dict):
                raise protocol.ProtocolError("server metadata is not a map")
            dim = metadata.get("action_dim", ACTION_DIM)
            if dim != ACTION_DIM:
                raise protocol.ProtocolError(f"server produces {dim}-D actions, apo_ros needs {ACTION_DIM}")
        except BaseException:
            ws.close()
            raise
        self._ws = ws
        self.metadata = metadata
        self.policy_id = str(metadata.get("policy_id") or self.policy_id or self.url)
        self.statistics_id = str(metadata.get("statistics_id") or self.statistics_id)
        self.reconnects += 1

    def _fail(self, why: str, *, drop: bool = True, quiet: bool = False) -> tuple[np.ndarray, bool]:
        """Record a failed request: hold (NaN chunk, ok False); `drop` closes the connection and
        schedules a reconnect after the backoff."""
        self.failures += 1
        self.failure_reason = "policy_unavailable"
        now = time.monotonic()
        if drop:
            if self._ws is not None:
                try:
                    self._ws.close()
                except Exception:  # noqa: BLE001 - already broken; closing is best effort
                    pass
                self._ws = None
            self._retry_at = now + self._backoff
            delay, self._backoff = self._backoff, min(self._backoff * 2, self.config.max_backoff_s)
            if self._lost_since is None:
                self._lost_since = now
                log.warning("policy server %s: %s; holding (zero motion), reconnecting with "
                            "backoff (next try in %.2g s)", self.url, why, delay)
            elif not quiet:
                log.warning("policy server %s: %s; holding", self.url, why)
            else:
                log.info("policy server %s: %s; next try in %.2g s", self.url, why, delay)
        else:
            log.warning("policy server %s: %s; holding (zero motion) for this step", self.url, why)
        return np.full((1, ACTION_DIM), np.nan), False


def _connect_errors() -> tuple[type[BaseException], ...]:
    from websockets.exceptions import WebSocketException

    return (OSError, TimeoutError, protocol.ProtocolError, WebSocketException)


def _describe(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
