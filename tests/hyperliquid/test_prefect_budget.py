"""PrefectWeightLimiter against a real `prefect server start`: the global concurrency limit it keeps there,
the rate it grants at (a window scaled down to seconds), and the errors that name what to fix."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

from emulator.postgres import free_port
from tests.support.prefect_server import prefect_server
from vault_ingest.errors import RateBudgetError
from vault_ingest.hyperliquid.prefect_budget import SLOTS_PER_WEIGHT, PrefectWeightLimiter

pytestmark = pytest.mark.e2e

# 120 weight per 6 s: one vaultDetails a second, so a test of a few seconds shows the rate.
BUDGET, WINDOW, WEIGHT = 120, 6.0, 20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with prefect_server(tmp_path_factory.mktemp("prefect-budget")) as server:
        yield server


def limiter(server, name: str, **kwargs) -> PrefectWeightLimiter:
    kwargs.setdefault("window", WINDOW)
    return PrefectWeightLimiter(kwargs.pop("budget", BUDGET), name=name,
                                client_factory=lambda: PrefectClient(api=server.api_url), **kwargs)


async def read(server, name: str):
    async with PrefectClient(api=server.api_url) as client:
        return await client.read_global_concurrency_limit_by_name(name)


async def take(lim: PrefectWeightLimiter, count: int, grants: list[tuple[float, int]]) -> None:
    for _ in range(count):
        await lim.acquire(WEIGHT)
        grants.append((time.monotonic(), WEIGHT))


def most_in_any_window(grants: list[tuple[float, int]], window: float = WINDOW) -> int:
    return max(sum(w for s, w in grants if t - window < s <= t) for t, _ in grants)


def test_creates_the_limit_as_a_leaky_bucket_of_the_budget(server):
    asyncio.run(limiter(server, "create").acquire(WEIGHT))
    limit = asyncio.run(read(server, "create"))
    assert limit.active and limit.limit == 40 * SLOTS_PER_WEIGHT
    assert limit.slot_decay_per_second == pytest.approx(BUDGET * SLOTS_PER_WEIGHT / WINDOW)


def test_two_limiters_share_one_budget_through_the_server(server):
    # Two limiters with their own queues, as two processes have: only the server stands between them.
    first, second = limiter(server, "shared"), limiter(server, "shared")
    grants_1: list[tuple[float, int]] = []
    grants_2: list[tuple[float, int]] = []

    async def both():
        await asyncio.gather(take(first, 5, grants_1), take(second, 5, grants_2))

    asyncio.run(both())
    assert len(grants_1) == len(grants_2) == 5
    # Never more than the budget plus the bucket's capacity in a window; alone, each could spend the budget.
    assert most_in_any_window(grants_1 + grants_2) <= BUDGET + 40
    assert first.refusals + second.refusals > 0  # they did contend, and the server decided


def test_an_existing_limit_is_set_to_this_budget(server):
    asyncio.run(limiter(server, "reset", budget=600).acquire(WEIGHT))
    asyncio.run(limiter(server, "reset").acquire(WEIGHT))
    assert asyncio.run(read(server, "reset")).slot_decay_per_second == pytest.approx(BUDGET * SLOTS_PER_WEIGHT / WINDOW)


def test_an_inactive_limit_is_refused_with_the_fix(server):
    asyncio.run(limiter(server, "off").acquire(WEIGHT))

    async def switch_off():
        async with PrefectClient(api=server.api_url) as client:
            await client.update_global_concurrency_limit("off", GlobalConcurrencyLimitUpdate(active=False))

    asyncio.run(switch_off())
    with pytest.raises(RateBudgetError, match="'off' .* is inactive.*prefect gcl enable off"):
        asyncio.run(limiter(server, "off").acquire(WEIGHT))


def test_a_limit_deleted_mid_run_is_created_again(server):
    lim = limiter(server, "deleted")
    asyncio.run(lim.acquire(WEIGHT))

    async def delete():
        async with PrefectClient(api=server.api_url) as client:
            await client.delete_global_concurrency_limit_by_name("deleted")

    asyncio.run(delete())
    asyncio.run(lim.acquire(WEIGHT))
    assert asyncio.run(read(server, "deleted")).active_slots > 0


def test_an_unreachable_server_names_the_setting_to_check():
    url = f"http://127.0.0.1:{free_port()}/api"
    lim = PrefectWeightLimiter(BUDGET, WINDOW, client_factory=lambda: PrefectClient(api=url))
    with pytest.raises(RateBudgetError, match="PREFECT_API_URL.*HYPERLIQUID_RATE_LIMIT=local") as caught:
        asyncio.run(lim.acquire(WEIGHT))
    assert isinstance(caught.value.__cause__, httpx.HTTPError)
