"""`DelayRelay`: a policy server seen through a slow link. It listens on its own port, forwards
every connection to an upstream policy server (`apo-ros serve`, an openpi server) byte for byte,
and holds each reply until `delay_s` after the request arrived. The runtime bench and the graph
tests use it to stand for a large model (a VLA taking hundreds of milliseconds per chunk) or a
slow network, with any small checkpoint behind it.
"""

from __future__ import annotations

import threading
import time
from typing import Any


class DelayRelay:
    def __init__(self, upstream_url: str, delay_s: float, host: str = "127.0.0.1", port: int = 0):
        from websockets.sync.server import serve

        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        self.upstream_url, self.delay_s = upstream_url, float(delay_s)
        self.replies = 0
        self._server = serve(self._handle, host, int(port), compression=None, max_size=None)
        self._thread = threading.Thread(target=self._server.serve_forever, name="delay-relay",
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.socket.getsockname()[:2]
        return f"ws://{host}:{port}"

    def _handle(self, client: Any) -> None:
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        try:
            with connect(self.upstream_url, compression=None, max_size=None) as upstream:
                client.send(upstream.recv())  # the server's metadata, at once
                while True:
                    request = client.recv()
                    t0 = time.monotonic()
                    upstream.send(request)
                    reply = upstream.recv()
                    wait = self.delay_s - (time.monotonic() - t0)
                    if wait > 0:
                        time.sleep(wait)
                    client.send(reply)
                    self.replies += 1
        except (ConnectionClosed, OSError):
            return

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> DelayRelay:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
