"""`run_checks`: every doctor check for one deployment, as a `Report`."""

from __future__ import annotations

import os
from collections.abc import Mapping

import httpx

from vault_ingest.doctor.addresses import check_api_scheme
from vault_ingest.doctor.live import run_live
from vault_ingest.doctor.local import inside_service as detect_inside_service
from vault_ingest.doctor.local import run_local
from vault_ingest.doctor.report import Report, Status, skipped
from vault_ingest.urls import mask_url

DEFAULT_POOL = "hyperliquid-vault-ingestion"


def run_checks(
    api_url: str,
    *,
    pool: str,
    auth: str | None,
    transport: httpx.BaseTransport | None = None,
    inside_service: bool | None = None,
    env: Mapping[str, str] | None = None,
) -> Report:
    """Check the server at `api_url` (https://<domain>/api), work pool `pool` and its deployments.

    `auth` is the user:password the API gets (None: none). `transport` replaces the network, for tests.
    Inside a service (`inside_service`, detected from `env` when None) the service's own git and database
    URLs are checked too; `env` defaults to this process's environment.
    """
    env = os.environ if env is None else env
    inside = detect_inside_service(env) if inside_service is None else inside_service
    live = run_live(api_url, pool=pool, auth=auth, transport=transport)
    scheme = check_api_scheme(api_url)
    checks = ([scheme] if scheme else []) + live
    if inside:
        checks += run_local(env, api_answers=live[0].status is Status.PASS)
    else:
        checks.append(skipped("service", "not inside a Railway service (RAILWAY_SERVICE_NAME unset): git and the "
                                         "database URLs are checked when the doctor runs in the service (or --inside)"))
    return Report(api_url=mask_url(api_url), pool=pool, inside_service=inside, checks=tuple(checks))
