"""Checks of the service the doctor runs in: what the API cannot show (git on PATH, database URLs, URLs that
point at this container for another service)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from vault_ingest.config import app_database_url
from vault_ingest.doctor.addresses import check_loopback_urls
from vault_ingest.doctor.report import Check, failed, passed, skipped, warned
from vault_ingest.errors import ConfigError
from vault_ingest.urls import DATABASE_URL_VARS, asyncpg_url, mask_url

CONNECT_TIMEOUT_SECONDS = 5

GIT_MISSING_FIX = (
    "Railpack: keep railpack.json (deploy.aptPackages: [\"...\", \"git\"]) at the repo root,\n"
    "  or, only without that file's list, set RAILPACK_DEPLOY_APT_PACKAGES=git on the service.\n"
    "Dockerfile: build the worker from Dockerfile.worker (RAILWAY_DOCKERFILE_PATH=Dockerfile.worker).\n"
    "Or set WORKER_INSTALL_GIT=1 to apt-get install git at every start (root images only)."
)
PREFECT_URL_FIX = (
    "Start web with `vault-ingest serve` (the Procfile's web line), which rewrites it at start,\n"
    "or write the URL as postgresql+asyncpg://user:password@host:port/prefect."
)
APP_URL_FIX = "On the worker set DATABASE_URL=${{Postgres.DATABASE_URL}} (Railway's reference to the Postgres service)."


def inside_service(env: Mapping[str, str]) -> bool:
    """Railway sets RAILWAY_SERVICE_NAME in every service's environment (and `railway run` copies it)."""
    return bool(env.get("RAILWAY_SERVICE_NAME"))


def check_git(env: Mapping[str, str], app_dir: Path | None = None) -> Check:
    git = shutil.which("git", path=env.get("PATH", os.defpath))
    if git:
        return passed("git", f"git at {git}")
    detail = "git is not on PATH: every flow run's git_clone pull step would Crash"
    listed = _railpack_deploy_apt_packages(app_dir or Path.cwd())
    if listed is not None and env.get("RAILPACK_DEPLOY_APT_PACKAGES", "").strip():
        # Railpack's GetConfig merges railpack.json over the RAILPACK_* variables, and says nothing.
        detail += (f". RAILPACK_DEPLOY_APT_PACKAGES={env['RAILPACK_DEPLOY_APT_PACKAGES'].strip()} is ignored: "
                   f"railpack.json sets deploy.aptPackages to {json.dumps(listed)}, and the file's list wins")
        return failed("git", detail, 'Add git to railpack.json: "deploy": {"aptPackages": ["...", "git"]}\n'
                      + GIT_MISSING_FIX)
    return failed("git", detail, GIT_MISSING_FIX)


def _railpack_deploy_apt_packages(app_dir: Path) -> list | None:
    """railpack.json's deploy.aptPackages in the service's app directory (Railpack's /app), or None."""
    try:
        config = json.loads((app_dir / "railpack.json").read_text())
    except (OSError, ValueError):  # none, or with comments: then the doctor cannot tell
        return None
    packages = (config.get("deploy") or {}).get("aptPackages") if isinstance(config, dict) else None
    return packages if isinstance(packages, list) else None


def check_prefect_database_url(env: Mapping[str, str], api_answers: bool) -> Check:
    """Prefect's server needs postgresql+asyncpg://; `vault-ingest serve` rewrites Railway's postgresql://."""
    name = "prefect-database-url"
    var = next((var for var in DATABASE_URL_VARS if env.get(var)), None)
    if var is None:
        return skipped(name, f"{DATABASE_URL_VARS[0]} not set (a worker needs none; a server uses SQLite)")
    value = env[var]
    try:
        asyncpg_url(var, value)
    except ConfigError as exc:
        return failed(name, str(exc), PREFECT_URL_FIX)
    shown = f"{var}={mask_url(value)}"
    scheme = value.partition("://")[0]
    if scheme == "postgresql+asyncpg" or scheme.startswith("sqlite"):
        return passed(name, f"{shown}: a driver Prefect's server uses as is")
    consequence = (f"{scheme}:// makes a plain `prefect server start` exit at startup (`invalid connection option "
                   "\"timeout\"` or `Can't load plugin`); `vault-ingest serve` rewrites it to postgresql+asyncpg://")
    if api_answers:
        return passed(name, f"{shown}: fine when the server starts through `vault-ingest serve`, as it does here if "
                            f"this is web; {consequence}")
    return failed(name, f"{shown} and the API does not answer: {consequence}", PREFECT_URL_FIX)


def check_app_database_url(env: Mapping[str, str]) -> Check:
    """DATABASE_URL is what the flow runs write to; it must parse and accept a connection."""
    import psycopg

    name = "database-url"
    value = env.get("DATABASE_URL")
    if not value:
        return warned(name, "DATABASE_URL is not set: flow runs a worker starts here fail with `DATABASE_URL is not "
                            "set` (fine on web)", APP_URL_FIX)
    try:
        app_database_url(value)
    except ConfigError as exc:
        return failed(name, str(exc), APP_URL_FIX)
    libpq_url = "postgresql://" + value.partition("://")[2]
    try:
        psycopg.connect(libpq_url, connect_timeout=CONNECT_TIMEOUT_SECONDS).close()
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        password = urlsplit(value).password
        if password:  # libpq does not echo it today; the doctor must never print it either way
            reason = reason.replace(password, "***")
        return failed(name, f"cannot connect to {mask_url(value)}: {reason}",
                      f"{APP_URL_FIX}\nCheck that the Postgres service is running.")
    return passed(name, f"{mask_url(value)} accepts connections")


def run_local(env: Mapping[str, str], *, api_answers: bool) -> list[Check]:
    return [check_git(env), *check_loopback_urls(env), check_prefect_database_url(env, api_answers),
            check_app_database_url(env)]
