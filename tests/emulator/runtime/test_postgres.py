import tempfile
from pathlib import Path

import psycopg
import pytest

from emulator.runtime.postgres import PREPARED_ENV, UNSAFE_FAST_ENV, PostgresServer, postgres_server


@pytest.fixture
def tmp_path():
    # Not under pytest's basetemp: a pytest session starting meanwhile resets that tree to 0700, which locks
    # out the unprivileged user PostgreSQL runs as under root.
    with tempfile.TemporaryDirectory(prefix="emulator-pg-") as path:
        yield Path(path)


def test_data_survives_restart_and_wipe_removes_it(tmp_path):
    server = PostgresServer(tmp_path / "pg", password="s3cret-pw").start()
    try:
        with psycopg.connect(server.url()) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        server.stop()
        server.start()
        with psycopg.connect(server.url()) as conn:
            assert conn.execute("SELECT x FROM kept").fetchone() == (42,)
    finally:
        server.wipe()
    assert not (tmp_path / "pg").exists()


def test_tcp_needs_the_password(tmp_path):
    server = PostgresServer(tmp_path / "pg", password="right-one").start()
    try:
        bad = server.url().replace("right-one", "wrong-one")
        try:
            psycopg.connect(bad).close()
        except psycopg.OperationalError as exc:
            assert "password authentication failed" in str(exc)
        else:
            raise AssertionError("a wrong password was accepted")
    finally:
        server.wipe()


def settings(server: PostgresServer) -> tuple:
    with psycopg.connect(server.url()) as conn:
        return tuple(conn.execute(f"SHOW {name}").fetchone()[0] for name in ("fsync", "full_page_writes"))


def test_durable_as_railways_postgres_unless_told_it_may_be_unsafe(tmp_path, monkeypatch):
    monkeypatch.delenv(UNSAFE_FAST_ENV, raising=False)
    durable = PostgresServer(tmp_path / "pg").start()
    try:
        assert settings(durable) == ("on", "on")
    finally:
        durable.wipe()
    monkeypatch.setenv(UNSAFE_FAST_ENV, "1")
    fast = PostgresServer(tmp_path / "pg").start()
    try:
        assert settings(fast) == ("off", "off")
    finally:
        fast.wipe()
    assert PostgresServer(tmp_path / "pg", unsafe_fast=False).foreground_command()[0][-2:] == ["-k", str(
        (tmp_path / "pg").resolve())]  # said outright, it beats the environment


def test_a_new_cluster_from_the_initdb_template_has_its_own_password_and_the_template_is_made_once(tmp_path):
    cache = tmp_path / "cache"
    first = PostgresServer(tmp_path / "a", password="first-pw", template_cache=cache).start()
    try:
        (template,) = [path for path in cache.iterdir() if path.name.startswith("initdb-")]
        made = (template / "PG_VERSION").stat().st_mtime_ns
        second = PostgresServer(tmp_path / "b", password="it's-second", template_cache=cache).start()
        try:
            assert (template / "PG_VERSION").stat().st_mtime_ns == made  # copied, not made again
            assert [path.name for path in cache.iterdir()] == [template.name]  # no half-made one left
            for server, wrong in ((first, "template"), (second, "first-pw")):
                with psycopg.connect(server.url()) as conn:
                    conn.execute("CREATE TABLE mine (x int)")  # each cluster is its own
                try:
                    psycopg.connect(server.url().replace(server.password, wrong)).close()
                except psycopg.OperationalError as exc:
                    assert "password authentication failed" in str(exc)
                else:
                    raise AssertionError(f"{wrong!r} was accepted")
        finally:
            second.wipe()
    finally:
        first.wipe()


def test_a_new_volume_starts_from_the_prepared_directory_only_when_told(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    prepared = PostgresServer(tmp_path / "prepared", password="prep-pw", template_cache=cache).start()
    prepared.create_database("prefect")
    prepared.stop()
    env = {"POSTGRES_PASSWORD": "volume-pw"}
    assert postgres_server(env, tmp_path / "plain", 0, template_cache=cache).prepared is None
    monkeypatch.setenv(PREPARED_ENV, str(prepared.data_dir))
    server = postgres_server(env, tmp_path / "volume", 0, template_cache=cache).start()
    try:
        with psycopg.connect(server.url()) as conn:
            databases = {name for (name,) in conn.execute("SELECT datname FROM pg_database")}
        assert "prefect" in databases  # the prepared cluster's, with this volume's own password
    finally:
        server.wipe()
    assert postgres_server(env, tmp_path / "bare", 0).prepared is None  # no cache: initdb, as before
