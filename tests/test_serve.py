"""`vault-ingest serve`: the environment it computes, and a real Prefect server started through it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from tests.support.prefect_server import WEB_AUTH, WEB_DOMAIN, clean_environ, railway_web_service

from vault_ingest import serve
from vault_ingest.urls import DATABASE_URL_VARS
from vault_ingest.errors import ConfigError



def plan(**env: str) -> serve.Launch:
    return serve.plan(env, default_host="::", python="python")


# --- the pure part -----------------------------------------------------------------------------------------


def test_listens_on_port_and_tells_prefect():
    launch = plan(PORT="8080", PREFECT_SERVER_API_PORT="4200")
    assert launch.argv == ["python", "-m", "prefect", "server", "start", "--host", "::", "--port", "8080"]
    assert launch.env["PREFECT_SERVER_API_PORT"] == "8080"
    assert launch.env["PREFECT_SERVER_API_HOST"] == "::"


def test_host_setting_wins_over_default():
    launch = plan(PREFECT_SERVER_API_HOST="127.0.0.1")
    assert launch.argv[-4:] == ["--host", "127.0.0.1", "--port", "4200"]


def test_public_domain_becomes_ui_api_url():
    assert plan(RAILWAY_PUBLIC_DOMAIN=WEB_DOMAIN).env["PREFECT_UI_API_URL"] == f"https://{WEB_DOMAIN}/api"


def test_explicit_ui_api_url_is_kept():
    launch = plan(RAILWAY_PUBLIC_DOMAIN=WEB_DOMAIN, PREFECT_UI_API_URL="https://prefect.example.com/api")
    assert launch.env["PREFECT_UI_API_URL"] == "https://prefect.example.com/api"


def test_without_domain_ui_uses_relative_api():
    assert plan().env["PREFECT_UI_API_URL"] == "/api"


@pytest.mark.parametrize("name", serve.UI_API_URL_VARS)
def test_scheme_less_ui_api_url_is_refused(name):
    with pytest.raises(ConfigError) as caught:
        plan(**{name: f"{WEB_DOMAIN}/api"})
    message = str(caught.value)
    assert name in message
    assert f"https://{WEB_DOMAIN}/api" in message


def test_domain_with_scheme_is_refused():
    with pytest.raises(ConfigError, match="RAILWAY_PUBLIC_DOMAIN"):
        plan(RAILWAY_PUBLIC_DOMAIN=f"https://{WEB_DOMAIN}")


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg", "postgresql+asyncpg"])
@pytest.mark.parametrize("name", DATABASE_URL_VARS)
def test_database_url_becomes_asyncpg(scheme, name):
    launch = plan(**{name: f"{scheme}://u:pw@db.railway.internal:5432/prefect"})
    assert launch.env[name] == "postgresql+asyncpg://u:pw@db.railway.internal:5432/prefect"
    assert launch.database_url == "postgresql://u:pw@db.railway.internal:5432/prefect"


def test_sslmode_becomes_asyncpg_ssl():
    launch = plan(PREFECT_API_DATABASE_CONNECTION_URL="postgresql://u:pw@h/prefect?sslmode=require&application_name=x")
    assert launch.env["PREFECT_API_DATABASE_CONNECTION_URL"].endswith("/prefect?ssl=require&application_name=x")
    assert launch.database_url.endswith("?sslmode=require&application_name=x")


def test_sqlite_url_is_left_alone():
    url = "sqlite+aiosqlite:////data/prefect.db"
    launch = plan(PREFECT_API_DATABASE_CONNECTION_URL=url)
    assert launch.env["PREFECT_API_DATABASE_CONNECTION_URL"] == url
    assert launch.database_url is None


@pytest.mark.parametrize("url", ["mysql://u:pw@h/db", "db.railway.internal:5432/prefect"])
def test_unusable_database_url_is_refused(url):
    with pytest.raises(ConfigError, match="PREFECT_API_DATABASE_CONNECTION_URL"):
        plan(PREFECT_API_DATABASE_CONNECTION_URL=url)


def test_notes_mask_secrets():
    launch = plan(
        PREFECT_API_DATABASE_CONNECTION_URL="postgresql://u:hunter2@h/prefect", PREFECT_SERVER_API_AUTH_STRING=WEB_AUTH
    )
    notes = "\n".join(launch.notes)
    assert "hunter2" not in notes and WEB_AUTH not in notes
    assert "u:***@h" in notes and "basic auth on" in notes


@pytest.mark.parametrize("bad", [{"PORT": "web"}, {"PORT": "70000"}, {"PREFECT_SERVER_API_AUTH_STRING": " "}])
def test_bad_values_are_refused(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        plan(**bad)


def test_leases_live_where_the_slot_counters_do():
    postgres = plan(PREFECT_API_DATABASE_CONNECTION_URL="postgresql://u:pw@h/prefect")
    assert postgres.env[serve.LEASE_STORAGE_VAR] == "vault_ingest.leases"
    assert plan().env[serve.LEASE_STORAGE_VAR] == serve.FILESYSTEM_LEASES  # SQLite in PREFECT_HOME: files beside it


def test_memory_leases_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="AwaitingConcurrencySlot; unset it"):
        plan(**{serve.LEASE_STORAGE_VAR: serve.MEMORY_LEASES})


@pytest.mark.parametrize("home, volume", [("/app/.prefect", None), ("/app/.prefect", "/data"), (None, "/data")])
def test_filesystem_leases_off_a_volume_on_railway_are_refused(home, volume):
    env = {serve.LEASE_STORAGE_VAR: serve.FILESYSTEM_LEASES, "RAILWAY_SERVICE_ID": "s"}
    env.update({"PREFECT_HOME": home} if home else {})
    env.update({"RAILWAY_VOLUME_MOUNT_PATH": volume} if volume else {})
    with pytest.raises(ConfigError, match="fresh filesystem, so a redeploy loses them"):
        plan(**env)


def test_filesystem_leases_on_a_volume_or_off_railway_are_kept():
    on_volume = plan(**{serve.LEASE_STORAGE_VAR: serve.FILESYSTEM_LEASES, "RAILWAY_SERVICE_ID": "s",
                        "PREFECT_HOME": "/data/prefect", "RAILWAY_VOLUME_MOUNT_PATH": "/data"})
    assert on_volume.env[serve.LEASE_STORAGE_VAR] == serve.FILESYSTEM_LEASES
    assert plan(**{serve.LEASE_STORAGE_VAR: "prefect_redis.lease_storage"}).env[serve.LEASE_STORAGE_VAR] == (
        "prefect_redis.lease_storage")


def test_host_and_port_arguments_are_refused():
    with pytest.raises(ConfigError, match="PORT"):
        serve.plan({}, ["--port", "9999"])


# --- a real server through the launcher ------------------------------------------------------------------


@pytest.fixture(scope="module")
def web(request):
    return railway_web_service(request)


@pytest.fixture(scope="module")
def server(web):
    return web.server


def test_ui_settings_point_the_browser_at_the_public_domain(server):
    with server.http() as http:
        settings = http.get("/ui-settings").json()
    assert settings["api_url"] == f"https://{WEB_DOMAIN}/api"
    assert settings["auth"] == "BASIC"


def test_server_runs_on_postgresql(server, web):
    with psycopg.connect(web.database_url) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"alembic_version", "deployment", "work_pool"} <= tables
    with server.http() as http:
        assert http.post("/api/work_pools/", json={"name": "on-postgres", "type": "process"}).status_code == 201
    with psycopg.connect(web.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM work_pool WHERE name = 'on-postgres'").fetchone() == (1,)


def test_basic_auth_is_on(server):
    with server.http() as http:
        assert http.post("/api/flows/filter", json={}).status_code == 200
    assert httpx.post(f"{server.api_url}/flows/filter", json={}).status_code == 401
    assert httpx.get(f"{server.api_url}/health").status_code == 200  # Railway's healthcheck needs no credentials


def test_launcher_execs_the_server(server):
    cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes().split(b"\0")
    assert [b"-m", b"prefect", b"server", b"start"] == cmdline[1:5]


def test_log_masks_secrets(server, web):
    log = server.log()
    assert WEB_AUTH not in log
    if web.database_url:
        assert "vault-ingest serve: database postgresql+asyncpg://postgres:***@" in log
        assert f":{urlsplit(web.database_url).password}@" not in log


def test_scheme_less_value_stops_the_launcher(tmp_path):
    env = clean_environ(PREFECT_HOME=str(tmp_path), PREFECT_UI_API_URL=f"{WEB_DOMAIN}/api", PORT="8080")
    result = subprocess.run(
        [sys.executable, "-m", "vault_ingest.cli", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert f"PREFECT_UI_API_URL='{WEB_DOMAIN}/api' has no http(s):// scheme" in result.stderr
    assert f"Set PREFECT_UI_API_URL=https://{WEB_DOMAIN}/api" in result.stderr
