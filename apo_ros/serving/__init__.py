"""Remote policy serving on openpi's websocket protocol: `apo-ros serve` runs a checkpoint on a
GPU box (`PolicyServer`), and `RemotePolicy` (any `ws://HOST:PORT` where a checkpoint is
accepted) runs it from the robot PC; `open_policy` opens either. `protocol` holds the wire format
and the observation keys."""

from apo_ros.lazy import lazy_exports

_LAZY = {
    "PolicyServer": "server", "ServeConfig": "server",
    "RemotePolicy": "client", "RemoteConfig": "client", "RemotePolicyError": "client",
    "is_remote": "client",
    "open_policy": "source", "provenance": "source",
    "ProtocolError": "protocol", "packb": "protocol", "unpackb": "protocol",
}

__getattr__ = lazy_exports(__name__, {name: f"apo_ros.serving.{module}" for name, module in _LAZY.items()})

__all__ = sorted(_LAZY)
