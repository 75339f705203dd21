"""The list writer against a real PostgreSQL: counts, values stored once, delisting, exact decimals, atomicity."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal, localcontext
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from tests.db.advisory import wait_until_queued
from tests.db.factories import HOUR, T0, address, details, summary
from tests.db.support import Boom, confirmed, dump, fail_at, list_rows, vault
from vault_ingest.db.engine import make_engine
from vault_ingest.db.reads import latest_list_snapshot, stored_list_digests, top_vaults, vaults_for_details
from vault_ingest.db.schema import metadata
from vault_ingest.db.staging import WRITE_LOCK_KEY, WriteCounts
from vault_ingest.db.writer import write_vault_details, write_vault_list
from vault_ingest.errors import DataQualityError, StaleListError, StorageError
from vault_ingest.hyperliquid.models import NUMERIC_INTEGER_DIGITS, SUM_HEADROOM_DIGITS, Relationship, fits_numeric
from vault_ingest.hyperliquid.vault_list import parse_changed_vaults, parse_vault_list


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
    assert (vault(engine, 1)["first_seen"], confirmed(engine, 1)) == (T0, T0 + HOUR)
    assert (vault(engine, 4)["first_seen"], confirmed(engine, 4)) == (T0 + HOUR, T0 + HOUR)
    assert [m["tvl"] for m in list_rows(engine, 1)] == [Decimal("1000.5"), Decimal("5")]


def test_list_values_land_with_the_snapshot(engine):
    pnls = '[["day",["0.0","1.5"]],["allTime",["0.0","7"]]]'
    write_vault_list(engine, [summary(1, pnl={"day": Decimal("1.5"), "allTime": Decimal(7)}, pnls_json=pnls)], T0)
    [row] = list_rows(engine, 1)
    assert (row["valid_from"], row["valid_to"]) == (T0, None)
    assert (row["tvl"], row["apr"]) == (Decimal("1000.5"), Decimal("0.12"))
    assert (row["pnl_day"], row["pnl_week"], row["pnl_month"], row["pnl_all_time"]) == (
        Decimal("1.5"), None, None, Decimal(7))
    assert row["pnls"] == [["day", ["0.0", "1.5"]], ["allTime", ["0.0", "7"]]]  # strings: exact


def test_unchanged_values_are_stored_once_and_confirmed_by_each_snapshot(engine):
    for hour in range(3):
        write_vault_list(engine, [summary(1), summary(2)], T0 + hour * HOUR)
    write_vault_list(engine, [summary(1, tvl=Decimal(7)), summary(2)], T0 + 3 * HOUR)
    assert [(r["valid_from"], r["valid_to"], r["tvl"]) for r in list_rows(engine, 1)] == [
        (T0, T0 + 3 * HOUR, Decimal("1000.5")), (T0 + 3 * HOUR, None, Decimal(7))]
    assert [(r["valid_from"], r["valid_to"]) for r in list_rows(engine, 2)] == [(T0, None)]
    assert confirmed(engine, 2) == T0 + 3 * HOUR  # when its current values were last confirmed


def test_a_vault_missing_from_a_later_list_is_delisted_until_it_comes_back(engine):
    write_vault_list(engine, [summary(1, tvl=Decimal(5)), summary(2, tvl=Decimal(9))], T0)
    write_vault_list(engine, [summary(1, tvl=Decimal(5))], T0 + HOUR)
    assert (vault(engine, 2)["seen_until"], confirmed(engine, 2), vault(engine, 2)["delisted_at"]) == (
        T0, T0, T0 + HOUR)
    assert vaults_for_details(engine, None, None) == [address(1)]
    assert [v["address"] for v in top_vaults(engine)] == [address(1)]

    write_vault_list(engine, [summary(1)], T0 + 2 * HOUR)
    assert vault(engine, 2)["delisted_at"] == T0 + HOUR  # since when, not moved by later snapshots
    assert [(r["valid_from"], r["valid_to"]) for r in list_rows(engine, 2)] == [(T0, T0 + HOUR)]
    assert write_vault_list(engine, [summary(1), summary(2, tvl=Decimal(9))], T0 + 3 * HOUR).updated == 1
    assert (vault(engine, 2)["seen_until"], confirmed(engine, 2), vault(engine, 2)["delisted_at"]) == (
        None, T0 + 3 * HOUR, None)
    assert [(r["valid_from"], r["valid_to"]) for r in list_rows(engine, 2)] == [(T0, T0 + HOUR), (T0 + 3 * HOUR, None)]
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


def test_an_older_snapshot_written_late_does_not_move_the_last_sighting_back(engine):
    write_vault_list(engine, [summary(1)], T0 + HOUR)
    write_vault_list(engine, [summary(1, tvl=Decimal(3))], T0)
    assert (vault(engine, 1)["first_seen"], confirmed(engine, 1)) == (T0 + HOUR, T0 + HOUR)
    assert [(r["valid_from"], r["tvl"]) for r in list_rows(engine, 1)] == [(T0 + HOUR, Decimal("1000.5"))]


@pytest.mark.parametrize("value", [
    "343339094.6083750129",
    "123456789012345678901234567890.123456789012345678901234567890",
    "-0.000000000000000000000000000001",
    "1.000000",
    "0E-12",
])
def test_decimals_round_trip_exactly(engine, value):
    write_vault_list(engine, [summary(1, tvl=Decimal(value), apr=Decimal(value), pnl={"day": Decimal(value)})], T0)
    [row] = list_rows(engine, 1)
    exact = Decimal(value).as_tuple()  # sign, digits and exponent: 1.000000 stays 1.000000
    assert (row["tvl"].as_tuple(), row["apr"].as_tuple(), row["pnl_day"].as_tuple()) == (exact,) * 3


# Real-shaped (the list's decimal strings) and at numeric's limits: more digits than psycopg's binary dumper counts
# in 16 bits (65,535), both ends of the range, exponents, negative zero. NaN and infinities are refused by the parse.
EXTREMES = [
    "343339094.6083750129", "-0", "-0.000000", "0E-16383", "1E+5", "-1.5E-7", "1e131071", "-1e-16383",
    "9" * 131072, "-" + "7" * 131072 + "." + "3" * 16383, "0." + "0" * 16382 + "1", "1" + "0" * 70000,
]


@pytest.mark.parametrize("value", EXTREMES, ids=lambda v: v if len(v) < 24 else f"{v[:12]}..({len(v)} chars)")
def test_decimals_land_as_postgresql_reads_their_text(engine, database_url, value):
    """Each decimal lands as PostgreSQL's own parse of its text: on the first load (a text COPY) and through the
    staged upsert (a binary COPY)."""
    with psycopg.connect(database_url) as conn:
        expected = conn.execute("SELECT %s::text::numeric", (value,)).fetchone()[0].as_tuple()
    pnls = r'[["day",["0.0","\u00e9\\\"x"]],["week",["1"]]]'  # escapes and non-ASCII in the jsonb text
    first = [summary(1, tvl=Decimal(value), apr=Decimal(value), pnl={"day": Decimal(value)}, pnls_json=pnls)]
    write_vault_list(engine, first, T0)  # empty tables: COPYed straight in
    # (not as a TVL beside another: the writer stores what the parse gives, and the parse leaves room for totals)
    write_vault_list(engine, [summary(1), summary(2, apr=Decimal(value), pnl={"week": Decimal(value)})], T0 + HOUR)
    [row, _] = list_rows(engine, 1)
    [staged] = list_rows(engine, 2)
    assert [r.as_tuple() for r in (row["tvl"], row["apr"], row["pnl_day"], staged["apr"], staged["pnl_week"])] == (
        [expected] * 5)
    assert row["pnls"] == [["day", ["0.0", 'é\\"x']], ["week", ["1"]]]


def test_same_list_snapshot_twice_leaves_identical_tables(engine):
    snapshot = [summary(1), summary(2, relationship=Relationship("parent")),
                summary(3, relationship=Relationship("child"), leader=address(2))]
    write_vault_list(engine, snapshot, T0)
    before = dump(engine)
    assert write_vault_list(engine, snapshot, T0) == WriteCounts(unchanged=3)
    assert dump(engine) == before


@pytest.mark.parametrize("stage", ["staged", "vaults", "vault_list_values", "list_snapshots"])
def test_a_list_snapshot_failing_midway_leaves_no_trace(engine, stage):
    write_vault_list(engine, [summary(1), summary(2)], T0)
    before = dump(engine)
    with pytest.raises(Boom):
        write_vault_list(engine, [summary(1, name="New name"), summary(3)], T0 + HOUR, _after_stage=fail_at(stage))
    assert dump(engine) == before


@pytest.mark.parametrize("stage", ["staged", "vaults", "vault_list_values", "list_snapshots"])
def test_a_first_snapshot_failing_midway_leaves_empty_tables_as_migrated(engine, database_url, stage):
    """The first load drops the values' foreign key and adds it after its COPY: a failure keeps it as it was."""
    from tests.db.test_migrate import schema_diffs

    with pytest.raises(Boom):
        write_vault_list(engine, [summary(1), summary(2)], T0, _after_stage=fail_at(stage))
    assert dump(engine) == {t: [] for t in metadata.tables}
    assert schema_diffs(database_url) == []


def test_a_first_snapshot_leaves_the_schema_as_migrated(engine, database_url):
    from tests.db.test_migrate import schema_diffs

    write_vault_list(engine, [summary(1), summary(2)], T0)
    assert schema_diffs(database_url) == []  # the foreign key added after the COPY is the migrated one


def test_a_first_snapshot_is_copied_while_it_is_parsed(engine, database_url):
    """The server stores the first vaults while the rest are still to come (what overlaps the parse with the COPY):
    midway through the vaults (the writer takes them a batch at a time), another session sees the COPY into
    vault_list_values holding rows."""
    from vault_ingest.db.writer import _BATCH

    seen_midway = []

    def parsed():
        for n in range(1, 3 * _BATCH + 1):
            if n == 5 * _BATCH // 2:
                seen_midway.append(_copied_so_far(database_url))
            yield summary(n)

    assert write_vault_list(engine, parsed(), T0).new == 3 * _BATCH
    assert seen_midway[0] > 0


_KILLED_MIDWAY = """
import sys, time
from tests.db.factories import T0, summary
from vault_ingest.db.engine import make_engine
from vault_ingest.db.writer import _BATCH, write_vault_list

def parsed():  # a parse that stalls midway, its first vaults already COPYed
    for n in range(1, 3 * _BATCH + 1):
        if n == 5 * _BATCH // 2:
            time.sleep(600)
        yield summary(n)

write_vault_list(make_engine(sys.argv[1]), parsed(), T0)
"""


def test_a_first_snapshot_killed_midway_leaves_empty_tables_as_migrated(engine, database_url):
    """The process dies (SIGKILL) while its first load is COPYing, the values' foreign key dropped: PostgreSQL rolls
    the transaction back, its DDL with it, and the next first load lands."""
    from tests.db.test_migrate import schema_diffs

    child = subprocess.Popen([sys.executable, "-c", _KILLED_MIDWAY, database_url], start_new_session=True,
                             cwd=Path(__file__).resolve().parents[2])
    try:
        assert _copied_so_far(database_url) > 0, "the child never started its COPY"
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert dump(engine) == {t: [] for t in metadata.tables}  # waits for the backend to end the dead transaction
    assert schema_diffs(database_url) == []
    assert write_vault_list(engine, [summary(1), summary(2)], T0).new == 2
    assert schema_diffs(database_url) == []


def _copied_so_far(database_url, deadline_s: float = 20.0) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            row = conn.execute("SELECT tuples_processed FROM pg_stat_progress_copy "
                               "WHERE relid = 'vault_list_values'::regclass").fetchone()
            if row and row[0] > 0:
                return row[0]
            time.sleep(0.05)
    return 0


def test_a_first_snapshot_refused_once_parsed_leaves_empty_tables_as_migrated(engine, database_url):
    """The bad-entries rule runs after the parse, inside the transaction (`skipped` as a callable): refusing there
    rolls the whole load back, its foreign key and indexes too."""
    from tests.db.test_migrate import schema_diffs

    def refuse() -> int:
        raise DataQualityError("vault list not written: too many bad entries")

    with pytest.raises(DataQualityError):
        write_vault_list(engine, iter([summary(1), summary(2)]), T0, skipped=refuse)
    assert dump(engine) == {t: [] for t in metadata.tables}
    assert schema_diffs(database_url) == []


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
    assert landed == fits_numeric(Decimal(value), headroom=0)


def test_vaults_at_the_largest_tvl_the_parse_accepts_still_have_a_snapshot_total(engine):
    """The parse leaves room for totals (fits_numeric's headroom): two such TVLs sum without overflowing numeric,
    where two at the column's own limit would fail the whole snapshot at its total."""
    largest = Decimal("9" * (NUMERIC_INTEGER_DIGITS - SUM_HEADROOM_DIGITS))
    assert fits_numeric(largest) and not fits_numeric(largest * 10)
    write_vault_list(engine, [summary(1, tvl=largest), summary(2, tvl=largest)], T0)
    with engine.connect() as conn:
        total = conn.exec_driver_sql("SELECT total_tvl FROM list_snapshots").scalar_one()
    with localcontext(prec=NUMERIC_INTEGER_DIGITS):  # Python's own default precision is 28 digits
        assert total == 2 * largest


@pytest.mark.parametrize("column, value, refusal", [
    ("text", "Snipe\x00Trading", "cannot contain NUL"),  # psycopg refuses it before the server can
    ("jsonb", '[["day", ["0.0\\u0000"]]]', "unsupported Unicode escape sequence"),
])
def test_a_real_copy_refuses_nul_in_text_and_jsonb(database_url, column, value, refusal):
    """Why hyperliquid.models refuses a NUL character (NulCharacterError): one such row fails a whole COPY."""
    with psycopg.connect(database_url) as conn:
        conn.execute(f"CREATE TEMP TABLE t (v {column})")
        with pytest.raises(psycopg.DataError, match=refusal):
            with conn.cursor() as cur, cur.copy("COPY t FROM STDIN") as copy:
                copy.write_row((value,))


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




def _versions(engine) -> dict[str, str]:
    """Each vault's row version (xmin): a write that updates a row gives it a new one."""
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT address, xmin::text FROM vaults")).all())


def _hours(n: int = 200, changed: float = 0.1):
    from benchmarks.synthetic import body, next_hour, vault_list

    entries = vault_list(n)
    later = next_hour(entries, 1, changed=changed)
    return body(entries), body(later), {e["summary"]["vaultAddress"] for e, f in zip(entries, later) if e != f}


def test_an_hourly_list_stages_only_the_entries_that_changed(engine, monkeypatch):
    """Parsed in full, entries with the same bytes as the stored ones are confirmed without being staged."""
    from vault_ingest.db import writer
    from vault_ingest.hyperliquid.vault_list import parse_vault_list

    first, later, changed = _hours()
    write_vault_list(engine, parse_vault_list(first)[0], T0)
    built = []
    monkeypatch.setattr(writer, "_summary_row", lambda v, d, row=writer._summary_row: built.append(v.address) or row(v, d))
    counts = write_vault_list(engine, parse_vault_list(later)[0], T0 + HOUR)
    with engine.connect() as conn:
        moved = conn.execute(text("SELECT vault_address FROM vault_list_values WHERE valid_from = :at"),
                             {"at": T0 + HOUR}).scalars().all()
        seen = conn.execute(text("SELECT count(*) FROM vault_latest WHERE list_confirmed_at = :at"),
                            {"at": T0 + HOUR}).scalar()
    assert 5 < len(changed) < 40 and set(built) == set(moved) == changed
    assert seen == 200 and counts == WriteCounts(unchanged=200)  # values changed, no vault attribute did


def test_an_hourly_list_parses_and_touches_only_the_vaults_that_changed(engine):
    """The path sync-vaults takes: entries the same as stored are neither parsed nor written; the others are."""
    first, later, changed = _hours()
    write_vault_list(engine, parse_changed_vaults(first, stored_list_digests(engine))[0], T0)
    before = _versions(engine)
    vaults, unchanged, errors = parse_changed_vaults(later, stored_list_digests(engine))
    assert ({v.address for v in vaults}, len(unchanged), errors) == (changed, 200 - len(changed), [])
    assert write_vault_list(engine, vaults, T0 + HOUR, unchanged=unchanged) == WriteCounts(unchanged=200)
    after = _versions(engine)
    assert {a for a in after if after[a] != before[a]} == changed
    with engine.connect() as conn:
        moved = conn.execute(text("SELECT vault_address FROM vault_list_values WHERE valid_from = :at"),
                             {"at": T0 + HOUR}).scalars().all()
        seen = conn.execute(text("SELECT count(*) FROM vault_latest WHERE list_confirmed_at = :at"),
                            {"at": T0 + HOUR}).scalar()
    assert set(moved) == changed and seen == 200
    assert latest_list_snapshot(engine)["vaults"] == 200


def test_a_parse_given_no_stored_entries_takes_those_the_write_reads(engine):
    """As sync-vaults runs: the write reads the stored entries under its lock and the parse takes them, so entries
    the same as stored are not parsed (one read of the digests, never stale)."""
    from vault_ingest.hyperliquid.vault_list import ListParse

    first, later, changed = _hours()
    parse = ListParse(first, None)
    write_vault_list(engine, parse, T0, unchanged=parse.unchanged)
    assert (parse.parsed, parse.unchanged) == (200, {})
    parse = ListParse(later, None)
    assert write_vault_list(engine, parse, T0 + HOUR, unchanged=parse.unchanged) == WriteCounts(unchanged=200)
    assert (parse.parsed, len(parse.unchanged)) == (len(changed), 200 - len(changed))
    with engine.connect() as conn:
        moved = conn.execute(text("SELECT vault_address FROM vault_list_values WHERE valid_from = :at"),
                             {"at": T0 + HOUR}).scalars().all()
    assert set(moved) == changed


def test_a_vault_that_leaves_is_the_only_one_touched_besides_the_changed(engine):
    write_vault_list(engine, [summary(1), summary(2), summary(3)], T0)
    before = _versions(engine)
    write_vault_list(engine, [summary(1), summary(3)], T0 + HOUR)
    after = _versions(engine)
    assert {a for a in after if after[a] != before[a]} == {address(2)}
    assert (vault(engine, 2)["seen_until"], vault(engine, 2)["delisted_at"]) == (T0, T0 + HOUR)
    assert [(r["valid_from"], r["valid_to"]) for r in list_rows(engine, 2)] == [(T0, T0 + HOUR)]


def test_unchanged_vaults_that_changed_meanwhile_fail_the_write_whole(engine):
    """Parsed against stored entries that another list write then replaced: nothing is written."""
    first, later, _ = _hours(20, changed=0.3)
    write_vault_list(engine, parse_vault_list(first)[0], T0)
    vaults, unchanged, _ = parse_changed_vaults(first, stored_list_digests(engine))
    write_vault_list(engine, parse_vault_list(later)[0], T0 + HOUR)  # the other write
    before = dump(engine)
    with pytest.raises(StaleListError, match="parse the list again in full"):
        write_vault_list(engine, vaults, T0 + 2 * HOUR, unchanged=unchanged)
    assert dump(engine) == before


def test_a_vault_both_parsed_and_unchanged_is_refused(engine):
    write_vault_list(engine, [summary(1)], T0)
    [(digest, _)] = stored_list_digests(engine).items()
    with pytest.raises(ValueError, match="pass each vault once"):
        write_vault_list(engine, [summary(1)], T0 + HOUR, unchanged={address(1): digest})


def test_a_vault_first_listed_by_a_late_older_snapshot_is_delisted_from_the_next(engine):
    write_vault_list(engine, [summary(1)], T0 + HOUR)
    write_vault_list(engine, [summary(1), summary(2)], T0)
    assert (vault(engine, 2)["seen_until"], vault(engine, 2)["delisted_at"]) == (T0, T0 + HOUR)
    assert vaults_for_details(engine, None, None) == [address(1)]


def test_the_first_snapshot_into_empty_tables_stores_what_the_staged_path_does(engine):
    parent = summary(1, relationship=Relationship("parent"))
    snapshot = [parent, summary(2, relationship=Relationship("child"), leader=parent.address),
                summary(3, relationship=Relationship("child")), summary(4)]
    write_vault_list(engine, snapshot, T0)  # empty tables: COPY straight in
    loaded = dump(engine)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE vaults, list_snapshots CASCADE"))
    write_vault_list(engine, [summary(9)], T0 - HOUR)
    write_vault_list(engine, snapshot, T0)  # a vault stored: staged and upserted
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM vaults WHERE address = :a"), {"a": address(9)})
        conn.execute(text("DELETE FROM list_snapshots WHERE observed_at = :at"), {"at": T0 - HOUR})
    assert dump(engine) == loaded
    assert vault(engine, 2)["parent_address"] == parent.address and vault(engine, 3)["parent_address"] is None
