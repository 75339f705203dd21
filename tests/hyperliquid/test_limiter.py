"""WeightLimiter under simulated time: a fake clock that only the fake sleep moves, so no test really waits."""

from __future__ import annotations

import asyncio
import random

import pytest

from vault_ingest.hyperliquid.limiter import WeightLimiter, shared_limiter


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0, "the limiter must never busy-wait"
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # let other coroutines run, as a real sleep would


def limiter(fake: FakeTime, budget: int = 1200, **kwargs) -> WeightLimiter:
    return WeightLimiter(budget, 60.0, clock=fake.clock, sleep=fake.sleep, **kwargs)


def max_in_any_window(grants: list[tuple[float, int]], window: float = 60.0) -> int:
    """The largest weight inside any closed window [t - window, t], t being each grant time."""
    return max(sum(w for s, w in grants if t - window <= s <= t) for t, _ in grants)


async def acquire_all(lim: WeightLimiter, fake: FakeTime, weights: list[int]) -> list[tuple[float, int]]:
    grants = []
    for weight in weights:
        await lim.acquire(weight)
        grants.append((fake.now, weight))
    return grants


def test_never_exceeds_the_budget_and_uses_at_least_95_percent_of_it():
    fake = FakeTime()
    grants = asyncio.run(acquire_all(limiter(fake), fake, [20] * 200))
    assert max_in_any_window(grants) <= 1200 + 40  # the budget plus the bucket's capacity
    last = grants[-1][0]
    sent_before_last = sum(w for t, w in grants if t < last)
    assert last > 3 * 60, "200 x 20 is more than three windows' worth"
    assert sent_before_last >= 0.95 * 1200 * last / 60


def test_paces_evenly_instead_of_spending_the_budget_at_once():
    fake = FakeTime()
    grants = asyncio.run(acquire_all(limiter(fake, budget=1080), fake, [20] * 10))
    times = [t for t, _ in grants]
    assert times[:2] == [0.0, 0.0]  # the capacity: two requests at once
    gaps = [b - a for a, b in zip(times[1:], times[2:])]
    assert gaps == pytest.approx([20 * 60 / 1080] * 8)  # then one vaultDetails every 1.11 s


def test_a_late_wake_up_catches_up_by_at_most_the_capacity():
    fake = FakeTime()
    lim = limiter(fake, budget=1200)
    asyncio.run(acquire_all(lim, fake, [20] * 3))
    fake.now += 30.0  # the run stalled (a database write) for half a window
    grants = asyncio.run(acquire_all(lim, fake, [20] * 4))
    assert [t - 31.0 for t, _ in grants] == pytest.approx([0.0, 0.0, 1.0, 2.0])


def test_a_throttle_pauses_every_acquirer_and_slows_the_rate():
    fake = FakeTime()
    lim = limiter(fake, budget=1200, capacity=20)
    asyncio.run(acquire_all(lim, fake, [20]))
    assert lim.throttled(4.0) == 4.0
    grants = asyncio.run(acquire_all(lim, fake, [20] * 3))
    assert [t for t, _ in grants] == pytest.approx([4.0, 4.0 + 1.25, 4.0 + 2.5])  # 1 s per request / 0.8


def test_speed_never_falls_below_a_quarter():
    fake = FakeTime()
    lim = limiter(fake)
    for _ in range(20):
        fake.now = lim.throttle.paused_until + 1
        lim.throttled(0.0)
    assert lim.throttle.speed == pytest.approx(0.25)


def test_concurrent_acquirers_are_served_in_arrival_order_within_budget():
    fake = FakeTime()
    lim = limiter(fake)
    order: list[int] = []
    grants: list[tuple[float, int]] = []

    async def one(index: int, weight: int) -> None:
        await lim.acquire(weight)
        order.append(index)
        grants.append((fake.now, weight))

    async def main() -> None:
        # A heavy request queued behind light ones must not be overtaken by the light ones after it.
        weights = [20] * 50 + [1200] + [20] * 49
        await asyncio.gather(*(one(i, w) for i, w in enumerate(weights)))

    asyncio.run(main())
    assert order == list(range(100))
    assert max_in_any_window(grants) <= 1200 + 40


def test_one_limiter_serves_several_event_loops():
    # Prefect may run tasks on worker threads, each with its own loop, all sharing the process's limiter.
    fake = FakeTime()
    lim = limiter(fake, budget=100)

    async def contend() -> None:
        await asyncio.gather(*(lim.acquire(20) for _ in range(12)))

    asyncio.run(contend())
    asyncio.run(contend())
    assert fake.now == pytest.approx(22 * 12.0)  # 24 x 20 at 100 per window: one per 12 s after a burst of two


@pytest.mark.parametrize("weight", [1201, 0, -5])
def test_a_weight_outside_1_to_budget_is_refused(weight):
    with pytest.raises(ValueError, match=f"weight {weight} from a budget of 1200"):
        asyncio.run(limiter(FakeTime()).acquire(weight))


def test_shared_limiter_is_one_per_budget():
    assert shared_limiter(1200) is shared_limiter(1200)
    assert shared_limiter(600) is not shared_limiter(1200)
    assert shared_limiter(600).budget == 600
    assert shared_limiter(600, 20.0) is not shared_limiter(600) and shared_limiter(600, 20.0).window == 20.0
