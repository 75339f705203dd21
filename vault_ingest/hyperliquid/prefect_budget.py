"""One weight budget for every process on the IP, kept by the Prefect server as a rate-limiting global
concurrency limit, so worker replicas on several machines share it through the server.

How Prefect 3.9.1 keeps such a limit (read in the installed package, prefect 3.9.1):
- `prefect/concurrency/asyncio.py` `rate_limit()` posts to `/v2/concurrency_limits/increment` with
  `mode="rate_limit"`, which the server allows only on limits with `slot_decay_per_second > 0`
  (`prefect/server/api/concurrency_limits_v2.py`, `_acquire_concurrency_slots`). Slots are never released:
  they decay.
- `prefect/server/models/concurrency_limits_v2.py`: `active_slots_after_decay` is
  `active_slots - floor(slot_decay_per_second * seconds since the row's updated)`, and
  `bulk_increment_active_slots` grants in one UPDATE only if that plus the slots asked fits `limit`. So the
  limit is a leaky bucket: `limit` is its capacity (the burst) and the decay its rate.
- A refusal is a 423 whose Retry-After the server derives from `denied_slots`
  (`_generate_concurrency_locked_response`), and `bulk_update_denied_slots` touches the row's `updated`
  without decaying `active_slots`: every refusal throws away the decay since the last update. Prefect's own
  client (`prefect/concurrency/services.py`, `ConcurrencySlotAcquisitionService.acquire`) asks at once and
  retries on that Retry-After; measured against a real server with one process it spent 85 % of the rate.
  So this reads the limit first (`GET /v2/concurrency_limits/{name}` returns `active_slots` after decay and
  writes nothing), waits until its slots fit, and only then asks: refusals happen only in races between
  processes, right after another's grant, when there is little decay to lose.
- The floor() loses under one slot per update, so one unit of weight is SLOTS_PER_WEIGHT slots.

The limit (HYPERLIQUID_RATE_LIMIT_NAME) is created or set to this run's budget when the run starts; every
process that shares the IP must use the same name and budget.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from vault_ingest.errors import RateBudgetError
from vault_ingest.hyperliquid.limiter import CAPACITY_WEIGHT, PAUSE_CAP, Throttle, ThrottledUnderLock

log = logging.getLogger("vault_ingest.hyperliquid")

DEFAULT_LIMIT_NAME = "hyperliquid-weight"
SLOTS_PER_WEIGHT = 10
# After a refusal, wait this many slots' decay beyond the computed time: floor() may round the decay down.
MARGIN_SLOTS = 1.5
# A server that cannot be reached is retried every OUTAGE_RETRY seconds for OUTAGE seconds (a redeploy of
# Railway's web service takes about that) before the run fails; requests wait meanwhile, none goes unpaced.
OUTAGE = 90.0
OUTAGE_RETRY = 2.0


def _prefect_client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client()


class PrefectWeightLimiter(ThrottledUnderLock):
    """Grants weight at `budget` per `window` seconds from the global concurrency limit `name`."""

    def __init__(
        self,
        budget: int,
        window: float = 60.0,
        *,
        name: str = DEFAULT_LIMIT_NAME,
        capacity: int = CAPACITY_WEIGHT,
        client_factory: Callable[[], Any] = _prefect_client,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        pause_cap: float = PAUSE_CAP,
        outage: float = OUTAGE,
    ) -> None:
        if budget < 1 or window <= 0 or capacity < 1:
            raise ValueError(f"PrefectWeightLimiter needs budget, window and capacity > 0, got {budget}, {window}, "
                             f"{capacity}")
        self.budget = budget
        self.window = window
        self.name = name
        self.capacity = capacity
        self.limit_slots = capacity * SLOTS_PER_WEIGHT
        self.decay_per_second = budget * SLOTS_PER_WEIGHT / window
        self.throttle = Throttle(clock, pause_cap)
        self.refusals = 0
        self.outage = outage
        self._client_factory = client_factory
        self._clock = clock
        self._sleep = sleep
        self._ready = False
        self._state = threading.Lock()
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    async def acquire(self, weight: int) -> None:
        """Wait out any 429 pause, then until the shared limit grants this weight's slots."""
        if not 1 <= weight <= self.capacity:
            raise ValueError(f"cannot acquire weight {weight} from the shared limit {self.name!r}: a request's "
                             f"weight must be between 1 and its capacity, {self.capacity}")
        async with self._queue():  # one acquisition in flight per process and loop, first come first served
            while (paused := self.throttle.wait()) > 0:
                await self._sleep(paused)
            unreachable_since = None
            while True:
                try:
                    client = await self._client()
                    if not self._ready:
                        await self._ensure_limit(client)
                    await self._take(client, self._slots(weight))
                    return
                except httpx.TransportError as exc:  # the server restarting (a redeploy): wait for it a while
                    await self.aclose()
                    now = self._clock()
                    unreachable_since = now if unreachable_since is None else unreachable_since
                    if now - unreachable_since >= self.outage:
                        raise self._error(exc, f" for {self.outage:g} s") from exc
                    log.warning("the Prefect server keeping the Hyperliquid budget is unreachable (%s); retrying",
                                _describe(exc))
                    await self._sleep(min(OUTAGE_RETRY, self.outage))
                except httpx.HTTPError as exc:
                    await self.aclose()
                    raise self._error(exc, "") from exc

    def _error(self, exc: httpx.HTTPError, how_long: str) -> RateBudgetError:
        return RateBudgetError(
            f"cannot take weight from the shared Hyperliquid budget, the Prefect global concurrency limit "
            f"{self.name!r}{how_long}: {_describe(exc)}; check PREFECT_API_URL and that the server is up, or set "
            "HYPERLIQUID_RATE_LIMIT=local to keep the budget in this process only"
        )

    async def aclose(self) -> None:
        """Close this event loop's connection to the Prefect server (HyperliquidClient.aclose calls this)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.__aexit__(None, None, None)

    async def _client(self) -> Any:
        # One connection per loop for the run: a new client per request costs a connection and its set-up,
        # and at a request a second that latency is what the pacing has to fit in.
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._client_factory()
            await client.__aenter__()
            self._clients[loop] = client
        return client

    def _slots(self, weight: int) -> int:
        # Slowing down this process spends more of the shared budget per request, so every process together
        # sends less; capped at the capacity, which the server never grants past.
        return min(self.limit_slots, math.ceil(weight * SLOTS_PER_WEIGHT / self.throttle.speed))

    async def _take(self, client: Any, slots: int) -> None:
        from prefect.exceptions import ObjectNotFound

        while True:
            # Read first, and ask only once the slots should fit: a refusal would throw away the decay since
            # the last grant, and one process asking right after its own grant would refuse itself every time.
            try:
                limit = await client.read_global_concurrency_limit_by_name(self.name)
            except ObjectNotFound:  # deleted under us: the run's budget still holds, so create it again
                await self._ensure_limit(client)
                continue
            over = limit.active_slots + slots - limit.limit
            if over > 0:
                await self._sleep((over + MARGIN_SLOTS) / limit.slot_decay_per_second)
            try:
                response = await client.increment_concurrency_slots(names=[self.name], slots=slots, mode="rate_limit")
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 423:
                    raise
                self.refusals += 1  # another process took them first: read again
                continue
            if response.json():
                return
            # The server grants an unknown name without counting it: the limit was deleted under us.
            await self._ensure_limit(client)

    async def _ensure_limit(self, client: Any) -> None:
        """Create the limit, or set it to this budget; refuse one switched off (it would limit nothing)."""
        from prefect.exceptions import ObjectAlreadyExists

        for attempt in range(2):
            try:
                await client.upsert_global_concurrency_limit_by_name(
                    self.name, self.limit_slots, slot_decay_per_second=self.decay_per_second
                )
                break
            except ObjectAlreadyExists:  # another process created it between our read and our create
                if attempt:
                    raise
        limit = await client.read_global_concurrency_limit_by_name(self.name)
        if not limit.active:
            raise RateBudgetError(
                f"the Prefect global concurrency limit {self.name!r} that shares the Hyperliquid weight budget is "
                f"inactive, so it would limit nothing; activate it (prefect gcl enable {self.name}) or set "
                "HYPERLIQUID_RATE_LIMIT=local"
            )
        self._ready = True

    def _queue(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._state:
            queue = self._queues.get(loop)
            if queue is None:
                queue = self._queues[loop] = asyncio.Lock()
            return queue


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code} {exc.response.text[:200]!r}"
    return f"{type(exc).__name__}: {exc}"
