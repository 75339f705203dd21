"""The in-process weight limiter for Hyperliquid's per-IP budget, for runs without a Prefect server.

Hyperliquid counts "an aggregated weight limit of 1200 per minute" per IP (docs, rate-limits-and-user-limits,
mirrored in dzmbs/hyperliquid-docs @ 24c1248cc18e); it does not say whether that minute slides or is fixed.
Pacing requests evenly at the configured rate is safe under either reading, whereas spending the whole
budget at once in a burst is not when the server's window slides. The limiter is a token bucket in the form
of a generic cell rate algorithm: each grant of weight w moves a theoretical arrival time on by
w x window / budget, and a request may go once that time is at most `capacity - w` weight ahead of now. So a
late wake-up catches up by at most `capacity` instead of losing its share, and in any window the server sees
at most budget + capacity, which the default headroom (config.DEFAULT_WEIGHT_PER_MINUTE) leaves room for.

A 429 means someone else spends the same IP's budget: `throttled` pauses every request of the run (honouring
Retry-After, capped) and lowers the rate for the rest of the run.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Protocol

# A 429 without Retry-After pauses for PAUSE_BASE, doubling with each 429 in a row, never past PAUSE_CAP
# (nor does a Retry-After that asks for longer): Hyperliquid's window is a minute.
PAUSE_BASE = 5.0
PAUSE_CAP = 60.0
# Each 429 outside a pause multiplies the rate by SLOWDOWN, never below MIN_SPEED of the configured rate.
SLOWDOWN = 0.8
MIN_SPEED = 0.25
# The bucket's capacity: two vaultDetails (weight 20) at once at most, then one at a time at the rate.
CAPACITY_WEIGHT = 40


class Limiter(Protocol):
    """What the client needs of a weight budget: this module's in-process one, or prefect_budget's shared one."""

    async def acquire(self, weight: int) -> None: ...

    def throttled(self, retry_after: float | None) -> float: ...

    def answered(self) -> None: ...

    async def aclose(self) -> None: ...


class Throttle:
    """What a 429 does to one run: a pause every request waits out, and a speed (1.0 = configured rate)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, cap: float = PAUSE_CAP) -> None:
        self.speed = 1.0
        self.paused_until = float("-inf")
        self.cap = cap
        self._clock = clock
        self._in_a_row = 0

    def throttled(self, retry_after: float | None) -> float:
        """Record a 429 and return the pause it starts (seconds from now)."""
        now = self._clock()
        if now >= self.paused_until:  # answers to requests already in flight when the pause began count once
            self.speed = max(MIN_SPEED, self.speed * SLOWDOWN)
            self._in_a_row += 1
        pause = retry_after if retry_after is not None else PAUSE_BASE * 2 ** (self._in_a_row - 1)
        pause = min(self.cap, max(0.0, pause))
        self.paused_until = max(self.paused_until, now + pause)
        return pause

    def answered(self) -> None:
        """A request got through: the next 429 starts the pause doubling afresh (the speed stays lowered)."""
        self._in_a_row = 0

    def wait(self) -> float:
        return max(0.0, self.paused_until - self._clock())


class ThrottledUnderLock:
    """What both limiters do with a 429 and an answer: their `throttle`, under their `_state` lock."""

    throttle: Throttle
    _state: threading.Lock

    def throttled(self, retry_after: float | None) -> float:
        """A 429: pause every request of the run and slow down. Returns the pause in seconds."""
        with self._state:
            return self.throttle.throttled(retry_after)

    def answered(self) -> None:
        with self._state:
            self.throttle.answered()


class WeightLimiter(ThrottledUnderLock):
    """Grants weight at `budget` per `window` seconds, evenly paced; serves waiters first come, first served."""

    def __init__(
        self,
        budget: int,
        window: float = 60.0,
        *,
        capacity: int = CAPACITY_WEIGHT,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        pause_cap: float = PAUSE_CAP,
    ) -> None:
        if budget < 1 or window <= 0 or capacity < 1:
            raise ValueError(
                f"WeightLimiter needs budget >= 1, window > 0 and capacity >= 1, got {budget}, {window}, {capacity}"
            )
        self.budget = budget
        self.window = window
        self.capacity = capacity
        self.throttle = Throttle(clock, pause_cap)
        self._clock = clock
        self._sleep = sleep
        self._tat = float("-inf")  # the theoretical arrival time of the next grant at the current rate
        # Shared by every event loop in the process (Prefect may run tasks in worker threads, each with its
        # own loop); the per-loop asyncio.Lock queues one loop's coroutines in FIFO order, and because only its
        # holder sleeps, a waiting heavy request cannot be overtaken by later light ones.
        self._state = threading.Lock()
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    async def acquire(self, weight: int) -> None:
        """Wait until `weight` may be sent under the budget and any 429 pause, then record it as sent now."""
        if not 1 <= weight <= self.budget:
            raise ValueError(
                f"cannot acquire weight {weight} from a budget of {self.budget} per {self.window:g} s; "
                "a request's weight must be between 1 and the budget"
            )
        async with self._queue():
            while (wait := self._try_grant(weight)) > 0:
                await self._sleep(wait)

    async def aclose(self) -> None:
        """Nothing to close: the process keeps this limiter for every run (see shared_limiter)."""

    def seconds_per_weight(self) -> float:
        return self.window / (self.budget * self.throttle.speed)

    def _queue(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._state:
            queue = self._queues.get(loop)
            if queue is None:
                queue = self._queues[loop] = asyncio.Lock()
            return queue

    def _try_grant(self, weight: int) -> float:
        """Grant and return 0, or return how many seconds until this weight may go."""
        with self._state:
            paused = self.throttle.wait()
            if paused > 0:
                return paused
            now = self._clock()
            per_weight = self.seconds_per_weight()
            # A request heavier than the capacity waits until the bucket has drained for its excess.
            early = self._tat + (weight - self.capacity) * per_weight - now
            if early > 0:
                return early
            self._tat = max(self._tat, now) + weight * per_weight
            return 0.0


_shared: dict[tuple[int, float], WeightLimiter] = {}
_shared_guard = threading.Lock()


def shared_limiter(weight_per_minute: int, window: float = 60.0) -> WeightLimiter:
    """The process-wide limiter for this budget: Hyperliquid counts weight per IP, not per client."""
    with _shared_guard:
        key = (weight_per_minute, window)
        if key not in _shared:
            _shared[key] = WeightLimiter(weight_per_minute, window)
        return _shared[key]
