"""Set-based writes of vault snapshots: COPY into temp tables, then one upsert per table.

Each write is one transaction, so a snapshot lands whole or not at all. Upserts change only rows
whose values differ, so writing the same snapshot twice leaves identical tables.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from psycopg.errors import UndefinedColumn, UndefinedTable
from sqlalchemy import Connection, Engine, Table, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError

from vault_ingest.db import schema
from vault_ingest.errors import StorageError
from vault_ingest.hyperliquid.models import WINDOWS, VaultDetails, VaultSummary
from vault_ingest.history import vault_series
from vault_ingest.metrics import window_metrics

log = logging.getLogger(__name__)

# Called inside the transaction after each stage ("staged", then the name of each table written):
# lets a test fail a snapshot midway.
AfterStage = Callable[[str], None]

# Snapshot writes take turns: a list write and a details write both update `vaults` rows, and
# taking row locks in different orders could deadlock. Any fixed bigint; "vault_wr".
WRITE_LOCK_KEY = 0x7661756C745F7772

_SUFFIXES = [schema.WINDOW_COLUMNS[w] for w in WINDOWS]
LIST_ATTRIBUTES = ["name", "leader", "created_at", "is_closed", "relationship"]
LIST_METRICS = ["tvl", "apr", *(f"pnl_{s}" for s in _SUFFIXES)]
DETAIL_ATTRIBUTES = ["description", "allow_deposits", "leader_commission", "is_closed", "relationship"]
DETAILS_WIN = ["is_closed", "relationship"]  # set by both; vaultDetails wins once it has answered
DETAIL_METRICS = [
    "max_distributable", "max_withdrawable", "leader_fraction", "followers_listed",
    *(f"{prefix}_{s}" for prefix in ("pnl", "volume", "return", "max_drawdown") for s in _SUFFIXES),
]
HISTORY = [c.name for c in schema.vault_history.columns]


@dataclass
class WriteCounts:
    new: int = 0
    updated: int = 0
    unchanged: int = 0


# --- SQL building blocks ----------------------------------------------------------------------


def _ddl(table: Table, names: list[str]) -> list[str]:
    """Staging columns typed exactly as the target's, so COPY rejects what the upsert would."""
    return [f"{n} {table.c[n].type.compile(postgresql.dialect())}" for n in names]


def _cols(names: list[str], prefix: str = "") -> str:
    return ", ".join(prefix + n for n in names)


def _set(columns: list[str]) -> str:
    return ", ".join(f"{c} = excluded.{c}" for c in columns)


def _differs(left: str, right: str, columns: list[str]) -> str:
    return f"({_cols(columns, left + '.')}) IS DISTINCT FROM ({_cols(columns, right + '.')})"


def _no_stage(stage: str) -> None:
    pass


def _aware(observed_at: datetime) -> datetime:
    if observed_at.tzinfo is None:
        raise ValueError(f"observed_at {observed_at.isoformat()} has no time zone; pass an aware UTC datetime")
    return observed_at


R = TypeVar("R", VaultSummary, VaultDetails)


def _each_once(records: Iterable[R]) -> Iterator[R]:
    """The records, refusing a repeated vault: one upsert cannot change the same row twice."""
    seen: set[str] = set()
    for record in records:
        if record.address in seen:
            raise ValueError(f"vault {record.address} appears twice in one snapshot; pass each vault once")
        seen.add(record.address)
        yield record


@contextmanager
def _transaction(engine: Engine) -> Iterator[Connection]:
    try:
        with engine.begin() as conn:
            yield conn
    except (DBAPIError, UndefinedTable, UndefinedColumn) as exc:
        cause = getattr(exc, "orig", exc)  # COPY raises psycopg's own errors, unwrapped
        if isinstance(cause, (UndefinedTable, UndefinedColumn)):
            raise StorageError(
                f"the app database lacks the vault tables this version expects ({str(cause).strip()}); "
                "run `vault-ingest db upgrade` against DATABASE_URL"
            ) from exc
        raise


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    with _transaction(engine) as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY})
        yield conn


def _stage(conn: Connection, table: str, columns: list[str], rows: Iterable[tuple]) -> None:
    """A temp table of this transaction, filled by streaming COPY: no per-row round trips."""
    conn.exec_driver_sql(f"CREATE TEMP TABLE {table} ({', '.join(columns)}) ON COMMIT DROP")
    with conn.connection.driver_connection.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _counts(conn: Connection, sql: str) -> WriteCounts:
    new, updated, total = conn.execute(text(sql)).one()
    return WriteCounts(new=new, updated=updated, unchanged=total - new - updated)


# --- the stats list ---------------------------------------------------------------------------

_STAGED_LIST = _ddl(schema.vaults, ["address", *LIST_ATTRIBUTES]) + _ddl(schema.vault_metrics, LIST_METRICS)


def _summary_rows(summaries: Sequence[VaultSummary]) -> Iterator[tuple]:
    for v in _each_once(summaries):
        yield (v.address, v.name, v.leader, v.created_at, v.is_closed, v.relationship.type, v.tvl, v.apr,
               *(v.pnl.get(w) for w in WINDOWS))


def write_vault_list(
    engine: Engine,
    vaults: Sequence[VaultSummary],
    observed_at: datetime,
    *,
    skipped: int = 0,
    _after_stage: AfterStage = _no_stage,
) -> WriteCounts:
    """One stats-list snapshot into `vaults`, `vault_metrics` and `list_snapshots`; counts are about `vaults` rows.

    A vault missing from the newest snapshot is delisted (`delisted_at`) until a snapshot lists it again.
    """
    at = {"at": _aware(observed_at)}
    with _snapshot(engine) as conn:
        _stage(conn, "staged_list", _STAGED_LIST, _summary_rows(vaults))
        _after_stage("staged")
        # is_closed and relationship are the list's only until vaultDetails has answered (schema.vaults)
        effective = {c: f"CASE WHEN v.details_at IS NULL THEN s.{c} ELSE v.{c} END" if c in DETAILS_WIN else f"s.{c}"
                     for c in LIST_ATTRIBUTES}
        counts = _counts(conn, f"""
            SELECT count(*) FILTER (WHERE v.address IS NULL),
                   count(*) FILTER (WHERE v.address IS NOT NULL AND (
                       ({', '.join(effective.values())}) IS DISTINCT FROM ({_cols(LIST_ATTRIBUTES, 'v.')})
                       OR v.delisted_at IS NOT NULL)),
                   count(*)
            FROM staged_list s LEFT JOIN vaults v ON v.address = s.address""")
        # A child's leader is its parent when that leader is a parent vault, in this snapshot or
        # stored. When the list cannot tell, a parent known from the parent's details stays.
        keep = ", ".join(f"{c} = CASE WHEN vaults.details_at IS NULL THEN excluded.{c} ELSE vaults.{c} END"
                         for c in DETAILS_WIN)
        conn.execute(text(f"""
            INSERT INTO vaults (address, {_cols(LIST_ATTRIBUTES)}, parent_address, first_seen, last_seen)
            SELECT s.address, {_cols(LIST_ATTRIBUTES, 's.')},
                   CASE WHEN s.relationship = 'child'
                         AND coalesce(p.relationship, stored.relationship) = 'parent' THEN s.leader END,
                   :at, :at
            FROM staged_list s
            LEFT JOIN staged_list p ON p.address = s.leader
            LEFT JOIN vaults stored ON stored.address = s.leader
            ON CONFLICT (address) DO UPDATE SET {_set([c for c in LIST_ATTRIBUTES if c not in DETAILS_WIN])}, {keep},
                parent_address = CASE WHEN (CASE WHEN vaults.details_at IS NULL THEN excluded.relationship
                                                 ELSE vaults.relationship END) = 'child'
                                      THEN coalesce(excluded.parent_address, vaults.parent_address) END,
                delisted_at = CASE WHEN excluded.last_seen >= vaults.last_seen THEN NULL ELSE vaults.delisted_at END,
                last_seen = greatest(vaults.last_seen, excluded.last_seen)"""), at)
        # only the newest snapshot says what is listed now: one written late changes no listing
        conn.execute(text("""
            UPDATE vaults SET delisted_at = :at
            WHERE last_seen < :at AND delisted_at IS NULL
              AND NOT EXISTS (SELECT FROM list_snapshots WHERE observed_at > :at)"""), at)
        _after_stage("vaults")
        conn.execute(text(f"""
            INSERT INTO vault_metrics (vault_address, observed_at, {_cols(LIST_METRICS)})
            SELECT address, :at, {_cols(LIST_METRICS)} FROM staged_list
            ON CONFLICT (vault_address, observed_at) DO UPDATE SET {_set(LIST_METRICS)}
            WHERE {_differs('vault_metrics', 'excluded', LIST_METRICS)}"""), at)
        _after_stage("vault_metrics")
        _record_snapshot(conn, at["at"], skipped)
        _after_stage("list_snapshots")
    return counts


def _record_snapshot(conn: Connection, at: datetime, skipped: int) -> None:
    """The snapshot's size and its TVL counting each dollar once: a child vault's TVL is inside its parent's
    (the evidence is in README "TVL counted once"), so children are left out."""
    conn.execute(text("""
        INSERT INTO list_snapshots (observed_at, vaults, skipped, total_tvl)
        SELECT :at, count(*), :skipped, coalesce(sum(s.tvl) FILTER (WHERE v.relationship <> 'child'), 0)
        FROM staged_list s JOIN vaults v ON v.address = s.address
        ON CONFLICT (observed_at) DO UPDATE SET vaults = excluded.vaults, skipped = excluded.skipped,
            total_tvl = excluded.total_tvl
        WHERE (list_snapshots.vaults, list_snapshots.skipped, list_snapshots.total_tvl)
              IS DISTINCT FROM (excluded.vaults, excluded.skipped, excluded.total_tvl)"""),
        {"at": at, "skipped": skipped})


def latest_list_snapshot(engine: Engine) -> dict | None:
    """The newest stored list snapshot: observed_at, vaults, skipped, total_tvl; None before the first."""
    with _transaction(engine) as conn:
        row = conn.execute(text("SELECT * FROM list_snapshots ORDER BY observed_at DESC LIMIT 1")).first()
        return dict(row._mapping) if row else None


# --- vaultDetails -----------------------------------------------------------------------------

_STAGED_DETAILS = (_ddl(schema.vaults, ["address", *DETAIL_ATTRIBUTES])
                   + _ddl(schema.vault_metrics, ["observed_at", *DETAIL_METRICS]))
_STAGED_HISTORY = _ddl(schema.vault_history, HISTORY)


def _metrics_time(d: VaultDetails, fallback: datetime) -> datetime:
    """The data's own time, so re-fetching details that did not change lands on the same row."""
    day = d.portfolio.get("day")
    return day.account_value[-1][0] if day and day.account_value else fallback


def _detail_rows(details: Sequence[VaultDetails], observed_at: datetime) -> Iterator[tuple]:
    for d in _each_once(details):
        windows = [window_metrics(d.portfolio[w]) if w in d.portfolio else None for w in WINDOWS]
        yield (
            d.address, d.description, d.allow_deposits, d.leader_commission, d.is_closed, d.relationship.type,
            _metrics_time(d, observed_at),
            d.max_distributable, d.max_withdrawable, d.leader_fraction, d.followers_listed,
            *(m and m.pnl for m in windows),
            *(m and m.volume for m in windows),
            *(m and m.return_ for m in windows),
            *(m and m.max_drawdown for m in windows),
        )


def _history_rows(details: Sequence[VaultDetails]) -> Iterator[tuple]:
    for d in details:
        for series in vault_series(d.portfolio, d.address):
            for p in series.points:
                yield d.address, series.name, p.ts, p.account_value, p.pnl, False
            if series.now:
                yield d.address, series.name, series.now.ts, series.now.account_value, series.now.pnl, True


def write_vault_details(
    engine: Engine,
    details: Sequence[VaultDetails],
    not_found: Sequence[str],
    observed_at: datetime,
    *,
    _after_stage: AfterStage = _no_stage,
) -> WriteCounts:
    """vaultDetails answers into `vaults`, `vault_metrics` and `vault_history`, as one snapshot.

    Counts are about `vault_metrics` rows. Vaults not stored yet (the next list write adds them)
    and unknown `not_found` addresses are skipped.
    """
    at = _aware(observed_at)
    with _snapshot(engine) as conn:
        _stage(conn, "staged_details", _STAGED_DETAILS, _detail_rows(details, at))
        _stage(conn, "staged_history", _STAGED_HISTORY, _history_rows(details))
        _after_stage("staged")
        counts = _counts(conn, f"""
            SELECT count(*) FILTER (WHERE m.vault_address IS NULL),
                   count(*) FILTER (WHERE m.vault_address IS NOT NULL AND {_differs('s', 'm', DETAIL_METRICS)}),
                   count(*)
            FROM staged_details s JOIN vaults v ON v.address = s.address
            LEFT JOIN vault_metrics m ON m.vault_address = s.address AND m.observed_at = s.observed_at""")
        skipped = len(details) - (counts.new + counts.updated + counts.unchanged)
        if skipped:
            log.warning("skipped the details of %d vaults not in `vaults` yet; the next list write adds them", skipped)
        _update_vaults(conn, details, not_found, at)
        _after_stage("vaults")
        conn.execute(text(f"""
            INSERT INTO vault_metrics (vault_address, observed_at, {_cols(DETAIL_METRICS)})
            SELECT s.address, s.observed_at, {_cols(DETAIL_METRICS, 's.')}
            FROM staged_details s JOIN vaults v ON v.address = s.address
            ON CONFLICT (vault_address, observed_at) DO UPDATE SET {_set(DETAIL_METRICS)}
            WHERE {_differs('vault_metrics', 'excluded', DETAIL_METRICS)}"""))
        _after_stage("vault_metrics")
        _write_history(conn)
        _after_stage("vault_history")
    return counts


def _write_history(conn: Connection) -> None:
    """Regular points are only ever added (or get the PnL a 0001 row lacked); the "now" point is replaced."""
    conn.execute(text("""
        DELETE FROM vault_history h USING staged_history s
        WHERE s.is_now AND h.is_now AND h.vault_address = s.vault_address AND h.series = s.series
          AND h.ts <= s.ts"""))
    conn.execute(text(f"""
        INSERT INTO vault_history ({_cols(HISTORY)})
        SELECT {_cols(HISTORY, 'h.')} FROM staged_history h JOIN vaults v ON v.address = h.vault_address
        WHERE NOT (h.is_now AND EXISTS (SELECT FROM vault_history o WHERE o.is_now
                   AND o.vault_address = h.vault_address AND o.series = h.series AND o.ts > h.ts))
        ON CONFLICT (vault_address, series, ts) DO UPDATE SET pnl = excluded.pnl
        WHERE vault_history.pnl IS NULL AND NOT excluded.is_now"""))


def _update_vaults(conn: Connection, details: Sequence[VaultDetails], not_found: Sequence[str], at: datetime) -> None:
    conn.execute(text(f"""
        UPDATE vaults v SET {', '.join(f'{c} = s.{c}' for c in DETAIL_ATTRIBUTES)}, details_at = s.observed_at,
            not_found_at = NULL, not_found_checked_at = NULL
        FROM staged_details s
        WHERE v.address = s.address
          AND ({_differs('v', 's', DETAIL_ATTRIBUTES)} OR v.details_at IS DISTINCT FROM s.observed_at
               OR v.not_found_at IS NOT NULL)"""))
    # Only a parent's details name its children; a child's own record has no pointer back.
    links = [(d.address, child) for d in details if d.relationship.type == "parent"
             for child in d.relationship.child_addresses]
    if links:
        parents, children = zip(*links)
        conn.execute(text("""
            UPDATE vaults v SET parent_address = link.parent
            FROM unnest(CAST(:parents AS text[]), CAST(:children AS text[])) AS link(parent, child)
            JOIN vaults p ON p.address = link.parent
            WHERE v.address = link.child AND v.parent_address IS DISTINCT FROM link.parent"""),
            {"parents": list(parents), "children": list(children)})
    if not_found:
        # coalesce: not_found_at says since when the vault has been missing
        conn.execute(text("""
            UPDATE vaults SET not_found_at = coalesce(not_found_at, :at), not_found_checked_at = :at
            WHERE address = ANY(CAST(:addresses AS text[]))"""),
            {"at": at, "addresses": [a.lower() for a in not_found]})


# --- reads ------------------------------------------------------------------------------------

# Open, listed vaults with their latest list row (detail rows carry no tvl): one backward probe of
# vault_metrics' primary key per vault, so the cost stays flat as hourly rows pile up.
_OPEN_BY_TVL = """
    FROM vaults v
    CROSS JOIN LATERAL (
        SELECT m.tvl, m.apr FROM vault_metrics m
        WHERE m.vault_address = v.address AND m.tvl IS NOT NULL
        ORDER BY m.observed_at DESC LIMIT 1
    ) latest
    WHERE NOT v.is_closed AND v.delisted_at IS NULL"""


def vaults_for_details(engine: Engine, min_tvl: Decimal | None, max_vaults: int | None) -> list[str]:
    """Addresses of open, listed vaults by latest tvl, highest first: tvl >= min_tvl, at most max_vaults.

    A vault that answered null is asked again once a list snapshot newer than that answer still lists it: one
    null can be a glitch, and a vault the list keeps showing is worth one request an hour.
    """
    with _transaction(engine) as conn:
        return list(conn.execute(text(f"""
            SELECT v.address {_OPEN_BY_TVL}
              AND (v.not_found_checked_at IS NULL OR v.last_seen > v.not_found_checked_at)
              AND (CAST(:min_tvl AS numeric) IS NULL OR latest.tvl >= CAST(:min_tvl AS numeric))
            ORDER BY latest.tvl DESC, v.address
            LIMIT CAST(:max_vaults AS bigint)"""), {"min_tvl": min_tvl, "max_vaults": max_vaults}).scalars())


def top_vaults(engine: Engine, limit: int = 10) -> list[dict]:
    """The `limit` open, listed vaults with the highest latest tvl: name, address, tvl, apr, and `children`, the
    number of child vaults whose TVL is inside it. Children are not rows of their own: their dollars are the
    parent's (README "TVL counted once"). Vaults vaultDetails cannot find are left out."""
    with _transaction(engine) as conn:
        rows = conn.execute(text(f"""
            SELECT v.name, v.address, latest.tvl, latest.apr,
                   (SELECT count(*) FROM vaults c WHERE c.parent_address = v.address
                      AND c.delisted_at IS NULL) AS children
            {_OPEN_BY_TVL} AND v.relationship <> 'child' AND v.not_found_at IS NULL
            ORDER BY latest.tvl DESC, v.address LIMIT :limit"""), {"limit": limit})
        return [dict(row._mapping) for row in rows]
