"""What the writer tests share: the migrated engine, table dumps, and a failure injected after a stage."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from tests.db.factories import address
from vault_ingest.db.engine import make_engine
from vault_ingest.db.migrate import upgrade
from vault_ingest.db.schema import metadata, vault_detail_values, vault_list_values, vaults


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


def confirmed(engine, n: int):
    """When the vault's current list values were last confirmed (vault_latest.list_confirmed_at)."""
    with engine.connect() as conn:
        return conn.execute(text("SELECT list_confirmed_at FROM vault_latest WHERE address = :a"),
                            {"a": address(n)}).scalar_one()


def _rows(engine, table, n: int) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(table).where(table.c.vault_address == address(n)).order_by(table.c.valid_from))
        return [dict(r._mapping) for r in rows]


def list_rows(engine, n: int) -> list[dict]:
    return _rows(engine, vault_list_values, n)


def detail_rows(engine, n: int) -> list[dict]:
    return _rows(engine, vault_detail_values, n)


class Boom(Exception):
    pass


def fail_at(stage: str):
    def after(done: str) -> None:
        if done == stage:
            raise Boom(stage)
    return after
