"""Shared fixtures: one real PostgreSQL per test run, a fresh database per test that asks for one."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest

from emulator.postgres import PostgresServer

# Prefect's telemetry writes to its SQLite database from a service loop and locks it under tests.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory) -> str:
    """A superuser URL to a real PostgreSQL: `DATABASE_URL` if set, else a server started for this run."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    server = PostgresServer(tmp_path_factory.mktemp("postgres") / "data").start()
    try:
        yield server.url()
    finally:
        server.stop()


@pytest.fixture
def database_url(postgres_admin_url) -> str:
    """A new, empty database for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = postgres_admin_url.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
