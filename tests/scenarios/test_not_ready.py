"""Scenario 1: the work pool and its deployments are NOT_READY until a worker polls them (prefect.md §1).

Broken: no worker service at all; or a worker service without a custom start command, which runs the
Procfile's `web` (Railway's builders pick `web`). The shipped start command, `bash start_worker.sh`, makes
both READY within seconds, and once it stops the foreman turns them NOT_READY again (fast foreman settings,
stacks.NOT_READY_QUICKLY). The shipped worker service itself: test_shipped.py.
"""

from __future__ import annotations

import pytest

from tests.scenarios.conftest import running, up_output
from tests.scenarios.stacks import DEPLOYMENTS, NOT_READY_QUICKLY, POOL, Spec, wait_until
from tests.support.prefect_server import stop_process_group
from vault_ingest.doctor import Status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

NO_WORKER = Spec("no-worker", first_run_timeout=1, variables=NOT_READY_QUICKLY)
WORKER_RUNS_WEB = Spec("worker-runs-web", first_run_timeout=1, variables=NOT_READY_QUICKLY)
READY_WITHIN = 60  # start_worker.sh waits for the server, then Prefect's worker imports and sends a heartbeat
# Offline after 3 missed heartbeats (2 s each) plus a foreman loop (1 s); a deployment after 5 s unpolled.
NOT_READY_WITHIN = 30


@pytest.fixture(scope="module")
def broken(scenario_root):
    with running([NO_WORKER, WORKER_RUNS_WEB], scenario_root) as stacks:
        for stack in stacks.values():
            # The services and the deploy went fine; the first run has no worker to take it.
            assert stack.up_result.returncode == 1, up_output(stack)
            assert "is still, after 1s, Scheduled" in stack.project()["message"], up_output(stack)
        yield stacks


def test_without_a_worker_service_the_pool_and_deployments_stay_not_ready(broken):
    stack = broken[NO_WORKER.name]
    assert "worker" not in stack.status()["services"]
    assert stack.all_ready("NOT_READY")
    first_run = stack.first_run()["id"]
    with stack.api() as api:
        wait_until(lambda: api.get(f"/flow_runs/{first_run}").json()["state"]["name"] == "Late", timeout=60,
                   what="the first run to go Late")

    report = stack.doctor()
    assert report.check("workers").status is Status.FAIL
    assert f"no worker has ever polled pool {POOL!r}" in report.check("workers").detail
    assert "Add the `worker` service" in report.check("workers").fix
    assert "no worker has ever polled it" in report.check("work-pool").detail
    for name in DEPLOYMENTS:
        assert report.check(f"deployment:{name}").detail == f"{name} is NOT_READY: no worker polls its pool"


def test_a_worker_service_without_a_start_command_runs_web_and_the_pool_stays_not_ready(broken):
    stack = broken[WORKER_RUNS_WEB.name]
    assert "↳ Found web command in Procfile" in stack.log("worker", "build")
    assert "$ vault-ingest serve" in stack.log("worker", "build")
    assert "vault-ingest serve: listening on" in stack.log("worker")  # a second Prefect server, not a worker
    assert stack.service_state("worker") == "Active"  # Railway shows nothing wrong with the service itself
    assert stack.all_ready("NOT_READY")
    with stack.api() as api:
        assert api.post(f"/work_pools/{POOL}/workers/filter", json={}).json() == []

    workers = stack.doctor().check("workers")
    assert workers.status is Status.FAIL
    assert "`↳ Found web command in Procfile`" in workers.fix and "`bash start_worker.sh`" in workers.fix


def test_the_shipped_start_command_makes_them_ready_and_a_stopped_worker_not_ready_again(broken, tmp_path):
    stack = broken[WORKER_RUNS_WEB.name]
    with stack.api() as api:  # the first run would keep the worker draining at its stop; it is not the point
        api.delete(f"/flow_runs/{stack.first_run()['id']}").raise_for_status()

    # The worker service's variables and runtime with the Custom Start Command the stack file ships.
    worker = stack.spawn("worker", "bash", "start_worker.sh", log=tmp_path / "worker.log")
    wait_until(stack.all_ready, timeout=READY_WITHIN, what="the pool and deployments READY")
    assert stack.doctor().ok

    # As Railway stops a service: SIGTERM, SIGKILL after the draining seconds. (Prefect's worker usually exits
    # on SIGTERM within a second; under load its shutdown has hung for longer than 30 s.)
    stop_process_group(worker)
    wait_until(lambda: stack.all_ready("NOT_READY"), timeout=NOT_READY_WITHIN,
               what="the pool and deployments NOT_READY")
    workers = stack.doctor().check("workers")
    assert workers.status is Status.FAIL and "all OFFLINE" in workers.detail
