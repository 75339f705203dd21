"""`vault-ingest serve`: the Prefect server as Railway's `web` service.

Railway gives the service a port (`$PORT`), a public HTTPS domain and `postgresql://` database URLs. Prefect
wants host and port in its settings (the UI's API URL falls back to them, not to `--port`), a UI API URL
with a scheme, and `postgresql+asyncpg://`. `plan` turns the first into the second without side effects;
`main` creates the Prefect database if it is missing, then replaces itself with `prefect server start`, so
Railway's SIGTERM reaches the server.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import NoReturn
from urllib.parse import unquote, urlsplit, urlunsplit

from vault_ingest.errors import ConfigError
from vault_ingest.urls import DATABASE_URL_VARS, asyncpg_url, libpq_url, mask_url

DEFAULT_PORT = 4200
# Not `::`: uvicorn listens through asyncio, which makes an IPv6 socket IPv6-only, so Railway's healthcheck
# and edge, which reach $PORT over IPv4, get "connection refused". Legacy environments whose private network
# is IPv6-only need PREFECT_SERVER_API_HOST=:: and the worker pointed at the public domain.
DEFAULT_HOST = "0.0.0.0"
UI_API_URL_VARS = ("PREFECT_UI_API_URL", "PREFECT_SERVER_UI_API_URL")

# Where the server keeps its concurrency leases (docs/railway.md, "Concurrency slots"). They must live as long
# as the slot counters in the Prefect database: in it when it is PostgreSQL, beside it (PREFECT_HOME) with SQLite.
LEASE_STORAGE_VAR = "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"
MEMORY_LEASES = "prefect.server.concurrency.lease_storage.memory"
FILESYSTEM_LEASES = "prefect.server.concurrency.lease_storage.filesystem"
DATABASE_LEASES = "vault_ingest.leases"
_RAILWAY_MARKERS = ("RAILWAY_SERVICE_ID", "RAILWAY_ENVIRONMENT_ID", "RAILWAY_PROJECT_ID")


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]
    database_url: str | None = None  # the Prefect database as libpq takes it, when it is PostgreSQL
    notes: list[str] = field(default_factory=list)  # what was decided, secrets masked


def _port(env: Mapping[str, str]) -> tuple[int, str]:
    """The port and where it came from. Railway routes to `$PORT`, so it beats Prefect's own setting."""
    source = next((name for name in ("PORT", "PREFECT_SERVER_API_PORT") if env.get(name)), None)
    raw = env[source] if source else str(DEFAULT_PORT)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"{source}={raw!r} is not a TCP port; set it to a number such as 4200, or unset it")
    return int(raw), source or "default"


def _ui_api_url(env: Mapping[str, str]) -> tuple[str | None, str]:
    """The UI API URL to set (None: keep the user's, which is valid) and a note saying where it came from."""
    for name in UI_API_URL_VARS:
        value = env.get(name)
        if not value:
            continue
        parts = urlsplit(value)
        if value.startswith("/") or (parts.scheme in ("http", "https") and parts.netloc):
            return None, f"UI API URL {value} (from {name})"
        raise ConfigError(
            f"{name}={value!r} has no http(s):// scheme, so the browser treats it as a path on the current "
            "page and every API call returns 404 (a blank UI). "
            f"Set {name}=https://{value.split('://')[-1].lstrip('/')}, or unset it: with RAILWAY_PUBLIC_DOMAIN "
            "set, `vault-ingest serve` derives https://<domain>/api"
        )
    domain = env.get("RAILWAY_PUBLIC_DOMAIN", "").strip().rstrip("/")
    if domain:
        if "://" in domain or "/" in domain:
            raise ConfigError(
                f"RAILWAY_PUBLIC_DOMAIN={domain!r} should be a bare host name such as my-app.up.railway.app; "
                "Railway sets it by itself once the service has a public domain, so remove your override"
            )
        return f"https://{domain}/api", f"UI API URL https://{domain}/api (from RAILWAY_PUBLIC_DOMAIN)"
    # Without a public domain the browser can only use the host it loaded the page from.
    return "/api", "UI API URL /api (no RAILWAY_PUBLIC_DOMAIN: relative to the page)"


def _lease_storage(env: Mapping[str, str], postgres: bool) -> tuple[str, str]:
    """The lease storage module and a note; ConfigError for one that a restart or a redeploy would empty."""
    chosen = env.get(LEASE_STORAGE_VAR, "").strip()
    if not chosen:
        if postgres:
            return DATABASE_LEASES, f"concurrency leases in the Prefect database ({DATABASE_LEASES})"
        return FILESYSTEM_LEASES, "concurrency leases in PREFECT_HOME, beside the SQLite database"
    if chosen == MEMORY_LEASES:
        raise ConfigError(
            f"{LEASE_STORAGE_VAR}={chosen} forgets every lease when web restarts or redeploys, so a run that dies "
            "then keeps its deployment's concurrency slot for good and later runs wait in AwaitingConcurrencySlot; "
            f"unset it (`vault-ingest serve` keeps leases in the Prefect database)"
        )
    if chosen == FILESYSTEM_LEASES and any(env.get(name) for name in _RAILWAY_MARKERS):
        home = str(PurePosixPath(env.get("PREFECT_HOME") or "~/.prefect"))
        volume = env.get("RAILWAY_VOLUME_MOUNT_PATH", "").rstrip("/")
        if not volume or not (home == volume or home.startswith(volume + "/")):
            raise ConfigError(
                f"{LEASE_STORAGE_VAR}={chosen} keeps leases in PREFECT_HOME ({home}), which "
                + (f"is outside web's volume ({volume})" if volume else "is on no volume")
                + ": Railway starts every deployment with a fresh filesystem, so a redeploy loses them. Unset "
                f"{LEASE_STORAGE_VAR} (`vault-ingest serve` keeps leases in the Prefect database), or set "
                "PREFECT_HOME to a path under a volume mounted on web"
            )
    return chosen, f"concurrency leases in {chosen} (from {LEASE_STORAGE_VAR})"


def plan(
    env: Mapping[str, str],
    extra_args: Sequence[str] = (),
    *,
    default_host: str = DEFAULT_HOST,
    python: str = sys.executable,
) -> Launch:
    """The environment and command line that start the Prefect server for `env`. No side effects."""
    for arg in extra_args:
        if arg.split("=")[0] in ("--host", "--port"):
            raise ConfigError(
                f"`vault-ingest serve {arg}`: the address comes from PORT and PREFECT_SERVER_API_HOST; "
                "set those instead, so the UI and the server agree"
            )
    out = dict(env)
    notes = []

    host = env.get("PREFECT_SERVER_API_HOST") or default_host
    port, port_source = _port(env)
    stale = env.get("PREFECT_SERVER_API_PORT")
    if port_source == "PORT" and stale and stale != str(port):
        notes.append(f"PREFECT_SERVER_API_PORT={stale} replaced by PORT={port} (Railway routes to $PORT)")
    out["PREFECT_SERVER_API_HOST"] = host
    out["PREFECT_SERVER_API_PORT"] = str(port)
    notes.append(f"listening on {host} port {port} (from {port_source})")

    ui_url, ui_note = _ui_api_url(env)
    if ui_url is not None:
        out["PREFECT_UI_API_URL"] = ui_url
    notes.append(ui_note)

    database_url = None
    for name in DATABASE_URL_VARS:
        if env.get(name):
            out[name] = asyncpg_url(name, env[name])
            if out[name].startswith("postgresql+asyncpg://"):
                database_url = libpq_url(out[name])
            notes.append(f"database {mask_url(out[name])} (from {name})")
    if not any(env.get(name) for name in DATABASE_URL_VARS):
        notes.append("database: SQLite in PREFECT_HOME (set PREFECT_API_DATABASE_CONNECTION_URL for PostgreSQL)")

    out[LEASE_STORAGE_VAR], lease_note = _lease_storage(env, postgres=database_url is not None)
    notes.append(lease_note)

    if "PREFECT_SERVER_API_AUTH_STRING" in env:
        if not env["PREFECT_SERVER_API_AUTH_STRING"].strip():
            raise ConfigError(
                "PREFECT_SERVER_API_AUTH_STRING is set but empty; set it to user:password, or delete it to run "
                "without basic auth"
            )
        notes.append("basic auth on (PREFECT_SERVER_API_AUTH_STRING); clients need PREFECT_API_AUTH_STRING")

    argv = [python, "-m", "prefect", "server", "start", "--host", host, "--port", str(port), *extra_args]
    return Launch(argv=argv, env=out, database_url=database_url, notes=notes)


def ensure_database(libpq_url: str) -> bool:
    """Create the database `libpq_url` names if it does not exist yet; True when it was created.

    Prefect and the app each run Alembic with its default `alembic_version` table, so they cannot share one
    database; this lets the Prefect database live on the same Railway Postgres under its own name.
    """
    import psycopg
    from psycopg import sql

    try:
        psycopg.connect(libpq_url, connect_timeout=10).close()
        return False
    except psycopg.OperationalError as exc:
        problem = str(exc).strip()  # libpq reports no SQLSTATE at connect time, so look before creating
    parts = urlsplit(libpq_url)
    name = unquote(parts.path.lstrip("/"))
    try:
        with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True, connect_timeout=10) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                return True
    except psycopg.errors.DuplicateDatabase:
        return False  # another replica created it first
    except psycopg.Error:
        pass  # the first error is the one that explains
    raise ConfigError(
        f"cannot connect to the Prefect database {mask_url(libpq_url)}: {problem}. Check that the Postgres service "
        "is up and that host, port, user and password in PREFECT_API_DATABASE_CONNECTION_URL are right; a missing "
        f"database is created when the user may, otherwise run CREATE DATABASE \"{name}\" yourself"
    )


def main(extra_args: Sequence[str] = ()) -> NoReturn:
    launch = plan(os.environ, extra_args)
    for note in launch.notes:
        print(f"vault-ingest serve: {note}", file=sys.stderr)
    if launch.database_url and ensure_database(launch.database_url):
        print(f"vault-ingest serve: created database {mask_url(launch.database_url)}", file=sys.stderr)
    sys.stderr.flush()
    os.execvpe(launch.argv[0], launch.argv, launch.env)
