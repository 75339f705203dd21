"""Waiting, without sleeps, until another session queues for an advisory lock held by the test."""

from __future__ import annotations

import time

import psycopg

_WAITERS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def wait_until_queued(holder: psycopg.Connection, timeout: float = 30) -> None:
    """Return once one session of this database waits for an advisory lock; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while holder.execute(_WAITERS).fetchone()[0] != 1:
        assert time.monotonic() < deadline, f"no session queued for the advisory lock within {timeout}s"
