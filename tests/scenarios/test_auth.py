"""Scenario 5: basic auth, set up as docs/railway.md says (the stack's as-documented variant):
PREFECT_SERVER_API_AUTH_STRING on web (a generated secret here), PREFECT_API_AUTH_STRING=
${{web.PREFECT_SERVER_API_AUTH_STRING}} on the worker, and the worker's RAILWAY_DEPLOYMENT_DRAINING_SECONDS.

The API refuses requests without credentials (health stays open for Railway's healthcheck); the worker
with the reference makes the pool READY; a worker with wrong credentials says so in its log and stops.
"""

from __future__ import annotations

import pytest

from tests.scenarios.conftest import running_one
from tests.scenarios.stacks import POOL, Spec, wait_until
from vault_ingest.doctor import Status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

AUTH = Spec("as-documented", deploy=False)
REFUSED = ("start_worker.sh: error: the Prefect server refused the worker's credentials (HTTP 401). Set "
           "PREFECT_API_AUTH_STRING on the worker to the server's PREFECT_SERVER_API_AUTH_STRING")


@pytest.fixture(scope="module")
def stack(scenario_root):
    with running_one(AUTH, scenario_root) as started:
        yield started


@pytest.fixture(scope="module")
def credentials(stack) -> str:
    return stack.run("web", "printenv", "PREFECT_SERVER_API_AUTH_STRING").stdout.strip()


def test_the_api_refuses_requests_without_credentials(stack, credentials):
    with stack.api() as anonymous:
        assert anonymous.get("/health").status_code == 200
        assert anonymous.post("/work_pools/filter", json={}).status_code == 401
    with stack.api(auth=tuple(credentials.split(":", 1))) as admin:
        assert admin.post("/work_pools/filter", json={}).status_code == 200

    auth = stack.doctor().check("auth")
    assert auth.status is Status.FAIL
    assert auth.detail == "the API requires basic auth (HTTP 401 without credentials) and none were given"


def test_a_worker_with_the_servers_credentials_makes_the_pool_ready(stack, credentials):
    with stack.api(auth=tuple(credentials.split(":", 1))) as admin:
        wait_until(lambda: admin.get(f"/work_pools/{POOL}").json().get("status") == "READY", timeout=60,
                   what="the worker's pool READY")
    # `status` reads the pool with the server's own credentials, as its owner would.
    assert stack.status()["pool"]["status"] == "READY"
    report = stack.doctor(credentials)
    assert [report.check(name).status for name in ("auth", "work-pool", "workers")] == [Status.PASS] * 3


def test_a_worker_with_wrong_credentials_says_so_and_stops(stack):
    wrong = stack.run("worker", "env", "PREFECT_API_AUTH_STRING=admin:wrong", "bash", "start_worker.sh")
    assert wrong.returncode == 1
    assert REFUSED in wrong.stdout + wrong.stderr

    auth = stack.doctor("admin:wrong").check("auth")
    assert auth.status is Status.FAIL
    assert auth.detail == "wrong credentials: the API refused admin:*** (HTTP 401)"
