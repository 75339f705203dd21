"""A sliding-window weight limiter for Hyperliquid's per-IP budget (1200 weight per minute).

Hyperliquid counts the weight of every request from one IP within a minute, so the limiter keeps a log of
(grant time, weight) and grants a request as soon as it fits: it spends the whole budget in bursts rather
than pacing requests evenly below it. Each grant is counted for `window + slack` seconds because the server
sees a request a little after we grant it; without the slack, network jitter could push the server's view
of some window over budget even though ours never was.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable


class WeightLimiter:
    """Never grants more than `budget` weight within any `window` seconds; serves waiters first come, first served."""

    def __init__(
        self,
        budget: int,
        window: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        slack: float | None = None,
    ) -> None:
        if budget < 1 or window <= 0:
            raise ValueError(f"WeightLimiter needs budget >= 1 and window > 0, got budget={budget}, window={window}")
        self.budget = budget
        self.window = window
        self.hold = window + (window / 100 if slack is None else slack)
        self._clock = clock
        self._sleep = sleep
        self._grants: deque[tuple[float, int]] = deque()
        self._used = 0
        # The log is shared by every event loop in the process (Prefect may run tasks in worker threads, each with
        # its own loop); the per-loop asyncio.Lock queues one loop's coroutines in FIFO order, and because only its
        # holder sleeps, a waiting heavy request cannot be overtaken by later light ones.
        self._state = threading.Lock()
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    async def acquire(self, weight: int) -> None:
        """Wait until `weight` fits in the budget, then record it as sent now."""
        if not 1 <= weight <= self.budget:
            raise ValueError(
                f"cannot acquire weight {weight} from a budget of {self.budget} per {self.window:g} s; "
                "a request's weight must be between 1 and the budget"
            )
        async with self._queue():
            while (wait := self._try_grant(weight)) > 0:
                await self._sleep(wait)

    def _queue(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._state:
            queue = self._queues.get(loop)
            if queue is None:
                queue = self._queues[loop] = asyncio.Lock()
            return queue

    def _try_grant(self, weight: int) -> float:
        """Grant and return 0, or return how many seconds until enough earlier weight expires."""
        with self._state:
            now = self._clock()
            while self._grants and self._grants[0][0] + self.hold <= now:
                self._used -= self._grants.popleft()[1]
            if self._used + weight <= self.budget:
                self._grants.append((now, weight))
                self._used += weight
                return 0.0
            still_used = self._used
            for sent, spent in self._grants:  # weight <= budget, so this stops by the last grant at the latest
                still_used -= spent
                if still_used + weight <= self.budget:
                    break
            return sent + self.hold - now


_shared: dict[int, WeightLimiter] = {}
_shared_guard = threading.Lock()


def shared_limiter(weight_per_minute: int) -> WeightLimiter:
    """The process-wide limiter for this budget: Hyperliquid counts weight per IP, not per client."""
    with _shared_guard:
        if weight_per_minute not in _shared:
            _shared[weight_per_minute] = WeightLimiter(weight_per_minute, 60.0)
        return _shared[weight_per_minute]
