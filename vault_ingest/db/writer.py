"""Set-based writes of vault snapshots: COPY into temp tables (by column name), then a few statements per table.

Each write is one transaction, so a snapshot lands whole or not at all. Values are stored once while they hold
(schema._interval): a snapshot adds a row only for a vault whose values changed, so writing the same snapshot
twice leaves identical tables, and an hour in which few vaults changed writes few rows. A list snapshot touches
only the vaults whose entries changed and those that left the list (the newest snapshot is every listed vault's
last sighting, `vaults.seen_until` only says when a delisted one was last seen); the first snapshot into empty
tables is COPYed straight into them.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, Inexact, InvalidOperation, Overflow, localcontext
from itertools import islice
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from sqlalchemy import Connection, Engine, text

from vault_ingest.db import schema
from vault_ingest.db.staging import (
    AfterStage, WriteCounts, aware, cols, copy_rows, counts, differs, each_once, no_stage, snapshot, stage, staged,
)
from vault_ingest.errors import StaleListError
from vault_ingest.history import vault_series
from vault_ingest.hyperliquid.models import (
    NUMERIC_FRACTION_DIGITS, NUMERIC_INTEGER_DIGITS, WINDOWS, VaultDetails, VaultSummary, digest,
)
from vault_ingest.hyperliquid.vault_list import ListParse
from vault_ingest.metrics import window_metrics

log = logging.getLogger(__name__)

_SUFFIXES = [schema.WINDOW_COLUMNS[w] for w in WINDOWS]
LIST_ATTRIBUTES = ["name", "leader", "created_at", "is_closed", "relationship"]
LIST_VALUES = ["tvl", "apr", *(f"pnl_{s}" for s in _SUFFIXES), "pnls"]
DETAIL_ATTRIBUTES = ["description", "allow_deposits", "always_close_on_withdraw", "leader_commission", "is_closed",
                     "relationship"]
DETAILS_WIN = ["is_closed", "relationship"]  # set by both; vaultDetails wins once it has answered
DETAIL_VALUES = [
    "apr", "max_distributable", "max_withdrawable", "leader_fraction", "leader_equity", "followers_listed",
    *(f"{prefix}_{s}" for prefix in ("pnl", "volume", "return", "max_drawdown") for s in _SUFFIXES),
]
HISTORY = [c.name for c in schema.vault_history.columns]


# --- the stats list ---------------------------------------------------------------------------

_STAGED_LIST = staged("staged_list", (schema.vaults, ["address", *LIST_ATTRIBUTES, "list_digest"]),
                      (schema.vault_list_values, LIST_VALUES))


def _attributes(v: VaultSummary, list_digest: int) -> dict:
    return {"address": v.address, "name": v.name, "leader": v.leader, "created_at": v.created_at,
            "is_closed": v.is_closed, "relationship": v.relationship.type, "list_digest": list_digest}


def _values(v: VaultSummary) -> dict:
    pnl = v.pnl.get
    return {"tvl": v.tvl, "apr": v.apr, "pnl_day": pnl("day"), "pnl_week": pnl("week"), "pnl_month": pnl("month"),
            "pnl_all_time": pnl("allTime"), "pnls": v.pnls_json}


def _summary_row(v: VaultSummary, list_digest: int) -> dict:
    return {**_attributes(v, list_digest), **_values(v)}


def _list_digest(v: VaultSummary) -> int:
    """The entry's digest as parsed from the list (its bytes); else one of the values stored (str keeps every
    digit: 1.0 and 1.00 differ)."""
    if v.entry_digest is not None:
        return v.entry_digest
    values = (v.name, v.leader, v.created_at, v.is_closed, v.relationship.type, v.tvl, v.apr, v.pnls_json,
              *(v.pnl.get(w) for w in WINDOWS))
    return digest("\x1f".join(map(str, values)).encode())


def _listed(conn: Connection) -> dict[str, int | None]:
    """Every listed vault (address -> the digest of its stored list entry). 10,000 rows: read as the driver's
    tuples, a third of the cost of SQLAlchemy rows."""
    return dict(conn.connection.driver_connection.execute(
        "SELECT address, list_digest FROM vaults WHERE delisted_at IS NULL").fetchall())


def _changed(vaults: Sequence[VaultSummary], known: Mapping[str, int | None]) -> Iterator[dict]:
    """The rows a snapshot must stage: new vaults, changed ones, delisted ones back."""
    for v in vaults:
        list_digest = _list_digest(v)
        if known.get(v.address) != list_digest:
            yield _summary_row(v, list_digest)


def _check_unchanged(vaults: Sequence[VaultSummary], unchanged: Mapping[str, int],
                     listed: Mapping[str, int | None]) -> None:
    for address, entry_digest in unchanged.items():
        if listed.get(address) != entry_digest:
            raise StaleListError(
                f"vault {address}'s stored list entry changed after the list was parsed against it (another list "
                "write came first); nothing was written: parse the list again in full and write that")
    for v in vaults:
        if v.address in unchanged:
            raise ValueError(f"vault {v.address} is both in `vaults` and in `unchanged`; pass each vault once")


def write_vault_list(
    engine: Engine,
    vaults: Iterable[VaultSummary],
    observed_at: datetime,
    *,
    unchanged: Mapping[str, int] | None = None,
    skipped: int | Callable[[], int] = 0,
    _after_stage: AfterStage = no_stage,
) -> WriteCounts:
    """One stats-list snapshot into `vaults`, `vault_list_values` and `list_snapshots`; counts are about `vaults`.

    `unchanged` are the vaults the snapshot lists with the very entry stored (address -> entry digest, from
    `parse_changed_vaults`): confirmed without a write. If one of them changed meanwhile, StaleListError and
    nothing is written. A vault missing from the newest snapshot is delisted (`delisted_at`; `seen_until` the
    last snapshot that listed it; its values end there) until a snapshot lists it again. Nothing is written for
    the vaults that stay listed: the newest snapshot is their last sighting. A snapshot older than one already
    stored updates no values and delists nothing.

    `vaults` may be a ListParse, parsed as it is taken: into empty tables they are COPYed as they come. `unchanged`
    is read once every vault is taken, and so is `skipped` when it is a callable, inside the transaction: raising
    there (DataQualityError: too many bad entries) writes nothing.
    """
    at = {"at": aware(observed_at)}
    unchanged = {} if unchanged is None else unchanged  # a ListParse's, filled as its vaults are taken
    with snapshot(engine) as conn:
        newest = conn.execute(text("SELECT NOT EXISTS (SELECT FROM list_snapshots WHERE observed_at > :at)"), at).scalar()
        listed = _listed(conn)
        if isinstance(vaults, ListParse):
            vaults.against(listed)  # a parse given no stored entries takes these: read under the lock, never stale
        if newest and not listed and conn.execute(text("SELECT NOT EXISTS (SELECT FROM vaults)")).scalar():
            vaults, result, totals = _load_first(conn, each_once(vaults), at["at"], _after_stage)
            change = None
            _check_unchanged(vaults, unchanged, listed)  # none can be: the tables were empty
        else:
            vaults = list(each_once(vaults))
            _check_unchanged(vaults, unchanged, listed)
            result, change = _write_list(conn, vaults, unchanged, listed, {**at, "newest": newest}, _after_stage)
            totals = None
        _record_snapshot(conn, at["at"], skipped() if callable(skipped) else skipped, len(vaults) + len(unchanged),
                         newest, change, totals)
        _after_stage("list_snapshots")
    return result


def _write_list(conn: Connection, vaults: Sequence[VaultSummary], unchanged: Mapping[str, int],
                listed: Mapping[str, int | None], at: dict,
                after_stage: AfterStage) -> tuple[WriteCounts, Decimal | None]:
    """Into tables with vaults already: only the entries that changed are staged and written, and only the
    vaults that left the list are touched besides them. Also how much the listed vaults' TVL changes (None for an
    older snapshot): read before their values are."""
    newest = at["newest"]
    # an older snapshot (written late) stages every vault: its attributes are upserted, no values change
    rows = list(_changed(vaults, listed if newest else {}))
    staged_rows = stage(conn, _STAGED_LIST, rows)
    # The stored rows are found by the staged addresses, through their indexes: joined on staged_list alone, the
    # planner hashes all 10,000 current rows to meet a few hundred when the tables lack statistics (after a first
    # load, until autovacuum analyzes them), and that costs more than the rest of an hourly write.
    at = {**at, "staged": [r["address"] for r in rows]}
    after_stage("staged")
    result = _list_counts(conn, at)
    result.unchanged += len(vaults) + len(unchanged) - staged_rows
    _upsert_listed_vaults(conn, at)
    gone = sorted(listed.keys() - unchanged.keys() - {v.address for v in vaults}) if newest else []
    if gone:
        conn.execute(text("""
            UPDATE vaults SET delisted_at = :at, seen_until = coalesce(
                (SELECT max(observed_at) FROM list_snapshots WHERE observed_at < :at), first_seen)
            WHERE address = ANY(CAST(:gone AS text[]))"""), {**at, "gone": gone})
    after_stage("vaults")
    change = None
    if newest:
        # A vault has a current row while listed: the staged take theirs, the gone lose theirs.
        change = conn.execute(text("""
            SELECT (SELECT coalesce(sum(tvl), 0) FROM staged_list) - coalesce(sum(tvl), 0) FROM vault_list_values
            WHERE valid_to IS NULL AND vault_address = ANY(CAST(:touched AS text[]))"""),
            {"touched": at["staged"] + gone}).scalar()
        _write_list_values(conn, at, gone)
    after_stage("vault_list_values")
    return result, change


def _load_first(conn: Connection, vaults: Iterable[VaultSummary], at: datetime,
                after_stage: AfterStage) -> tuple[list[VaultSummary], WriteCounts, tuple[Decimal, Decimal]]:
    """The first snapshot into empty tables: COPY straight into them, no staging, no upsert. The values go first,
    COPYed as the vaults come: a lazy parse runs while the server stores the rows before, so on two cores the
    first snapshot costs about the longer of the two, not their sum. The parse is the longer side: the server,
    idle half that time, adds each row to the value indexes as it comes, where building them after the rows
    (PostgreSQL's "Populating a Database", https://www.postgresql.org/docs/current/populate.html) costs less of
    its time but runs after the parse, on the clock (README, P1). For the same reason the values go in text: the
    server parses the numbers that psycopg's binary dumper would take apart on the client, and it stores the rows as
    they come instead of the last 1,000 after the COPY ends (staging). The foreign key is added after the vaults are
    in: one join instead of 10,000 checks. The tables are empty, so the locks this takes until the commit keep no
    reader from any rows. Also the snapshot's TVL totals (_record_snapshot), summed as the vaults were taken."""
    taken = _Taken(vaults)
    after_stage("staged")
    name, foreign_key = conn.exec_driver_sql(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'vault_list_values'::regclass AND contype = 'f'").one()
    conn.exec_driver_sql(f"ALTER TABLE vault_list_values DROP CONSTRAINT {name}")
    copy_rows(conn, "vault_list_values", _FIRST_VALUE_COLUMNS,
              ({"vault_address": v.address, "valid_from": at, **_values(v)} for v in taken), binary=False)
    copy_rows(conn, "vaults", _FIRST_VAULT_COLUMNS, (
        {**_attributes(v, _list_digest(v)), "first_seen": at,
         "parent_address": v.leader if v.relationship.type == "child" and v.leader in taken.parents else None}
        for v in taken.vaults))
    after_stage("vaults")
    conn.exec_driver_sql(f"ALTER TABLE vault_list_values ADD CONSTRAINT {name} {foreign_key}")
    after_stage("vault_list_values")
    return taken.vaults, WriteCounts(new=len(taken.vaults)), (taken.listed_tvl, taken.total_tvl)


# The first load takes the parse this many vaults at a time: parsing a batch, then writing its rows, keeps each loop's
# code and data in the caches, where one vault at a time cost this process ~13 % more CPU (README, P1); with ten
# batches the server still stores rows while the rest is parsed.
_BATCH = 1000


# Any sum of numeric values has at most this many digits: Decimal adds them as exactly as numeric does (Python's
# default context keeps 28 digits and rounds the rest; here a rounding would raise Inexact).
_EXACT = Context(prec=NUMERIC_INTEGER_DIGITS + NUMERIC_FRACTION_DIGITS, Emax=MAX_EMAX, Emin=MIN_EMIN,
                 traps=[Inexact, InvalidOperation, Overflow])


class _Taken:
    """The vaults of a first load, taken a batch at a time, and what it needs of them all once every one is in: the
    parent vaults (a child's parent_address) and the TVL totals (_record_snapshot). Each batch is read for these as
    it comes, while its vaults are in the CPU's caches: a pass over all 10,000 after the COPY took ~10 ms each, on
    the clock."""

    def __init__(self, vaults: Iterable[VaultSummary]) -> None:
        self._source = iter(vaults)
        self.vaults: list[VaultSummary] = []
        self.parents: set[str] = set()
        self.listed_tvl = self.total_tvl = Decimal(0)  # a child's TVL is in its parent's: not in total_tvl

    def __iter__(self) -> Iterator[VaultSummary]:
        while batch := list(islice(self._source, _BATCH)):
            self.vaults.extend(batch)
            self.parents.update(v.address for v in batch if v.relationship.type == "parent")
            with localcontext(_EXACT):
                self.listed_tvl += sum(v.tvl for v in batch)
                self.total_tvl += sum(v.tvl for v in batch if v.relationship.type != "child")
            yield from batch


_FIRST_VAULT_COLUMNS = ["address", *LIST_ATTRIBUTES, "list_digest", "first_seen", "parent_address"]
_FIRST_VALUE_COLUMNS = ["vault_address", "valid_from", *LIST_VALUES]


def _effective(column: str, new: str, stored: str) -> str:
    """is_closed and relationship are the list's only until vaultDetails has answered (schema.vaults)."""
    if column in DETAILS_WIN:
        return f"CASE WHEN {stored}.details_at IS NULL THEN {new}.{column} ELSE {stored}.{column} END"
    return f"{new}.{column}"


def _list_counts(conn: Connection, at: dict) -> WriteCounts:
    effective = ", ".join(_effective(c, "s", "v") for c in LIST_ATTRIBUTES)
    return counts(conn, f"""
        SELECT count(*) FILTER (WHERE v.address IS NULL),
               count(*) FILTER (WHERE v.address IS NOT NULL AND (
                   ({effective}) IS DISTINCT FROM ({cols(LIST_ATTRIBUTES, 'v.')}) OR v.delisted_at IS NOT NULL)),
               count(*)
        FROM staged_list s LEFT JOIN vaults v ON v.address = s.address AND v.address = ANY(CAST(:staged AS text[]))""",
        at)


def _upsert_listed_vaults(conn: Connection, at: dict) -> None:
    # A child's leader is its parent when that leader is a parent vault, in this snapshot or
    # stored. When the list cannot tell, a parent known from the parent's details stays.
    # A vault first seen in an older snapshot (written late) is delisted from the next one, which lacked it.
    updates = ", ".join(f"{c} = {_effective(c, 'excluded', 'vaults')}" for c in LIST_ATTRIBUTES)
    conn.execute(text(f"""
        INSERT INTO vaults (address, {cols(LIST_ATTRIBUTES)}, list_digest, parent_address, first_seen, seen_until,
                            delisted_at)
        SELECT s.address, {cols(LIST_ATTRIBUTES, 's.')}, s.list_digest,
               CASE WHEN s.relationship = 'child'
                     AND coalesce(p.relationship, stored.relationship) = 'parent' THEN s.leader END,
               :at, CASE WHEN NOT :newest THEN :at END,
               CASE WHEN NOT :newest THEN (SELECT min(observed_at) FROM list_snapshots WHERE observed_at > :at) END
        FROM staged_list s
        LEFT JOIN staged_list p ON p.address = s.leader
        LEFT JOIN vaults stored ON stored.address = s.leader
        ON CONFLICT (address) DO UPDATE SET {updates},
            parent_address = CASE WHEN {_effective('relationship', 'excluded', 'vaults')} = 'child'
                                  THEN coalesce(excluded.parent_address, vaults.parent_address) END,
            delisted_at = CASE WHEN :newest THEN NULL ELSE vaults.delisted_at END,
            seen_until = CASE WHEN NOT :newest AND vaults.delisted_at IS NOT NULL
                              THEN greatest(vaults.seen_until, :at) END,
            list_digest = excluded.list_digest"""), at)


_CURRENT = "c.vault_address = s.address AND c.vault_address = ANY(CAST(:staged AS text[])) AND c.valid_to IS NULL"


def _write_list_values(conn: Connection, at: dict, gone: list[str]) -> None:
    values = LIST_VALUES
    # values that changed end here; so do the values of vaults this snapshot delisted
    conn.execute(text(f"""
        UPDATE vault_list_values c SET valid_to = :at FROM staged_list s
        WHERE {_CURRENT} AND c.valid_from < :at
          AND {differs('c', 's', values)}"""), at)
    if gone:
        conn.execute(text("""
            UPDATE vault_list_values SET valid_to = :at
            WHERE vault_address = ANY(CAST(:gone AS text[])) AND valid_to IS NULL"""), {**at, "gone": gone})
    # the same snapshot written again with other values corrects its own rows
    conn.execute(text(f"""
        UPDATE vault_list_values c SET {', '.join(f'{v} = s.{v}' for v in values)} FROM staged_list s
        WHERE {_CURRENT} AND c.valid_from = :at
          AND {differs('c', 's', values)}"""), at)
    conn.execute(text(f"""
        INSERT INTO vault_list_values (vault_address, valid_from, {cols(values)})
        SELECT s.address, :at, {cols(values, 's.')} FROM staged_list s
        WHERE NOT EXISTS (SELECT FROM vault_list_values c WHERE {_CURRENT})"""),
        at)


def _record_snapshot(conn: Connection, at: datetime, skipped: int, listed: int, newest: bool,
                     change: Decimal | None, totals: tuple[Decimal, Decimal] | None) -> None:
    """The snapshot's size, the TVL of the vaults it lists and that TVL counting each dollar once: a child vault's
    TVL is inside its parent's (the evidence is in README "TVL counted once"), so children are left out.

    A newest snapshot after another whose listed TVL is stored adds `change` (the staged and the delisted vaults')
    to it: only list writes move list values and listings, so that is every current row's sum without reading them
    (details can change a vault's relationship, so the children are subtracted as they are now, through their
    index). Otherwise every listed vault's current values are summed (most are unchanged, so not staged), or the
    staged ones of an older snapshot. In numeric, exact: equal in value to the full sum, though its scale can be
    larger (numeric keeps the largest scale it added: 507.625 - 7.125 is 500.500). A first snapshot gives its
    `totals` (listed, counted once), summed from the vaults it wrote: they are every listed vault, each current row
    is one of theirs, and no details have changed a relationship yet; that saves a join of 10,000 rows after the
    COPY, on the clock."""
    params = {"at": at, "skipped": skipped, "listed": listed, "change": change}
    current = ("vault_list_values s JOIN vaults v ON v.address = s.vault_address "
               "WHERE s.valid_to IS NULL AND v.delisted_at IS NULL")
    if totals is not None:
        params.update(listed_tvl=totals[0], total_tvl=totals[1])
        source = "(SELECT CAST(:listed_tvl AS numeric) AS listed_tvl, CAST(:total_tvl AS numeric) AS total_tvl) t"
    elif change is not None:
        # the full sum only when the previous snapshot has no listed TVL (COALESCE evaluates it only then)
        source = f"""(SELECT coalesce(
                (SELECT listed_tvl FROM list_snapshots WHERE observed_at <= :at ORDER BY observed_at DESC LIMIT 1)
                + CAST(:change AS numeric), (SELECT coalesce(sum(s.tvl), 0) FROM {current})) AS listed_tvl) b,
            LATERAL (SELECT b.listed_tvl - coalesce(sum(s.tvl), 0) AS total_tvl FROM {current}
                     AND v.relationship = 'child') t"""
    else:
        rows = current if newest else "staged_list s JOIN vaults v ON v.address = s.address"
        source = f"""(SELECT coalesce(sum(s.tvl), 0) AS listed_tvl,
                             coalesce(sum(s.tvl) FILTER (WHERE v.relationship <> 'child'), 0) AS total_tvl
                      FROM {rows}) t"""
        # every listed vault against every current row: one hash join. Without statistics (after a first load,
        # until autovacuum analyzes) the planner expects a handful of rows and probes the index 10,000 times, 5x
        # slower. SET LOCAL lasts until the commit, which follows this statement.
        conn.exec_driver_sql("SET LOCAL enable_nestloop = off")
    conn.execute(text(f"""
        INSERT INTO list_snapshots (observed_at, vaults, skipped, total_tvl, listed_tvl)
        SELECT :at, :listed, :skipped, total_tvl, listed_tvl FROM {source}
        ON CONFLICT (observed_at) DO UPDATE SET vaults = excluded.vaults, skipped = excluded.skipped,
            total_tvl = excluded.total_tvl, listed_tvl = excluded.listed_tvl
        WHERE (list_snapshots.vaults, list_snapshots.skipped, list_snapshots.total_tvl, list_snapshots.listed_tvl)
              IS DISTINCT FROM (excluded.vaults, excluded.skipped, excluded.total_tvl, excluded.listed_tvl)"""),
        params)


# --- vaultDetails -----------------------------------------------------------------------------

_STAGED_DETAILS = staged("staged_details", (schema.vaults, ["address", *DETAIL_ATTRIBUTES]),
                         (schema.vault_detail_values, ["valid_from", *DETAIL_VALUES]))
_STAGED_HISTORY = staged("staged_history", (schema.vault_history, HISTORY))


def _data_time(d: VaultDetails, fallback: datetime) -> datetime:
    """The data's own time (the portfolio's request-time point), so a re-fetch that changed nothing is one row."""
    day = d.portfolio.get("day")
    return day.account_value[-1][0] if day and day.account_value else fallback


def _detail_rows(details: Sequence[VaultDetails], observed_at: datetime) -> Iterator[dict]:
    for d in each_once(details):
        row = {"address": d.address, "description": d.description, "allow_deposits": d.allow_deposits,
               "always_close_on_withdraw": d.always_close_on_withdraw, "leader_commission": d.leader_commission,
               "is_closed": d.is_closed, "relationship": d.relationship.type,
               "valid_from": _data_time(d, observed_at), "apr": d.apr, "max_distributable": d.max_distributable,
               "max_withdrawable": d.max_withdrawable, "leader_fraction": d.leader_fraction,
               "leader_equity": d.leader_equity, "followers_listed": d.followers_listed}
        for window, suffix in zip(WINDOWS, _SUFFIXES):
            m = window_metrics(d.portfolio[window]) if window in d.portfolio else None
            row.update({f"pnl_{suffix}": m and m.pnl, f"volume_{suffix}": m and m.volume,
                        f"return_{suffix}": m and m.return_, f"max_drawdown_{suffix}": m and m.max_drawdown})
        yield row


def _history_rows(details: Sequence[VaultDetails]) -> Iterator[dict]:
    for d in details:
        for series in vault_series(d.portfolio, d.address):
            points = [(p, False) for p in series.points] + ([(series.now, True)] if series.now else [])
            for p, is_now in points:
                yield {"vault_address": d.address, "series": series.name, "ts": p.ts,
                       "account_value": p.account_value, "pnl": p.pnl, "is_now": is_now}


def write_vault_details(
    engine: Engine,
    details: Sequence[VaultDetails],
    not_found: Sequence[str],
    observed_at: datetime,
    *,
    _after_stage: AfterStage = no_stage,
) -> WriteCounts:
    """vaultDetails answers into `vaults`, `vault_detail_values` and `vault_history`, as one snapshot.

    Counts are about detail values: new (a vault's first), updated (values changed), unchanged (confirmed
    again). Vaults not stored yet (the next list write adds them), unknown `not_found` addresses and answers
    older than the stored ones are skipped.
    """
    at = aware(observed_at)
    with snapshot(engine) as conn:
        stage(conn, _STAGED_DETAILS, _detail_rows(details, at))
        stage(conn, _STAGED_HISTORY, _history_rows(details))
        _after_stage("staged")
        result = counts(conn, f"""
            SELECT count(*) FILTER (WHERE c.vault_address IS NULL),
                   count(*) FILTER (WHERE c.vault_address IS NOT NULL AND {differs('s', 'c', DETAIL_VALUES)}),
                   count(*)
            FROM staged_details s JOIN vaults v ON v.address = s.address
            LEFT JOIN vault_detail_values c ON c.vault_address = s.address AND c.valid_to IS NULL""")
        skipped = len(details) - (result.new + result.updated + result.unchanged)
        if skipped:
            log.warning("skipped the details of %d vaults not in `vaults` yet; the next list write adds them", skipped)
        _update_vaults(conn, details, not_found, at)
        _after_stage("vaults")
        _write_detail_values(conn)
        _after_stage("vault_detail_values")
        _write_history(conn)
        _after_stage("vault_history")
    return result


def _write_detail_values(conn: Connection) -> None:
    current = "c.vault_address = s.address AND c.valid_to IS NULL"
    conn.execute(text(f"""
        UPDATE vault_detail_values c SET confirmed_at = s.valid_from FROM staged_details s
        WHERE {current} AND c.confirmed_at < s.valid_from AND NOT {differs('c', 's', DETAIL_VALUES)}"""))
    conn.execute(text(f"""
        UPDATE vault_detail_values c SET valid_to = s.valid_from FROM staged_details s
        WHERE {current} AND c.valid_from < s.valid_from AND {differs('c', 's', DETAIL_VALUES)}"""))
    conn.execute(text(f"""
        UPDATE vault_detail_values c SET {', '.join(f'{v} = s.{v}' for v in DETAIL_VALUES)} FROM staged_details s
        WHERE {current} AND c.valid_from = s.valid_from AND {differs('c', 's', DETAIL_VALUES)}"""))
    conn.execute(text(f"""
        INSERT INTO vault_detail_values (vault_address, valid_from, confirmed_at, snapshot_at, {cols(DETAIL_VALUES)})
        SELECT s.address, s.valid_from, s.valid_from, (SELECT max(observed_at) FROM list_snapshots),
               {cols(DETAIL_VALUES, 's.')}
        FROM staged_details s JOIN vaults v ON v.address = s.address
        WHERE NOT EXISTS (SELECT FROM vault_detail_values c WHERE {current})"""))


def _write_history(conn: Connection) -> None:
    """Regular points are only ever added (or get the PnL a 0001 row lacked); the "now" point is replaced."""
    conn.execute(text("""
        DELETE FROM vault_history h USING staged_history s
        WHERE s.is_now AND h.is_now AND h.vault_address = s.vault_address AND h.series = s.series
          AND h.ts <= s.ts"""))
    conn.execute(text(f"""
        INSERT INTO vault_history ({cols(HISTORY)})
        SELECT {cols(HISTORY, 'h.')} FROM staged_history h JOIN vaults v ON v.address = h.vault_address
        WHERE NOT (h.is_now AND EXISTS (SELECT FROM vault_history o WHERE o.is_now
                   AND o.vault_address = h.vault_address AND o.series = h.series AND o.ts > h.ts))
        ON CONFLICT (vault_address, series, ts) DO UPDATE SET pnl = excluded.pnl
        WHERE vault_history.pnl IS NULL AND NOT excluded.is_now"""))


def _update_vaults(conn: Connection, details: Sequence[VaultDetails], not_found: Sequence[str], at: datetime) -> None:
    conn.execute(text(f"""
        UPDATE vaults v SET {', '.join(f'{c} = s.{c}' for c in DETAIL_ATTRIBUTES)}, details_at = s.valid_from,
            not_found_at = NULL, not_found_checked_at = NULL
        FROM staged_details s
        WHERE v.address = s.address AND (v.details_at IS NULL OR v.details_at <= s.valid_from)
          AND ({differs('v', 's', DETAIL_ATTRIBUTES)} OR v.details_at IS DISTINCT FROM s.valid_from
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
