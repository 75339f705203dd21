"""The one way the emulator waits: poll a check until it holds, a stop is asked for, or a deadline passes."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float, *, interval: float = 0.2,
               stopped: Callable[[], bool] = lambda: False,
               sleep: Callable[[float], object] = time.sleep) -> T | None:
    """The first truthy result of `check()`, or None once `stopped()` or `timeout` seconds have passed.
    `check` runs at least once, and once more at the deadline, so a slow machine never loses the last look."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0 or stopped():
            return None
        sleep(min(interval, remaining))
