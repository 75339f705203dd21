"""Building blocks of the set-based writes: one locked transaction per snapshot, COPY into temp tables by column
name, and the SQL fragments the upserts share.

COPY is binary by default (https://www.postgresql.org/docs/current/sql-copy.html, "Binary Format"): the server reads
each value with its type's receive function instead of parsing text, and psycopg's C dumpers write timestamps and
booleans without formatting them. Each column's type is read from the table itself, by column name, so every value
is sent as exactly that type (psycopg's `Copy.set_types`; PostgreSQL applies no cast to binary values). A numeric
costs the client about twice its text dump (psycopg_c/types/numeric.pyx at 00fa361 goes through `Decimal.as_tuple`),
so the gain is the server's and the timestamps' (README, P1). Text moves that work to the server, for a COPY whose
client is the longer side (the first load's values, COPYed as they are parsed); it also stores its rows as they
come: PostgreSQL's COPY buffers rows until 1,000 of them or 64 KB of their input, and a binary row counts no bytes
(CopyMultiInsertInfoStore is given `line_buf.len`, which only text fills: src/backend/commands/copyfrom.c at
06bd311), so a binary COPY stores up to its last 1,000 rows only after the client has sent them all.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from datetime import datetime
from typing import Callable, Iterable, Iterator, Mapping, TypeVar

from psycopg import pq
from psycopg.abc import Buffer
from psycopg.adapt import Dumper
from psycopg.errors import UndefinedColumn, UndefinedFunction, UndefinedTable
from psycopg.postgres import types as pg_types
from sqlalchemy import Connection, Engine, Table, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError

from vault_ingest.errors import StorageError

# Called inside the transaction after each stage ("staged", then the name of each table written):
# lets a test fail a snapshot midway.
AfterStage = Callable[[str], None]

# Snapshot writes take turns: a list write and a details write both update `vaults` rows, and
# taking row locks in different orders could deadlock. Any fixed bigint; "vault_wr".
WRITE_LOCK_KEY = 0x7661756C745F7772

_MISSING = (UndefinedTable, UndefinedColumn, UndefinedFunction)


@dataclass
class WriteCounts:
    new: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass(frozen=True)
class Staged:
    """A temp table typed exactly as the columns it stages (so COPY rejects what the upsert would)."""

    name: str
    columns: tuple[tuple[Table, str], ...]  # (table typing the column, column name), in COPY order

    @property
    def names(self) -> list[str]:
        return [n for _, n in self.columns]

    def ddl(self) -> str:
        types = ", ".join(f"{n} {t.c[n].type.compile(postgresql.dialect())}" for t, n in self.columns)
        return f"CREATE TEMP TABLE {self.name} ({types}) ON COMMIT DROP"


def staged(name: str, *parts: tuple[Table, list[str]]) -> Staged:
    return Staged(name, tuple((table, n) for table, names in parts for n in names))


def cols(names: list[str], prefix: str = "") -> str:
    return ", ".join(prefix + n for n in names)


def differs(left: str, right: str, columns: list[str]) -> str:
    return f"({cols(columns, left + '.')}) IS DISTINCT FROM ({cols(columns, right + '.')})"


def no_stage(stage: str) -> None:
    pass


def aware(observed_at: datetime) -> datetime:
    if observed_at.tzinfo is None:
        raise ValueError(f"observed_at {observed_at.isoformat()} has no time zone; pass an aware UTC datetime")
    return observed_at


R = TypeVar("R")


def each_once(records: Iterable[R]) -> Iterator[R]:
    """The records, refusing a repeated vault: one upsert cannot change the same row twice."""
    seen: set[str] = set()
    for record in records:
        if record.address in seen:
            raise ValueError(f"vault {record.address} appears twice in one snapshot; pass each vault once")
        seen.add(record.address)
        yield record


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    try:
        with engine.begin() as conn:
            yield conn
    except (DBAPIError, *_MISSING) as exc:
        cause = getattr(exc, "orig", exc)  # COPY raises psycopg's own errors, unwrapped
        if isinstance(cause, _MISSING):
            raise StorageError(
                f"the app database lacks the vault tables this version expects ({str(cause).strip()}); "
                "run `vault-ingest db upgrade` against DATABASE_URL"
            ) from exc
        raise


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    with transaction(engine) as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY})
        yield conn


def stage(conn: Connection, table: Staged, rows: Iterable[Mapping[str, object]]) -> int:
    """Fill a temp table by streaming COPY (no per-row round trips) and return its row count."""
    conn.exec_driver_sql(table.ddl())
    return copy_rows(conn, table.name, table.names, rows)


class JsonText(Dumper):
    """JSON already as text (the list's `pnls`, kept as sent) into a jsonb column: jsonb's binary format is a version
    byte, 1, then the text (PostgreSQL's jsonb_recv, src/backend/utils/adt/jsonb.c). psycopg's own jsonb dumper
    would encode the str again, as one JSON string."""

    format = pq.Format.BINARY
    oid = pg_types["jsonb"].oid

    def dump(self, obj: str) -> Buffer:
        return b"\x01" + obj.encode()


def _column_types(cur, table: str) -> dict[str, int]:
    """The type (oid) of each column of `table`, by name; a missing table raises UndefinedTable."""
    return dict(cur.execute("SELECT attname, atttypid::int FROM pg_attribute "
                            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped", (table,)).fetchall())


def copy_rows(conn: Connection, table: str, names: list[str], rows: Iterable[Mapping[str, object]], *,
              binary: bool = True) -> int:
    """COPY rows into `table` and return their count. Rows are mappings by column name: a row with a missing or
    an unknown column is refused, so two columns can never be swapped by position. A jsonb column takes JSON text.
    `binary` False: in text, each value parsed by the server as its column's type."""
    expected = set(names)
    in_order = itemgetter(*names)
    count = 0
    with conn.connection.driver_connection.cursor() as cur:
        cur.adapters.register_dumper(None, JsonText)  # this cursor's jsonb columns only
        types = _column_types(cur, table)
        with cur.copy(f"COPY {table} ({cols(names)}) FROM STDIN{' (FORMAT BINARY)' * binary}") as copy:
            if binary:
                copy.set_types([types[n] for n in names])  # the COPY began: every name is a column
            for row in rows:
                if row.keys() != expected:
                    raise ValueError(f"a row for {table} has columns {sorted(row.keys() ^ expected)} "
                                     "that are missing or unknown; build rows with exactly the staged columns")
                copy.write_row(in_order(row))
                count += 1
    return count


def counts(conn: Connection, sql: str, params: Mapping[str, object] | None = None) -> WriteCounts:
    new, updated, total = conn.execute(text(sql), params or {}).one()
    return WriteCounts(new=new, updated=updated, unchanged=total - new - updated)
