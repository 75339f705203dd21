"""Alembic environment: migrations run on the connection that vault_ingest.db.migrate hands over."""

from __future__ import annotations

from alembic import context

from vault_ingest.db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "vault_ingest migrations have no alembic.ini; run them with `vault-ingest db upgrade` "
        "or vault_ingest.db.migrate.upgrade(engine_or_url)"
    )
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
