"""Scenario 4: Prefect's database URL must name the asyncpg driver (prefect.md §4.2).

Broken: Railway's `${{Postgres.DATABASE_URL}}` (postgresql://) handed to a raw `prefect server start`: the
server exits at startup, Railway restarts it until the policy gives up and the service ends Crashed.
Shipped: `vault-ingest serve` rewrites the same kind of URL to postgresql+asyncpg:// and web is Active
(test_shipped.py).
"""

from __future__ import annotations

import pytest

from emulator.model.stack import load_stack
from tests.scenarios.conftest import running_one
from tests.scenarios.stacks import STACK_FILE, Spec, wait_until
from vault_ingest.doctor import Status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

RAW = Spec("raw-database-url", services=("web",))  # web and its Postgres
# SQLAlchemy 2.1 picks psycopg (v3, installed) for postgresql://, and Prefect hands it asyncpg's arguments.
DRIVER_ERROR = 'invalid connection option "timeout"'
RESTARTS = load_stack(STACK_FILE, RAW.variant).services["web"].restart_max_retries  # the variant's policy


@pytest.fixture(scope="module")
def raw(scenario_root):
    with running_one(RAW, scenario_root) as stack:
        yield stack


def test_railways_database_url_crashes_a_raw_prefect_server(raw):
    wait_until(lambda: raw.service_state("web") == "Crashed", timeout=240, what="web to be Crashed")
    log = raw.log("web")
    assert DRIVER_ERROR in log
    assert log.count("Starting Container") == RESTARTS + 1
    assert f"after {RESTARTS} restart{'s' * (RESTARTS != 1)}: Crashed" in log
    assert raw.status()["services"]["web"]["replicas"]["web"]["exit_code"] != 0
    assert raw.run("web", "printenv", "PREFECT_API_DATABASE_CONNECTION_URL").stdout.startswith("postgresql://")

    api = raw.doctor().check("api")
    assert api.status is Status.FAIL and "answered HTTP 502" in api.detail
    assert "postgresql:// URL exits at startup" in api.fix
    database = raw.doctor_inside("web", "--api-url", raw.public_api_url)["prefect-database-url"]
    assert database["status"] == "fail" and "and the API does not answer" in database["detail"]
    assert "postgresql+asyncpg://" in database["fix"]
