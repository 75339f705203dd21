"""Shared fixtures: one real PostgreSQL per test run, a fresh database per test that asks for one."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

from emulator.runtime.postgres import PostgresServer

# One build cache for every stack of the run and of the next ones (each xdist worker, every scenario's
# `up`): an image whose lock and source are unchanged is built once, then taken from there.
os.environ.setdefault("EMULATOR_CACHE_DIR",
                      str(Path(tempfile.gettempdir()) / f"vault-ingest-emulator-cache-{os.getuid()}"))
# Prefect's telemetry writes to its SQLite database from a service loop and locks it under tests.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Every PostgreSQL the suite starts (its own, the emulated stacks') runs with fsync off, named unsafe: a crash
# may cost data the tests throw away anyway. The emulator's default stays durable, as Railway's Postgres is.
os.environ.setdefault("EMULATOR_UNSAFE_FAST_POSTGRES", "1")


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    """A superuser URL to a real PostgreSQL: `DATABASE_URL` if set, else a server started for this run.

    Its data lives outside pytest's temporary root: every pytest session, a neighbour's too, prunes old
    roots and resets the current one to mode 0700, locking out the user PostgreSQL runs as under root.
    """
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    with tempfile.TemporaryDirectory(prefix="vault-ingest-pg-") as root:
        server = PostgresServer(Path(root) / "data").start()
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """End-to-end tests first, the emulated stacks first of all. They spend much of their time waiting on
    Prefect's loops; run last, they leave a core idle at the end of the run, where run first the short
    tests fill those waits. The order within each tier stays as collected; pyproject's
    --no-loadscope-reorder keeps xdist from putting the modules with the most tests first instead."""

    def tier(item: pytest.Item) -> int:
        if item.get_closest_marker("e2e") is None:
            return 2
        if "tests/reliability/" in item.nodeid or "emulator/test_redeploy_runs" in item.nodeid:  # the longest
            return -1
        return 0 if "scenarios" in item.nodeid or "emulator/test_e2e" in item.nodeid else 1

    items.sort(key=tier)
