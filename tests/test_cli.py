"""`vault-ingest` as a user runs it: a real process, a real database, the replay server for the API."""

import json
import os
import subprocess
import sys

import psycopg
import pytest

from tests.support.replay import hyperliquid_env, replay_server


def cli(*args, env):
    return subprocess.run([sys.executable, "-m", "vault_ingest.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


@pytest.fixture
def replay():
    with replay_server() as server:
        yield server


def test_run_both_flows_without_a_server(database_url, replay):
    # one of the cassettes' five detailed vaults answers null: 20 %, over the default threshold of 10 %
    env = {"DATABASE_URL": database_url, "INGEST_MAX_BAD_FRACTION": "0.25", **hyperliquid_env(replay)}
    listed = cli("run", "sync-vaults", env=env)
    assert listed.returncode == 0, listed.stderr
    counts = json.loads(listed.stdout)
    assert counts["new"] > 10 and counts["failed"] == 0
    details = cli("run", "sync-vault-details", "--max-vaults", "5", env=env)
    assert details.returncode == 0, details.stderr
    assert json.loads(details.stdout)["not_found"] == 1
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM vaults").fetchone()[0] == counts["new"]
        assert conn.execute("SELECT count(*) FROM vault_history").fetchone()[0] > 100


def test_a_run_with_too_many_bad_vaults_fails_and_says_why(database_url, replay):
    env = {"DATABASE_URL": database_url, **hyperliquid_env(replay)}
    assert cli("run", "sync-vaults", env=env).returncode == 0
    details = cli("run", "sync-vault-details", "--max-vaults", "5", env=env)
    assert details.returncode != 0
    assert "1 of 5 vaults were skipped, failed or not found" in details.stderr
    assert "INGEST_MAX_BAD_FRACTION" in details.stderr


def test_missing_database_url_is_named(replay):
    env = {**hyperliquid_env(replay), "DATABASE_URL": ""}
    result = cli("run", "sync-vaults", env=env)
    assert result.returncode == 2
    assert "DATABASE_URL is not set" in result.stderr


def test_bad_weight_budget_is_named(database_url, replay):
    env = {"DATABASE_URL": database_url, **hyperliquid_env(replay), "HYPERLIQUID_WEIGHT_PER_MINUTE": "lots"}
    result = cli("run", "sync-vaults", env=env)
    assert result.returncode == 2
    assert "HYPERLIQUID_WEIGHT_PER_MINUTE='lots'" in result.stderr


def test_db_upgrade_reports_the_revision_and_is_repeatable(database_url):
    for _ in range(2):
        result = cli("db", "upgrade", env={"DATABASE_URL": database_url})
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("app database at revision ")


def test_password_never_printed(replay, postgres_admin_url):
    # An unreachable database: the error must not echo the URL's password.
    env = {**hyperliquid_env(replay), "DATABASE_URL": "postgresql://app:hunter2-secret@127.0.0.1:1/app"}
    result = cli("run", "sync-vaults", env=env)
    assert result.returncode != 0
    assert "hunter2-secret" not in result.stdout + result.stderr
