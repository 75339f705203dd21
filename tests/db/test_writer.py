"""The snapshot writer against a real PostgreSQL: counts, exact decimals, idempotence, atomicity."""

from __future__ import annotations

import threading
from dataclasses import replace
from decimal import Decimal

import psycopg
import pytest
from sqlalchemy import select, text

from tests.db.advisory import wait_until_queued
from tests.db.factories import HOUR, T0, address, details, portfolio, summary, window
from vault_ingest.db.engine import make_engine
from vault_ingest.db.migrate import upgrade
from vault_ingest.db.schema import metadata, vault_history, vault_metrics, vaults
from vault_ingest.db.writer import (
    WRITE_LOCK_KEY, WriteCounts, latest_list_snapshot, top_vaults, vaults_for_details, write_vault_details,
    write_vault_list,
)
from vault_ingest.errors import StorageError
from vault_ingest.hyperliquid.models import Relationship, fits_numeric
from vault_ingest.metrics import window_metrics


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def dump(engine) -> dict[str, list[tuple[str, ...]]]:
    """Every row of every table as text, so 1.0 and 1.00 differ, in primary-key order."""
    with engine.connect() as conn:
        return {
            t.name: [tuple(map(str, row)) for row in conn.execute(select(t).order_by(*t.primary_key.columns))]
            for t in metadata.sorted_tables
        }


def vault(engine, n: int) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(select(vaults).where(vaults.c.address == address(n))).one()._mapping)


def metrics_rows(engine, n: int) -> list[dict]:
    with engine.connect() as conn:
        m = vault_metrics.c
        rows = conn.execute(select(vault_metrics).where(m.vault_address == address(n)).order_by(m.observed_at))
        return [dict(r._mapping) for r in rows]


class Boom(Exception):
    pass


def fail_at(stage: str):
    def after(done: str) -> None:
        if done == stage:
            raise Boom(stage)
    return after


# --- the stats list ---------------------------------------------------------------------------


def test_list_counts_new_updated_unchanged_across_snapshots(engine):
    assert write_vault_list(engine, [summary(1), summary(2), summary(3)], T0) == WriteCounts(new=3)

    second = [
        summary(1, tvl=Decimal("5")),  # metrics are not vault attributes
        summary(2, name="Renamed"),
        summary(3, is_closed=True),
        summary(4),
    ]
    assert write_vault_list(engine, second, T0 + HOUR) == WriteCounts(new=1, updated=2, unchanged=1)

    assert vault(engine, 2)["name"] == "Renamed"
    assert vault(engine, 3)["is_closed"] is True
    assert (vault(engine, 1)["first_seen"], vault(engine, 1)["last_seen"]) == (T0, T0 + HOUR)
    assert (vault(engine, 4)["first_seen"], vault(engine, 4)["last_seen"]) == (T0 + HOUR, T0 + HOUR)
    assert [m["tvl"] for m in metrics_rows(engine, 1)] == [Decimal("1000.5"), Decimal("5")]


def test_list_metrics_land_per_snapshot(engine):
    write_vault_list(engine, [summary(1, pnl={"day": Decimal("1.5"), "allTime": Decimal(7)})], T0)
    [row] = metrics_rows(engine, 1)
    assert row["observed_at"] == T0
    assert (row["tvl"], row["apr"]) == (Decimal("1000.5"), Decimal("0.12"))
    assert (row["pnl_day"], row["pnl_week"], row["pnl_month"], row["pnl_all_time"]) == (
        Decimal("1.5"), None, None, Decimal(7))
    assert row["max_distributable"] is None  # a detail column, left to vaultDetails


def test_a_vault_missing_from_a_later_list_is_delisted_until_it_comes_back(engine):
    write_vault_list(engine, [summary(1, tvl=Decimal(5)), summary(2, tvl=Decimal(9))], T0)
    write_vault_list(engine, [summary(1, tvl=Decimal(5))], T0 + HOUR)
    assert (vault(engine, 2)["last_seen"], vault(engine, 2)["delisted_at"]) == (T0, T0 + HOUR)
    assert vaults_for_details(engine, None, None) == [address(1)]
    assert [v["address"] for v in top_vaults(engine)] == [address(1)]

    write_vault_list(engine, [summary(1)], T0 + 2 * HOUR)
    assert vault(engine, 2)["delisted_at"] == T0 + HOUR  # since when, not moved by later snapshots
    assert write_vault_list(engine, [summary(1), summary(2, tvl=Decimal(9))], T0 + 3 * HOUR).updated == 1
    assert (vault(engine, 2)["last_seen"], vault(engine, 2)["delisted_at"]) == (T0 + 3 * HOUR, None)
    assert vaults_for_details(engine, None, None) == [address(1), address(2)]


def test_a_late_older_snapshot_delists_nothing(engine):
    write_vault_list(engine, [summary(1), summary(2)], T0 + HOUR)
    write_vault_list(engine, [summary(1)], T0)
    assert vault(engine, 2)["delisted_at"] is None


def test_each_snapshot_is_recorded_with_its_tvl_counted_once(engine):
    parent = summary(1, tvl=Decimal("300.5"), relationship=Relationship("parent"))
    child = summary(2, tvl=Decimal(200), relationship=Relationship("child"), leader=parent.address)
    write_vault_list(engine, [parent, child, summary(3, tvl=Decimal("0.25"))], T0, skipped=2)
    assert latest_list_snapshot(engine) == {"observed_at": T0, "vaults": 3, "skipped": 2,
                                            "total_tvl": Decimal("300.75")}  # 300.5 + 0.25, not the child's 200


def test_an_older_snapshot_written_late_does_not_move_last_seen_back(engine):
    write_vault_list(engine, [summary(1)], T0 + HOUR)
    write_vault_list(engine, [summary(1)], T0)
    assert (vault(engine, 1)["first_seen"], vault(engine, 1)["last_seen"]) == (T0 + HOUR, T0 + HOUR)


@pytest.mark.parametrize("value", [
    "343339094.6083750129",
    "123456789012345678901234567890.123456789012345678901234567890",
    "-0.000000000000000000000000000001",
    "1.000000",
    "0E-12",
])
def test_decimals_round_trip_exactly(engine, value):
    write_vault_list(engine, [summary(1, tvl=Decimal(value), apr=Decimal(value), pnl={"day": Decimal(value)})], T0)
    [row] = metrics_rows(engine, 1)
    exact = Decimal(value).as_tuple()  # sign, digits and exponent: 1.000000 stays 1.000000
    assert (row["tvl"].as_tuple(), row["apr"].as_tuple(), row["pnl_day"].as_tuple()) == (exact,) * 3


def test_same_list_snapshot_twice_leaves_identical_tables(engine):
    snapshot = [summary(1), summary(2, relationship=Relationship("parent")),
                summary(3, relationship=Relationship("child"), leader=address(2))]
    write_vault_list(engine, snapshot, T0)
    before = dump(engine)
    assert write_vault_list(engine, snapshot, T0) == WriteCounts(unchanged=3)
    assert dump(engine) == before


@pytest.mark.parametrize("stage", ["staged", "vaults", "vault_metrics", "list_snapshots"])
def test_a_list_snapshot_failing_midway_leaves_no_trace(engine, stage):
    write_vault_list(engine, [summary(1), summary(2)], T0)
    before = dump(engine)
    with pytest.raises(Boom):
        write_vault_list(engine, [summary(1, name="New name"), summary(3)], T0 + HOUR, _after_stage=fail_at(stage))
    assert dump(engine) == before


def test_a_vault_twice_in_one_snapshot_is_refused_and_nothing_lands(engine):
    with pytest.raises(ValueError, match=address(1)):
        write_vault_list(engine, [summary(1), summary(2), summary(1)], T0)
    assert dump(engine) == {t: [] for t in metadata.tables}


@pytest.mark.parametrize("value", ["1e131071", "1e131072", "1e-16383", "1e-16384", "-9.5e131070", "-9.5e131071",
                                   "0E+200000", "0E-16384"])
def test_fits_numeric_agrees_with_a_real_copy(database_url, value):
    """hyperliquid.models refuses exactly what PostgreSQL's COPY into a numeric column refuses."""
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TEMP TABLE t (v numeric)")
        try:
            with conn.cursor() as cur, cur.copy("COPY t FROM STDIN") as copy:
                copy.write_row((Decimal(value),))
            landed = conn.execute("SELECT v FROM t").fetchone()[0] == Decimal(value)
        except psycopg.errors.NumericValueOutOfRange:
            landed = False
    assert landed == fits_numeric(Decimal(value))


def test_naive_observed_at_is_refused(engine):
    with pytest.raises(ValueError, match="time zone"):
        write_vault_list(engine, [summary(1)], T0.replace(tzinfo=None))


def test_child_gets_its_leader_as_parent_when_the_leader_is_a_parent_vault(engine):
    parent = summary(1, relationship=Relationship("parent"))
    child = summary(2, relationship=Relationship("child"), leader=parent.address)
    orphan = summary(3, relationship=Relationship("child"), leader=address(99))  # leader is no vault
    normal = summary(4, leader=parent.address)  # led by a parent, but not a child
    write_vault_list(engine, [parent, child, orphan, normal], T0)
    assert vault(engine, 2)["parent_address"] == parent.address
    assert vault(engine, 3)["parent_address"] is None
    assert vault(engine, 4)["parent_address"] is None

    # the parent stored by an earlier snapshot is enough
    later_child = summary(5, relationship=Relationship("child"), leader=parent.address)
    write_vault_list(engine, [later_child], T0 + HOUR)
    assert vault(engine, 5)["parent_address"] == parent.address


def test_storage_error_names_the_fix_when_tables_are_missing(database_url):
    engine = make_engine(database_url)  # not migrated
    try:
        with pytest.raises(StorageError, match="vault-ingest db upgrade"):
            write_vault_list(engine, [summary(1)], T0)
        with pytest.raises(StorageError, match="vault-ingest db upgrade"):
            write_vault_details(engine, [details(1)], [], T0)
        with pytest.raises(StorageError, match="vault-ingest db upgrade"):
            vaults_for_details(engine, None, None)
    finally:
        engine.dispose()


def test_snapshot_writes_take_turns(engine, database_url):
    """A list write waits while another snapshot write holds the lock, then lands."""
    result: list[WriteCounts] = []
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK_KEY,))
        writer = threading.Thread(target=lambda: result.append(write_vault_list(engine, [summary(1)], T0)))
        writer.start()
        wait_until_queued(other)
        assert other.execute("SELECT count(*) FROM vaults").fetchone()[0] == 0
        other.execute("SELECT pg_advisory_unlock(%s)", (WRITE_LOCK_KEY,))
        writer.join()
    assert result == [WriteCounts(new=1)]


# --- vaultDetails -----------------------------------------------------------------------------


def test_details_land_metrics_at_the_data_time_and_the_history_series(engine):
    write_vault_list(engine, [summary(1)], T0 - HOUR)
    day = window(T0 + HOUR, ["100", "110", "104.5"], ["0.0", "10", "4.5"], volume="77")
    d = details(1, portfolio={**portfolio(), "day": day, "perpDay": day,
                              "someFuturePeriodName": window(T0, ["1"], ["0"])})
    assert write_vault_details(engine, [d], [], T0 + 5 * HOUR) == WriteCounts(new=1)

    detail_row = metrics_rows(engine, 1)[-1]
    assert detail_row["observed_at"] == T0 + HOUR  # the last day point, not the write time
    assert (detail_row["max_distributable"], detail_row["max_withdrawable"]) == (Decimal("1234.5"), Decimal("1000.25"))
    assert (detail_row["leader_fraction"], detail_row["followers_listed"]) == (Decimal("0.05"), 42)
    assert detail_row["tvl"] is None
    for key, suffix in [("day", "day"), ("week", "week"), ("month", "month"), ("allTime", "all_time")]:
        expected = window_metrics(d.portfolio[key])
        assert detail_row[f"volume_{suffix}"] == expected.volume
        assert detail_row[f"pnl_{suffix}"] == expected.pnl == Decimal("4.5")
        assert detail_row[f"return_{suffix}"] == expected.return_
        assert detail_row[f"max_drawdown_{suffix}"] == expected.max_drawdown
    assert detail_row["volume_day"] == Decimal(77)

    with engine.connect() as conn:
        history = conn.execute(select(vault_history).order_by(vault_history.c.ts)).all()
    # Every perp window repeats its twin: one series. The day window shares no timestamp with the all-time
    # one, so nothing ties its PnL to the origin: it is left out (and logged). The all-time "now" is flagged.
    assert {h.series for h in history} == {"all"}
    assert [(h.ts, h.account_value, h.pnl, h.is_now) for h in history] == [
        (T0 - 4 * HOUR, Decimal(100), Decimal("0.0"), False),
        (T0 - 2 * HOUR, Decimal(110), Decimal(10), False),
        (T0, Decimal("104.5"), Decimal("4.5"), True),
    ]


def test_details_without_a_day_window_use_the_given_time(engine):
    write_vault_list(engine, [summary(1)], T0)
    write_vault_details(engine, [details(1, portfolio={})], [], T0 + 2 * HOUR)
    assert [m["observed_at"] for m in metrics_rows(engine, 1)] == [T0, T0 + 2 * HOUR]


def test_details_update_vault_attributes_and_the_list_keeps_them(engine):
    write_vault_list(engine, [summary(1), summary(2)], T0)
    write_vault_details(engine, [details(1, description="Delta neutral", allow_deposits=False,
                                         leader_commission=Decimal("0.1"), is_closed=True,
                                         relationship=Relationship("parent"))], [], T0)
    # the list disagrees: vaultDetails wins is_closed and relationship once it has answered, every time
    for hour in (1, 2):
        write_vault_list(engine, [summary(1, is_closed=False), summary(2, is_closed=True)], T0 + hour * HOUR)
        v = vault(engine, 1)
        assert (v["description"], v["allow_deposits"], v["leader_commission"]) == ("Delta neutral", False, Decimal("0.1"))
        assert (v["is_closed"], v["relationship"], v["details_at"]) == (True, "parent", T0)
    assert vault(engine, 2)["is_closed"] is True  # no details yet: the list's


def test_details_counts_are_about_metric_rows(engine):
    write_vault_list(engine, [summary(1), summary(2), summary(3)], T0 - HOUR)
    first = [details(1), details(2), details(3)]
    assert write_vault_details(engine, first, [], T0) == WriteCounts(new=3)
    refetched = [details(1), details(2, max_withdrawable=Decimal(1)), details(3, portfolio=portfolio(T0 + HOUR))]
    assert write_vault_details(engine, refetched, [], T0) == WriteCounts(new=1, updated=1, unchanged=1)


def test_same_details_snapshot_twice_leaves_identical_tables(engine):
    write_vault_list(engine, [summary(1), summary(2, relationship=Relationship("parent")), summary(3)], T0)
    snapshot = [details(1), details(2, relationship=Relationship("parent", (address(3),)))]
    write_vault_details(engine, snapshot, [address(3)], T0)
    before = dump(engine)
    assert write_vault_details(engine, snapshot, [address(3)], T0) == WriteCounts(unchanged=2)
    assert dump(engine) == before


@pytest.mark.parametrize("stage", ["staged", "vaults", "vault_metrics", "vault_history"])
def test_a_details_snapshot_failing_midway_leaves_no_trace(engine, stage):
    write_vault_list(engine, [summary(1), summary(2)], T0)
    write_vault_details(engine, [details(1)], [], T0)
    before = dump(engine)
    with pytest.raises(Boom):
        write_vault_details(engine, [details(1, description="changed", portfolio=portfolio(T0 + HOUR)), details(2)],
                            [address(1)], T0 + HOUR, _after_stage=fail_at(stage))
    assert dump(engine) == before


def test_not_found_is_recorded_once_and_cleared_by_details(engine):
    write_vault_list(engine, [summary(1), summary(2)], T0)
    write_vault_details(engine, [], [address(1), address(99)], T0)  # 99 is unknown: ignored
    write_vault_details(engine, [], [address(1)], T0 + HOUR)
    assert (vault(engine, 1)["not_found_at"], vault(engine, 1)["not_found_checked_at"]) == (T0, T0 + HOUR)
    assert vault(engine, 2)["not_found_at"] is None
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM vaults")).scalar() == 2

    write_vault_details(engine, [details(1)], [], T0 + 2 * HOUR)
    assert (vault(engine, 1)["not_found_at"], vault(engine, 1)["not_found_checked_at"]) == (None, None)


def test_a_not_found_vault_is_asked_again_when_a_newer_list_still_shows_it(engine):
    write_vault_list(engine, [summary(1), summary(2)], T0)
    write_vault_details(engine, [], [address(1)], T0 + HOUR)
    assert vaults_for_details(engine, None, None) == [address(2)]  # not again for the same list
    write_vault_list(engine, [summary(1), summary(2)], T0 + 2 * HOUR)
    assert vaults_for_details(engine, None, None) == [address(2), address(1)]
    assert [v["address"] for v in top_vaults(engine)] == [address(2)]  # until it answers


def test_parent_details_set_stored_childrens_parent(engine):
    write_vault_list(engine, [summary(1, relationship=Relationship("parent")),
                              summary(2, relationship=Relationship("child")), summary(3)], T0)
    parent = details(1, relationship=Relationship("parent", (address(2), address(50))))  # 50 is not stored
    write_vault_details(engine, [parent], [], T0)
    assert vault(engine, 2)["parent_address"] == address(1)
    assert vault(engine, 3)["parent_address"] is None

    write_vault_list(engine, [summary(2, relationship=Relationship("child"))], T0 + HOUR)
    assert vault(engine, 2)["parent_address"] == address(1)  # the list cannot tell, so it keeps it


def test_details_of_a_vault_not_yet_listed_are_skipped(engine):
    write_vault_list(engine, [summary(1)], T0 - HOUR)
    assert write_vault_details(engine, [details(1), details(2)], [], T0) == WriteCounts(new=1)
    with engine.connect() as conn:
        stored = conn.execute(select(vault_history.c.vault_address).distinct()).scalars().all()
    assert stored == [address(1)]


# --- reads ------------------------------------------------------------------------------------


def test_vaults_for_details_orders_by_latest_tvl_filters_and_caps(engine):
    write_vault_list(engine, [summary(1, tvl=Decimal(900)), summary(2, tvl=Decimal(10)), summary(3, tvl=Decimal(50)),
                              summary(4, tvl=Decimal(70)), summary(5, tvl=Decimal(80))], T0)
    write_vault_list(engine, [summary(1, tvl=Decimal(5)),  # its latest tvl is what counts
                              summary(2, tvl=Decimal(100)), summary(3, tvl=Decimal(50)),
                              summary(4, tvl=Decimal(1000), is_closed=True), summary(5, tvl=Decimal(60))], T0 + HOUR)
    write_vault_details(engine, [details(2, portfolio=portfolio(T0 + 2 * HOUR))], [address(5)], T0 + 2 * HOUR)

    assert vaults_for_details(engine, None, None) == [address(2), address(3), address(1)]
    assert vaults_for_details(engine, Decimal(50), None) == [address(2), address(3)]
    assert vaults_for_details(engine, None, 2) == [address(2), address(3)]
    assert vaults_for_details(engine, Decimal(1000), 5) == []


def test_top_vaults_lists_the_biggest_open_vaults(engine):
    write_vault_list(engine, [summary(1, tvl=Decimal(10)), summary(2, tvl=Decimal("2000.25"), apr=Decimal("-0.5")),
                              summary(3, tvl=Decimal(300)), summary(4, tvl=Decimal(10**9), is_closed=True)], T0)
    assert top_vaults(engine, 2) == [
        {"name": "Vault 2", "address": address(2), "tvl": Decimal("2000.25"), "apr": Decimal("-0.5"), "children": 0},
        {"name": "Vault 3", "address": address(3), "tvl": Decimal(300), "apr": Decimal("0.12"), "children": 0},
    ]


def test_top_vaults_count_a_childs_dollars_once_in_its_parent(engine):
    parent = summary(1, tvl=Decimal(300), relationship=Relationship("parent"))
    child = summary(2, tvl=Decimal(200), relationship=Relationship("child"), leader=parent.address)
    write_vault_list(engine, [parent, child, summary(3, tvl=Decimal(100))], T0)
    assert [(v["address"], v["children"]) for v in top_vaults(engine)] == [(address(1), 1), (address(3), 0)]
