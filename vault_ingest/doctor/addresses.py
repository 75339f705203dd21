"""Warnings about where URLs point, before any request: what works on a laptop and fails on Railway.

- Railway's edge serves HTTPS only: "Plain HTTP GET requests will be redirected to HTTPS with a `301`
  response", and "HTTP POST requests to port 80 are redirected to HTTPS as GET requests" (railwayapp/docs
  c2a634f, `networking/public-networking/specs-and-limits.md`; `troubleshooting/405-method-not-allowed.md`). So
  `PREFECT_API_URL=http://<public domain>/api` passes the worker's and the UI's reads and fails every POST:
  polling for runs, heartbeats, state changes. Plain HTTP is right on the private network, `*.railway.internal`.
- Every Railway service is its own container, whose localhost is itself: another service is reached by its
  private domain (`${{web.RAILWAY_PRIVATE_DOMAIN}}`) or a reference to its variables (`networking/private-
  networking/how-it-works.md`). A URL in one service's variables that points at localhost for another service
  works where everything runs on one machine and on Railway reaches nothing. A loopback port that answers is
  something in this container (the service itself), so only a silent one is warned about; that also keeps
  the emulator quiet, which rewrites private names to 127.0.0.1 and a port where the other service listens.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from urllib.parse import urlsplit

from vault_ingest.doctor.report import Check, warned
from vault_ingest.urls import DATABASE_URL_VARS, is_loopback, is_railway_private, mask_url, url_host

# Variables whose URL names another service: the worker's server, the app database, Prefect's database.
OTHER_SERVICE_VARS = ("PREFECT_API_URL", "DATABASE_URL", *DATABASE_URL_VARS)
FIXES = {
    "PREFECT_API_URL": "PREFECT_API_URL=https://${{web.RAILWAY_PUBLIC_DOMAIN}}/api",
    "DATABASE_URL": "DATABASE_URL=${{Postgres.DATABASE_URL}}",
}
PREFECT_DATABASE_FIX = ("{var}=postgresql://${{{{Postgres.PGUSER}}}}:${{{{Postgres.PGPASSWORD}}}}@"
                        "${{{{Postgres.PGHOST}}}}:${{{{Postgres.PGPORT}}}}/prefect")
_DEFAULT_PORTS = {"http": 80, "https": 443, "postgres": 5432, "postgresql": 5432}
PROBE_SECONDS = 1.0


def check_api_scheme(api_url: str) -> Check | None:
    """A warning when `api_url` is plain HTTP to a public domain; None when there is nothing to say."""
    host = url_host(api_url)
    if not api_url.startswith("http://") or not host or is_loopback(host) or is_railway_private(host):
        return None
    return warned(
        "api-scheme",
        f"{mask_url(api_url)} is plain HTTP to the public domain {host}: Railway's edge answers it with a 301 to "
        "https://, which clients follow as a GET, so reads pass and every POST fails (405 Method Not Allowed): "
        "the worker never takes a run",
        "Use https:// for the public domain: PREFECT_API_URL=https://${{web.RAILWAY_PUBLIC_DOMAIN}}/api\n"
        "or plain HTTP over the private network: "
        "PREFECT_API_URL=http://${{web.RAILWAY_PRIVATE_DOMAIN}}:<web's PORT>/api",
    )


def _answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
        return True
    except OSError:
        return False


def check_loopback_urls(env: Mapping[str, str], probe=_answers) -> list[Check]:
    """A warning for each variable meant for another service that points at a silent loopback address."""
    checks = []
    for var in OTHER_SERVICE_VARS:
        value = env.get(var, "")
        host = url_host(value)
        if not is_loopback(host):
            continue
        parts = urlsplit(value)
        scheme = parts.scheme.partition("+")[0]
        try:
            port = parts.port or _DEFAULT_PORTS.get(scheme)
        except ValueError:
            continue  # a malformed port is the URL checks' to report
        if port is None or probe(host, port):
            continue
        service = env.get("RAILWAY_SERVICE_NAME", "this service")
        checks.append(warned(
            f"localhost:{var}",
            f"{var}={mask_url(value)} points at {host}, where nothing answers on port {port}: on Railway {host} is "
            f"{service}'s own container, never another service",
            "Point it at the other service with a reference variable, e.g. "
            + FIXES.get(var, PREFECT_DATABASE_FIX.format(var=var)),
        ))
    return checks
