"""cassettes/: every open vault of the list has a vaultDetails answer in the real answers' shape, and a replayed
sync-vault-details over all of them passes the default INGEST_MAX_BAD_FRACTION.

The shape is read from the real samples (the docs' HLP example, HLP Strategy B's recorded portfolio), not from our
parser: the same keys in the same order, the same JSON types, the same periods."""

from __future__ import annotations

import asyncio
import json
import logging
from decimal import Decimal

import psycopg

from emulator.runtime.replay import Budget, load_cassettes
from tests.support.replay import CASSETTES, hyperliquid_env, replay_server
from vault_ingest import ingest
from vault_ingest.config import DEFAULT_MAX_BAD_FRACTION, Settings
from vault_ingest.hyperliquid.client import HyperliquidClient
from vault_ingest.hyperliquid.limiter import WeightLimiter
from vault_ingest.runtime import migrated_engine

SAMPLES = CASSETTES / "samples"
DOCS_EXAMPLE = json.loads((SAMPLES / "info_vaultDetails_HLP_official_docs_example.json").read_text())
REAL_PORTFOLIO = json.loads((SAMPLES / "info_portfolio_vault_0x31ca83_hlp_child.json").read_text())
GHOST = "0x80ace6ef6bc7406c0c001de3ffafdf8cb1133e6a"  # listed and open, answered null on purpose
HLP_B = "0x31ca8395cf837de08b24da3f660e77761dfb974b"


def listed() -> list[dict]:
    recorded = load_cassettes(CASSETTES)[("GET", "/Mainnet/vaults", "")]
    return json.loads(recorded.body)


def details_answers() -> dict[str, object]:
    """vaultAddress asked -> the JSON of the last 200 answer recorded for it."""
    found = {}
    for (method, path, body), answer in load_cassettes(CASSETTES).items():
        if method == "POST" and json.loads(body or "{}").get("type") == "vaultDetails" and answer.status == 200:
            found[json.loads(body)["vaultAddress"]] = json.loads(answer.body)
    return found


def types(value):
    """A JSON value's shape: the type of each key (in order) and of list items, values left out."""
    if isinstance(value, dict):
        return [(key, types(item)) for key, item in value.items()]
    if isinstance(value, list):
        return sorted({json.dumps(types(item)) for item in value})
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__


def test_every_open_vault_but_the_ghost_has_details():
    open_vaults = {e["summary"]["vaultAddress"]: e for e in listed() if not e["summary"]["isClosed"]}
    answers = details_answers()
    assert len(open_vaults) == 28
    assert answers[GHOST] is None
    answered = {vault for vault, body in answers.items() if body is not None}
    assert answered == set(open_vaults) - {GHOST}
    for vault in answered:  # each answer is its own vault's, as the list knows it
        body, summary = answers[vault], open_vaults[vault]["summary"]
        assert (body["vaultAddress"], body["name"], body["leader"]) == (vault, summary["name"], summary["leader"])
        assert body["relationship"] == summary["relationship"] and body["isClosed"] is False
        if vault != HLP_B:  # whose portfolio is the real one, recorded on another day
            last_value = body["portfolio"][3][1]["accountValueHistory"][-1][1]
            assert Decimal(last_value) == Decimal(summary["tvl"])  # allTime ends at the list's tvl


def test_every_details_answer_has_the_shape_of_the_real_ones():
    top_level = [key for key in DOCS_EXAMPLE]
    docs_types = dict(types(DOCS_EXAMPLE))
    follower = types(DOCS_EXAMPLE["followers"][0])
    periods = [period for period, _ in REAL_PORTFOLIO]
    window = types(REAL_PORTFOLIO[0][1])
    for vault, body in details_answers().items():
        if body is None:
            continue
        assert list(body) == top_level, vault
        for key in ("name", "vaultAddress", "leader", "description", "apr", "leaderFraction", "leaderCommission",
                    "maxDistributable", "maxWithdrawable", "isClosed", "allowDeposits", "alwaysCloseOnWithdraw"):
            assert types(body[key]) == docs_types[key], (vault, key)
        assert body["followerState"] is None
        assert [period for period, _ in body["portfolio"]] == periods, vault
        for period, data in body["portfolio"]:
            assert types(data) == window, (vault, period)
            assert [t for t, _ in data["accountValueHistory"]] == [t for t, _ in data["pnlHistory"]]
            assert data["pnlHistory"][0][1] == "0.0"  # cumulative from the window's start, as in the real one
        counts = [len(data["accountValueHistory"]) for _, data in body["portfolio"]]
        assert counts[:3] == counts[4:7] == [13, 64, 45], vault  # the real sample's day, week, month
        assert all(types(row) == follower for row in body["followers"]), vault
        assert len([row for row in body["followers"] if row["user"] != "Leader"]) <= 100


def test_a_replayed_details_run_over_every_open_vault_passes_the_default_threshold(database_url):
    # The replay's budget is off and the limiter fast: this is about the answers, not the pace.
    with replay_server(budget=Budget(0)) as server:
        settings = Settings.from_env({"DATABASE_URL": database_url, **hyperliquid_env(server)})
        assert settings.max_bad_fraction == DEFAULT_MAX_BAD_FRACTION

        async def run():
            engine, _ = migrated_engine(database_url)
            try:
                async with HyperliquidClient(settings.api_url, settings.stats_url,
                                             limiter=WeightLimiter(1200, 0.6)) as client:
                    log = logging.getLogger("test")
                    await ingest.sync_vault_list(engine, client, log)
                    return await ingest.sync_vault_details(engine, client, log,
                                                           max_bad_fraction=settings.max_bad_fraction)
            finally:
                engine.dispose()

        summary = asyncio.run(run())
    assert summary.counts() == {"new": 27, "updated": 0, "unchanged": 0, "skipped": 0, "failed": 0, "not_found": 1}
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT count(DISTINCT vault_address) FROM vault_history").fetchone()[0]
    assert stored == 27

