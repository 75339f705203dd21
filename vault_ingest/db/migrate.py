"""Bring the app database to the newest schema with Alembic, configured in code (no alembic.ini).

Every run and every deploy may call `upgrade`; it does nothing when the schema is current.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from vault_ingest.db.engine import make_engine
from vault_ingest.errors import StorageError

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# Any fixed bigint works; it only has to be the same in every process that migrates this database.
LOCK_KEY = 0x7661756C745F6462  # b"vault_db"


def alembic_config(connection: Connection | None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection  # read by migrations/env.py
    return config


def upgrade(engine_or_url: Engine | str, revision: str = "head") -> str:
    """Migrate to `revision` (the newest by default) and return it. Safe to run from several processes at once."""
    engine = make_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    try:
        with engine.begin() as conn:
            # A worker and a deploy can start together. The transaction-scoped lock makes the second
            # wait for the first to commit, then find the schema current; DDL is transactional in
            # PostgreSQL, so a failed migration leaves nothing half-made.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            command.upgrade(alembic_config(conn), revision)
            return MigrationContext.configure(conn).get_current_revision()
    except CommandError as exc:
        raise StorageError(
            f"cannot migrate the app database: {str(exc).rstrip('. ')}. If a newer vault_ingest "
            "migrated it, deploy that version (or newer) instead."
        ) from exc
    except DBAPIError as exc:
        raise StorageError(
            f"cannot migrate the app database: {str(exc.orig).strip().rstrip('.')}. Check that DATABASE_URL "
            "points at a reachable PostgreSQL and that its user may create tables."
        ) from exc
    finally:
        if engine is not engine_or_url:
            engine.dispose()
