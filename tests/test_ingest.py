"""The ingestion jobs end to end: client -> parser -> writer -> real PostgreSQL."""

import asyncio
import json
import logging

import httpx
import psycopg
import pytest

from tests.support.replay import hyperliquid_env, replay_server
from vault_ingest import ingest
from vault_ingest.config import Settings
from vault_ingest.errors import CircuitOpenError, DataQualityError, MalformedResponseError
from vault_ingest.hyperliquid.client import HyperliquidClient
from vault_ingest.hyperliquid.limiter import WeightLimiter
from vault_ingest.runtime import migrated_engine, open_run

LOG = logging.getLogger("test")
API, STATS = "https://api.test", "https://stats.test/Mainnet/vaults"


def entry(address, name="v", tvl="1.5"):
    return {"apr": 0.1, "pnls": [["day", ["0.0", "2.5"]]], "summary": {
        "name": name, "vaultAddress": address, "leader": "0x" + "11" * 20, "tvl": tvl, "isClosed": False,
        "relationship": {"type": "normal"}, "createTimeMillis": 1700000000000}}


def mock_client(handler):
    # The limiter paces at 1200 weight per 0.6 s: the budget's shape, a hundred times faster.
    return HyperliquidClient(API, STATS, limiter=WeightLimiter(1200, 0.6), transport=httpx.MockTransport(handler),
                             sleep=lambda _: asyncio.sleep(0))


@pytest.fixture
def engine(database_url):
    engine, _ = migrated_engine(database_url)
    yield engine
    engine.dispose()


def rows(database_url, table):
    with psycopg.connect(database_url) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()


async def run_list(engine, handler):
    async with mock_client(handler) as client:
        return await ingest.sync_vault_list(engine, client, LOG)


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b'{"vaults": []}', b"null"])
def test_malformed_list_fails_the_run_and_writes_nothing(engine, database_url, body):
    with pytest.raises(MalformedResponseError, match="vault list"):
        asyncio.run(run_list(engine, lambda request: httpx.Response(200, content=body)))
    assert rows(database_url, "vaults") == []


def test_one_invalid_record_is_skipped_and_the_rest_land(engine, database_url, caplog):
    good = [entry("0x" + f"{i:040x}") for i in range(1, 13)]  # one bad in 13: under the 10 % threshold
    bad = entry("0x" + "ee" * 20)
    del bad["summary"]["tvl"]
    body = json.dumps(good[:1] + [bad] + good[1:]).encode()
    with caplog.at_level(logging.WARNING, logger="test"):
        summary = asyncio.run(run_list(engine, lambda request: httpx.Response(200, content=body)))
    assert (summary.new, summary.skipped) == (12, 1)
    assert "0x" + "ee" * 20 in caplog.text and "'summary.tvl'" in caplog.text
    assert len(rows(database_url, "vaults")) == 12


def test_a_nul_character_skips_its_vault_and_keeps_what_is_stored(engine, database_url, caplog):
    """A `\\u0000` PostgreSQL cannot store (tests/db/test_writer.py) costs its vault, never the snapshot."""
    good = [entry("0x" + f"{i:040x}") for i in range(1, 13)]
    asyncio.run(run_list(engine, lambda request: httpx.Response(200, content=json.dumps(good).encode())))
    stored = rows(database_url, "vaults")
    later = json.loads(json.dumps(good))
    later[0]["summary"]["name"] = "v\x00"
    later[1]["summary"]["name"] = "w"
    with caplog.at_level(logging.WARNING, logger="test"):
        summary = asyncio.run(run_list(engine, lambda request: httpx.Response(
            200, content=json.dumps(later).encode(), headers={"Last-Modified": "Wed, 30 Dec 2099 03:00:41 GMT"})))
    assert (summary.skipped, summary.updated) == (1, 1) and "'summary.name'" in caplog.text
    assert rows(database_url, "vaults")[0][1] == stored[0][1] == "v"  # its stored name and rows are kept
    assert len(rows(database_url, "list_snapshots")) == 2


def test_same_list_twice_leaves_identical_tables(database_url):
    with replay_server() as server:
        settings = Settings.from_env({"DATABASE_URL": database_url, **hyperliquid_env(server)})

        async def twice():
            results = []
            for _ in range(2):
                async with open_run(settings) as (engine, client):
                    results.append(await ingest.sync_vault_list(engine, client, LOG))
                    results.append([rows(database_url, t) for t in ("vaults", "vault_list_values", "list_snapshots")])
            return results

        first, tables1, second, tables2 = asyncio.run(twice())
    assert first.new > 0 and second.new == 0 and second.updated == 0 and second.unchanged == first.new
    assert tables1 == tables2


def test_details_run_stops_at_the_circuit_breaker_when_every_request_fails(engine):
    body = json.dumps([entry("0x" + f"{i:040x}", tvl="100") for i in range(1, 3)]).encode()
    posts = []

    def handler(request):
        if request.method == "GET":
            return httpx.Response(200, content=body)
        posts.append(request)
        return httpx.Response(503)

    async def go():
        async with mock_client(handler) as client:
            await ingest.sync_vault_list(engine, client, LOG)
            return await ingest.sync_vault_details(engine, client, LOG)

    with pytest.raises(CircuitOpenError, match="after 10 failed answers in a row.*HTTP 503"):
        asyncio.run(go())
    assert len(posts) == 10  # not 2 vaults x 6 attempts: the run stopped sending


def list_body(count, start=1, tvl="100"):
    return json.dumps([entry("0x" + f"{i:040x}", tvl=tvl) for i in range(start, start + count)]).encode()


def test_a_list_with_too_many_bad_entries_fails_and_writes_nothing(engine, database_url):
    body = json.loads(list_body(8))
    for e in body[:2]:
        e["summary"]["tvl"] = "not a number"
    with pytest.raises(DataQualityError, match="2 of 8 vaults were skipped") as caught:
        asyncio.run(run_list(engine, lambda request: httpx.Response(200, content=json.dumps(body).encode())))
    assert caught.value.summary.skipped == 2 and "'summary.tvl'" in caught.value.summary.problems[0]
    assert rows(database_url, "vaults") == [] and rows(database_url, "list_snapshots") == []


def test_a_list_half_the_size_of_the_last_is_not_written_over_it(engine, database_url):
    def serve(body, modified):
        return lambda request: httpx.Response(200, content=body, headers={"Last-Modified": modified})

    asyncio.run(run_list(engine, serve(list_body(10), "Tue, 30 Dec 2025 03:00:41 GMT")))
    before = [rows(database_url, t) for t in ("vaults", "vault_list_values", "list_snapshots")]
    with pytest.raises(DataQualityError, match="holds 4 vaults against 10"):
        asyncio.run(run_list(engine, serve(list_body(4), "Tue, 30 Dec 2025 04:00:41 GMT")))
    with pytest.raises(DataQualityError, match="holds 0 vaults against 10"):
        asyncio.run(run_list(engine, serve(b"[]", "Tue, 30 Dec 2025 05:00:41 GMT")))
    assert [rows(database_url, t) for t in ("vaults", "vault_list_values", "list_snapshots")] == before
    # a real shrink that keeps at least half lands, and delists the rest
    asyncio.run(run_list(engine, serve(list_body(5), "Tue, 30 Dec 2025 06:00:41 GMT")))
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM vaults WHERE delisted_at IS NOT NULL").fetchone() == (5,)


def details_run(engine, handler, **kwargs):
    async def go():
        async with mock_client(handler) as client:
            await ingest.sync_vault_list(engine, client, LOG)
            return await ingest.sync_vault_details(engine, client, LOG, **kwargs)
    return asyncio.run(go())


def test_details_run_fails_when_the_api_answers_null_to_everything(engine, database_url):
    body = list_body(3)

    def handler(request):
        return httpx.Response(200, content=body if request.method == "GET" else b"null")

    with pytest.raises(DataQualityError, match="3 of 3 vaults") as caught:
        details_run(engine, handler)
    assert caught.value.summary.not_found == 3
    assert "not found (vaultDetails answered null)" in caught.value.summary.problems[0]


def test_details_for_another_vault_are_skipped_with_a_named_error(engine, database_url):
    from tests.portfolio_sample import details_body, portfolio

    body, other = list_body(2, tvl="5"), "0x" + "ab" * 20

    def handler(request):
        if request.method == "GET":
            return httpx.Response(200, content=body)
        asked = json.loads(request.content)["vaultAddress"]
        answered = other if asked.endswith("1") else asked
        return httpx.Response(200, content=json.dumps(details_body(portfolio(), answered)).encode())

    summary = details_run(engine, handler, max_bad_fraction=0.5)
    assert (summary.new, summary.skipped) == (1, 1)
    assert "0x" + f"{1:040x}" in summary.problems[0] and other in summary.problems[0]
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT DISTINCT vault_address FROM vault_history").fetchall()
    assert stored == [("0x" + f"{2:040x}",)]


def test_a_list_write_that_lands_while_the_list_is_fetched_leaves_the_run_nothing_stale(engine, database_url,
                                                                                         caplog):
    """Another list write moves a stored entry while this run's list is on its way: the run parses against the
    entries its write reads under its lock, so it fetches once, parses the moved entry and lands the list whole."""
    from datetime import datetime, timezone

    from vault_ingest.db.writer import write_vault_list
    from vault_ingest.hyperliquid.vault_list import parse_vault_list

    vaults = [entry("0x" + f"{i:040x}") for i in range(1, 6)]
    body = json.dumps(vaults).encode()
    asyncio.run(run_list(engine, lambda request: httpx.Response(
        200, content=body, headers={"Last-Modified": "Tue, 30 Dec 2025 03:00:41 GMT"})))
    other = json.dumps([entry(vaults[0]["summary"]["vaultAddress"], tvl="9")] + vaults[1:]).encode()
    gets = []

    def meanwhile(request):
        gets.append(request)
        if len(gets) == 1:  # the other write lands while this run's answer is on its way
            write_vault_list(engine, parse_vault_list(other)[0], datetime(2025, 12, 30, 3, 30, tzinfo=timezone.utc))
        return httpx.Response(200, content=body, headers={"Last-Modified": "Tue, 30 Dec 2025 04:00:41 GMT"})

    with caplog.at_level(logging.WARNING, logger="test"):
        summary = asyncio.run(run_list(engine, meanwhile))
    assert len(gets) == 1 and "parse the list again in full" not in caplog.text
    assert (summary.new, summary.updated, summary.unchanged) == (0, 0, 5)
    with psycopg.connect(database_url) as conn:
        tvl = conn.execute("SELECT tvl::text FROM vault_latest WHERE address = %s",
                           (vaults[0]["summary"]["vaultAddress"],)).fetchone()
        snapshots = conn.execute("SELECT count(*) FROM list_snapshots").fetchone()
    assert tvl == ("1.5",) and snapshots == (3,)
