"""The app database's SQLAlchemy engine, on the psycopg 3 driver."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine

from vault_ingest.config import app_database_url


def make_engine(database_url: str) -> Engine:
    # Hosted Postgres (Railway's included) drops idle connections between hourly runs; a pre-ping
    # swaps a dead pooled connection for a new one instead of failing the run's first query.
    return create_engine(app_database_url(database_url), pool_pre_ping=True)
