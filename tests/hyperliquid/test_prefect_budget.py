"""PrefectWeightLimiter against a real `prefect server start`: the global concurrency limit it keeps there,
the rate it grants at (a window scaled down to seconds), the errors that name what to fix, and two real
`vault-ingest run sync-vault-details` processes sharing one budget against the replay that enforces it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid

import httpx
import psycopg
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

from emulator.runtime.postgres import free_port
from emulator.runtime.replay import Budget
from tests.support.prefect_server import (
    FAST_SERVER_SETTINGS,
    HOST,
    PREFECT,
    clean_environ,
    prefect_server,
    stop_process_group,
    wait_until,
)
from tests.support.replay import hyperliquid_env, replay_server
from vault_ingest.errors import RateBudgetError
from vault_ingest.hyperliquid.prefect_budget import SLOTS_PER_WEIGHT, PrefectWeightLimiter

pytestmark = pytest.mark.e2e

CLI = [sys.executable, "-m", "vault_ingest.cli"]
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
    try:
        for _ in range(count):
            await lim.acquire(WEIGHT)
            grants.append((time.monotonic(), WEIGHT))
    finally:
        await lim.aclose()


def acquire(lim: PrefectWeightLimiter) -> None:
    asyncio.run(take(lim, 1, []))


def most_in_any_window(grants: list[tuple[float, int]], window: float = WINDOW) -> int:
    return max(sum(w for s, w in grants if t - window < s <= t) for t, _ in grants)


def test_creates_the_limit_as_a_leaky_bucket_of_the_budget(server):
    acquire(limiter(server, "create"))
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


def test_an_existing_limit_is_set_to_this_budget(server):
    acquire(limiter(server, "reset", budget=600))
    acquire(limiter(server, "reset"))
    assert asyncio.run(read(server, "reset")).slot_decay_per_second == pytest.approx(BUDGET * SLOTS_PER_WEIGHT / WINDOW)


def test_an_inactive_limit_is_refused_with_the_fix(server):
    acquire(limiter(server, "off"))

    async def switch_off():
        async with PrefectClient(api=server.api_url) as client:
            await client.update_global_concurrency_limit("off", GlobalConcurrencyLimitUpdate(active=False))

    asyncio.run(switch_off())
    with pytest.raises(RateBudgetError, match="'off' .* is inactive.*prefect gcl enable off"):
        acquire(limiter(server, "off"))


def test_a_limit_deleted_mid_run_is_created_again(server):
    lim = limiter(server, "deleted")
    acquire(lim)

    async def delete():
        async with PrefectClient(api=server.api_url) as client:
            await client.delete_global_concurrency_limit_by_name("deleted")

    asyncio.run(delete())
    acquire(lim)
    assert asyncio.run(read(server, "deleted")).active_slots > 0


def test_a_429_makes_each_request_of_this_run_spend_more_of_the_shared_budget():
    lim = PrefectWeightLimiter(BUDGET, WINDOW)
    assert lim._slots(WEIGHT) == 200
    lim.throttled(0.0)
    assert lim._slots(WEIGHT) == 250  # the other processes keep their share; together they send less
    for _ in range(5):
        lim.throttle.paused_until = float("-inf")
        lim.throttled(0.0)
    assert lim._slots(WEIGHT) == lim.limit_slots == 400  # never past the capacity, which the server never grants


def test_an_unreachable_server_names_the_setting_to_check():
    url = f"http://127.0.0.1:{free_port()}/api"
    lim = PrefectWeightLimiter(BUDGET, WINDOW, client_factory=lambda: PrefectClient(api=url), outage=1.0)
    with pytest.raises(RateBudgetError, match="for 1 s: .*PREFECT_API_URL.*HYPERLIQUID_RATE_LIMIT=local") as caught:
        acquire(lim)
    assert isinstance(caught.value.__cause__, httpx.HTTPError)


# --- two `vault-ingest run` processes under one server ----------------------------------------------------------


@pytest.fixture
def two_databases(postgres_admin_url):
    names = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = postgres_admin_url.rpartition("/")
    yield [f"{base}/{name}" for name in names]
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_two_runs_share_the_budget_through_the_server_and_get_no_429(server, two_databases, tmp_path):
    # The replay counts Hyperliquid's rate (1200 a minute) over any 10 s: stricter than the documented minute,
    # so seconds of traffic tell. Each run alone may send 840 a minute, 140 per 10 s plus the bucket's 40:
    # two runs that did not share would send twice that and get 429s within seconds.
    with replay_server(budget=Budget.per_minute(1200, window=10.0)) as replay:
        envs = [server.client_env(tmp_path / f"home-{i}", DATABASE_URL=url, HYPERLIQUID_WEIGHT_PER_MINUTE="840",
                                  HYPERLIQUID_RATE_LIMIT_NAME="two-runs", **hyperliquid_env(replay),
                                  # the fifth vault by tvl, the Ghost, answers null on purpose: 1 in 8 is
                                  # over the default 10 %, and the run's pace is what this test is about
                                  INGEST_MAX_BAD_FRACTION="1")
                for i, url in enumerate(two_databases)]
        for env in envs:
            listed = subprocess.run([*CLI, "run", "sync-vaults"], env=env, capture_output=True, text=True, timeout=180)
            assert listed.returncode == 0, listed.stderr[-2000:]
        runs = [subprocess.Popen([*CLI, "run", "sync-vault-details", "--max-vaults", "8"], env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
                for env in envs]
        try:
            outcomes = [run.communicate(timeout=240) for run in runs]
        finally:
            for run in runs:
                if run.poll() is None:
                    stop_process_group(run)
        arrivals = list(replay.arrivals)
        throttled = replay.stats["throttled"]
    for run, (out, err) in zip(runs, outcomes):
        assert run.returncode == 0, err[-3000:]
        counts = json.loads(out)
        assert counts["failed"] == 0 and sum(counts.values()) - counts.get("skipped", 0) >= 8, counts
    assert throttled == 0
    assert len(arrivals) == 16  # both runs progressed: every vaultDetails of both went out, none retried
    assert most_in_any_window(arrivals, 10.0) <= 140 + 40 + WEIGHT
    limit = asyncio.run(read(server, "two-runs"))
    assert limit.slot_decay_per_second == pytest.approx(840 * SLOTS_PER_WEIGHT / 60)


def _start_server(home, port, log):
    env = clean_environ(PREFECT_HOME=str(home), PREFECT_SERVER_API_HOST=HOST, PREFECT_SERVER_API_PORT=str(port),
                        **FAST_SERVER_SETTINGS)
    process = subprocess.Popen([PREFECT, "server", "start", "--host", HOST, "--port", str(port)], env=env,
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def healthy():
        assert process.poll() is None, f"the Prefect server exited with {process.returncode}"
        try:
            return httpx.get(f"http://{HOST}:{port}/api/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(healthy, timeout=180, what="the Prefect server's health")
    return process


def test_a_run_waits_through_a_server_restart_and_goes_on_paced(server):
    # The module's server, stopped and started again on its port and home: a fresh one would cost another
    # database migration and UI copy. The restarted process is the one the module's teardown stops.
    lim = PrefectWeightLimiter(BUDGET, WINDOW, name="restart", client_factory=lambda: PrefectClient(api=server.api_url))
    grants: list[tuple[float, int]] = []
    with server.log_path.open("ab") as log:
        asyncio.run(take(lim, 1, grants))
        stop_process_group(server.process)
        waiting = threading.Thread(target=lambda: asyncio.run(take(lim, 4, grants)))
        waiting.start()
        wait_until(lambda: not waiting.is_alive() or len(grants) == 1, timeout=5, what="the run to wait")
        time.sleep(1)  # the run is now retrying against a closed port
        assert len(grants) == 1
        server.process = _start_server(server.home, server.port, log)
        waiting.join(timeout=120)
        assert not waiting.is_alive()
    assert len(grants) == 5  # the run went on once the server was back, in the same limit (same database)
    assert most_in_any_window(grants[1:]) <= BUDGET + 40
