"""Migrations against a real PostgreSQL: they build exactly schema.py, once, even when raced."""

from __future__ import annotations

import multiprocessing
import threading
from decimal import Decimal

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from tests.db.advisory import wait_until_queued
from vault_ingest.db.engine import make_engine
from vault_ingest.db.migrate import LOCK_KEY, MIGRATIONS, alembic_config, upgrade
from vault_ingest.db.schema import metadata
from vault_ingest.errors import StorageError

HEAD = ScriptDirectory.from_config(alembic_config(None)).get_current_head()


def schema_diffs(database_url: str) -> list:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def table_names(database_url: str) -> set[str]:
    engine = make_engine(database_url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_ship_inside_the_package():
    assert (MIGRATIONS / "env.py").is_file() and (MIGRATIONS / "script.py.mako").is_file()
    assert HEAD == "0006"


def test_upgrade_from_empty_creates_exactly_the_schema(database_url):
    assert upgrade(database_url) == HEAD
    assert schema_diffs(database_url) == []
    assert table_names(database_url) == set(metadata.tables) | {"alembic_version"}


def test_second_upgrade_is_a_no_op_and_keeps_data(database_url):
    upgrade(database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO vaults (address, name, leader, created_at, is_closed, relationship, first_seen) "
            "VALUES ('0xa', 'kept', '0xb', now(), false, 'normal', now())"
        )
    assert upgrade(database_url) == HEAD
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT name FROM vaults").fetchall() == [("kept",)]
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]


def _upgrade_together(barrier, database_url: str, results) -> None:
    barrier.wait()
    try:
        results.put(upgrade(database_url))
    except Exception as exc:  # the parent's assert shows it
        results.put(repr(exc))


def test_concurrent_upgrades_from_two_processes_both_succeed(database_url):
    # Processes, as on Railway (a deploy and a worker), not threads: Alembic's context is per process.
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_upgrade_together, args=(barrier, database_url, results)) for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    assert outcomes == [HEAD, HEAD]
    assert schema_diffs(database_url) == []


def test_upgrade_waits_while_another_process_holds_the_migration_lock(database_url):
    """What makes racing upgrades safe: nothing is created until the lock is free."""
    result: list[object] = []
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        worker = threading.Thread(target=lambda: result.append(upgrade(database_url)))
        worker.start()
        wait_until_queued(holder)
        assert table_names(database_url) == set()
        holder.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        worker.join()
    assert result == [HEAD]
    assert schema_diffs(database_url) == []


def test_unreachable_database_is_a_storage_error_naming_the_fix():
    with pytest.raises(StorageError, match="DATABASE_URL"):
        upgrade("postgresql://nobody:wrong@127.0.0.1:1/nowhere")


def test_upgrade_from_0001_with_rows_keeps_what_they_mean(database_url):
    """History: all-time rows keep their PnL (since inception), finer windows their account value, perp twins
    go. Listing: one list_snapshots row per stored snapshot; a vault the newest one lacks is delisted."""
    upgrade(database_url, "0001")
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO vaults (address, name, leader, created_at, is_closed, relationship, first_seen, last_seen) "
            "VALUES ('0xa', 'gone', '0xb', now(), false, 'normal', '2025-01-01', '2025-01-01'),"
            "       ('0xc', 'kept', '0xb', now(), false, 'child', '2025-01-01', '2025-01-03')")
        conn.execute("""
            INSERT INTO vault_history (vault_address, period, ts, account_value, pnl) VALUES
            ('0xa', 'allTime', '2025-01-01', 100, 7), ('0xa', 'day', '2025-01-01', 100, -3),
            ('0xa', 'day', '2025-01-02', 110, -1), ('0xa', 'perpDay', '2025-01-02', 110, -1),
            ('0xa', 'perpAllTime', '2025-01-01', 100, 9)""")
        conn.execute("INSERT INTO vault_metrics (vault_address, observed_at, tvl) VALUES "
                     "('0xa', '2025-01-01', 5), ('0xc', '2025-01-01', 2), ('0xc', '2025-01-02', 3), "
                     "('0xc', '2025-01-03', 3)")
        conn.execute("INSERT INTO vault_metrics (vault_address, observed_at, max_distributable, followers_listed) "
                     "VALUES ('0xc', '2025-01-02 10:00', 9, 4)")
    assert upgrade(database_url) == HEAD
    assert schema_diffs(database_url) == []
    with psycopg.connect(database_url) as conn:
        history = conn.execute("SELECT series, ts::date::text, account_value::text, pnl::text, is_now "
                               "FROM vault_history ORDER BY 1, 2").fetchall()
        snapshots = conn.execute("SELECT observed_at::date::text, vaults, total_tvl::text FROM list_snapshots "
                                 "ORDER BY 1").fetchall()
        delisted = conn.execute("SELECT address, delisted_at::date::text FROM vaults ORDER BY 1").fetchall()
        listed = conn.execute("SELECT vault_address, valid_from::date::text, valid_to::date::text, tvl::text "
                              "FROM vault_list_values ORDER BY 1, 2").fetchall()
        detailed = conn.execute("SELECT vault_address, snapshot_at::date::text, max_distributable::text, "
                                "followers_listed, valid_to FROM vault_detail_values").fetchall()
        latest = conn.execute("SELECT address, tvl::text, max_distributable::text FROM vault_latest ORDER BY 1").fetchall()
        at = conn.execute("SELECT vault_address, tvl::text FROM vaults_at('2025-01-01 12:00+00') ORDER BY 1").fetchall()
        tvl = conn.execute("SELECT observed_at::date::text, total_tvl::text FROM tvl_over_time ORDER BY 1").fetchall()
    assert history == [("all", "2025-01-01", "100", "7", False), ("all", "2025-01-02", "110", None, False),
                       ("perp", "2025-01-01", "100", "9", False)]
    assert snapshots == [("2025-01-01", 2, "5"), ("2025-01-02", 1, "0"), ("2025-01-03", 1, "0")]  # the child's
    assert delisted == [("0xa", "2025-01-02"), ("0xc", None)]                                  # are its parent's
    # vault_metrics: consecutive equal list rows became one, valid until the change or the delisting
    assert listed == [("0xa", "2025-01-01", "2025-01-02", "5"), ("0xc", "2025-01-01", "2025-01-02", "2"),
                      ("0xc", "2025-01-02", None, "3")]
    assert detailed == [("0xc", "2025-01-02", "9", 4, None)]
    assert latest == [("0xa", None, None), ("0xc", "3", "9")]
    assert at == [("0xa", "5"), ("0xc", "2")]
    assert tvl == [(day, total) for day, _, total in snapshots]


def test_upgrade_from_0004_with_rows_keeps_when_each_vault_was_last_listed(database_url):
    """0005: last_seen becomes seen_until, NULL while listed; vault_latest.list_confirmed_at reads the same."""
    upgrade(database_url, "0004")
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO list_snapshots VALUES ('2025-01-01', 2, 0, 7), ('2025-01-02', 1, 0, 3)")
        conn.execute(
            "INSERT INTO vaults (address, name, leader, created_at, is_closed, relationship, first_seen, last_seen,"
            " delisted_at) VALUES ('0xa', 'gone', '0xb', now(), false, 'normal', '2025-01-01', '2025-01-01',"
            " '2025-01-02'), ('0xc', 'listed', '0xb', now(), false, 'normal', '2025-01-01', '2025-01-02', NULL)")
        before = conn.execute("SELECT address, list_confirmed_at FROM vault_latest ORDER BY 1").fetchall()
    assert upgrade(database_url) == HEAD
    assert schema_diffs(database_url) == []
    with psycopg.connect(database_url) as conn:
        seen = conn.execute("SELECT address, name, seen_until::date::text FROM vaults ORDER BY 1").fetchall()
        after = conn.execute("SELECT address, list_confirmed_at FROM vault_latest ORDER BY 1").fetchall()
    assert seen == [("0xa", "gone", "2025-01-01"), ("0xc", "listed", None)]
    assert after == before and [d.date().isoformat() for _, d in after] == ["2025-01-01", "2025-01-02"]


def test_0005_downgrades_to_last_seen_with_the_newest_snapshot_for_listed_vaults(database_url):
    from alembic import command

    upgrade(database_url)
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO list_snapshots VALUES ('2025-01-01', 2, 0, 7), ('2025-01-02', 1, 0, 3)")
        conn.execute(
            "INSERT INTO vaults (address, name, leader, created_at, is_closed, relationship, first_seen, seen_until,"
            " delisted_at) VALUES ('0xa', 'gone', '0xb', now(), false, 'normal', '2025-01-01', '2025-01-01',"
            " '2025-01-02'), ('0xc', 'listed', '0xb', now(), false, 'normal', '2025-01-01', NULL, NULL)")
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0004")
    finally:
        engine.dispose()
    with psycopg.connect(database_url) as conn:
        seen = conn.execute("SELECT address, last_seen::date::text FROM vaults ORDER BY 1").fetchall()
        confirmed = conn.execute("SELECT list_confirmed_at::date::text FROM vault_latest ORDER BY address").fetchall()
    assert seen == [("0xa", "2025-01-01"), ("0xc", "2025-01-02")] and confirmed == [("2025-01-01",), ("2025-01-02",)]
    assert upgrade(database_url) == HEAD


def test_upgrade_from_0005_with_rows_sums_the_next_snapshot_in_full(database_url):
    """0006: existing snapshots keep their totals and get no listed TVL; the next list write sums every current row
    (it cannot build on a total it lacks) and stores the listed TVL the one after builds on."""
    from tests.db.factories import HOUR, T0, address, summary
    from vault_ingest.db.writer import write_vault_list
    from vault_ingest.hyperliquid.models import Relationship

    upgrade(database_url, "0005")
    with psycopg.connect(database_url) as conn:
        for n, relationship, tvl in ((1, "parent", "300.5"), (2, "child", "200"), (3, "normal", "0.25")):
            conn.execute("INSERT INTO vaults (address, name, leader, created_at, is_closed, relationship, first_seen) "
                         "VALUES (%s, 'v', %s, now(), false, %s, %s)", (address(n), address(1), relationship, T0))
            conn.execute("INSERT INTO vault_list_values (vault_address, valid_from, tvl) VALUES (%s, %s, %s)",
                         (address(n), T0, Decimal(tvl)))
        conn.execute("INSERT INTO list_snapshots VALUES (%s, 3, 0, 300.75)", (T0,))
    assert upgrade(database_url) == HEAD
    assert schema_diffs(database_url) == []
    parent = summary(1, tvl=Decimal("300.5"), relationship=Relationship("parent"))
    child = summary(2, tvl=Decimal(200), relationship=Relationship("child"), leader=parent.address)
    engine = make_engine(database_url)
    try:
        write_vault_list(engine, [parent, child, summary(3, tvl=Decimal("7.125"))], T0 + HOUR)
        write_vault_list(engine, [parent, child], T0 + 2 * HOUR)
    finally:
        engine.dispose()
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT total_tvl, listed_tvl FROM list_snapshots ORDER BY observed_at").fetchall()
    # equal in value (the sums built on a stored one keep the largest scale they added: 500.500)
    assert rows == [(Decimal("300.75"), None), (Decimal("307.625"), Decimal("507.625")),
                    (Decimal("300.5"), Decimal("500.5"))]
