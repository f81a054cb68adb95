"""What the real-graph tests share: waiting for a condition with the nodes' logs in the failure."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(check: Callable[[], object], timeout: float, what: str, logs: Callable[[], str],
               poll_s: float = 0.1) -> None:
    """Poll `check` until it is truthy; after `timeout` seconds fail with `what` and `logs()`."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}\n{logs()}"
        time.sleep(poll_s)
