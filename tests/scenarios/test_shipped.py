"""The shipped configuration, railway.stack.toml as it is, in one stack: the healthy side of each scenario,
and the doctor's clean pass. Scenario 6, a worker killed in the middle of a run, is the fault matrix's
worker-SIGKILL fault (tests/reliability/test_stops.py), on the same shipped stack file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.scenarios.browser import page, screenshot, shows, visible_lines
from tests.scenarios.conftest import running_one
from tests.scenarios.stacks import (
    DEPLOYMENTS, POOL, ROOT, VAULTS, Spec, Stack, wait_until,
)
from vault_ingest.doctor import Status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SHIPPED = Spec()
DETAILS = DEPLOYMENTS[1]
LIVE_CHECKS = {"api", "ui-api-url", "auth", "work-pool", "workers",
               *(f"deployment:{name}" for name in DEPLOYMENTS), *(f"last-run:{name}" for name in DEPLOYMENTS)}


@pytest.fixture(scope="module")
def shipped(scenario_root) -> Iterator[Stack]:
    with running_one(SHIPPED, scenario_root) as stack:
        yield stack


# -- scenario 1: the worker service makes the pool and deployments READY

def test_the_worker_service_makes_the_pool_and_deployments_ready(shipped):
    wait_until(shipped.all_ready, timeout=30, what="the pool and deployments READY")
    assert shipped.service_state("worker") == "Active"
    assert "$ bash start_worker.sh" in shipped.log("worker", "build")


# -- scenario 2: the UI calls the API through the public domain

def test_the_launcher_gives_a_dashboard_that_lists_the_deployments(shipped, browser, artifacts):
    assert shipped.ui_settings()["api_url"] == shipped.public_api_url
    with page(browser, f"{shipped.ui_url}/v2/dashboard") as dashboard:
        shows(dashboard, "Active Work Pools")
        shows(dashboard, POOL)
        assert not {"Unable to connect to Prefect server", "Something went wrong"} & visible_lines(dashboard)
        screenshot(dashboard, artifacts, "shipped-dashboard")
    with page(browser, f"{shipped.ui_url}/v2/deployments") as listing:
        shows(listing, "2 Deployments")
        for flow in (name.partition("/")[0] for name in DEPLOYMENTS):
            shows(listing, flow)
        names = {part for name in DEPLOYMENTS for part in name.split("/")}
        assert names <= visible_lines(listing)
        screenshot(listing, artifacts, "shipped-deployments")


# -- scenario 3: Railpack with git in deploy.aptPackages runs the flows

def test_railpack_with_git_in_deploy_apt_packages_completes_a_run_with_rows(shipped):
    assert "git" in json.loads((ROOT / "railpack.json").read_text())["deploy"]["aptPackages"]
    assert "↳ Using config file `railpack.json`" in shipped.log("worker", "build")
    first_run = shipped.first_run()
    assert first_run["state"] == "Completed"
    assert first_run["vaults"] and shipped.count(VAULTS) == first_run["vaults"]
    assert shipped.doctor_inside("worker")["git"]["status"] == "pass"


# -- scenario 4: the launcher turns Railway's postgresql:// URL into one Prefect can use

def test_the_launcher_rewrites_the_database_url_and_web_is_active(shipped):
    assert shipped.service_state("web") == "Active"
    assert shipped.run("web", "printenv", "PREFECT_API_DATABASE_CONNECTION_URL").stdout.startswith("postgresql://")
    assert "vault-ingest serve: database postgresql+asyncpg://" in shipped.log("web")
    assert "[1/1] Healthcheck succeeded!" in shipped.log("web", "build")


# -- vault-ingest doctor passes, from a laptop and inside the services

def test_doctor_passes_from_a_laptop(shipped):
    # READY is the foreman's view of a second ago; a heartbeat late on a busy machine may flip it for a moment.
    report = wait_until(lambda: (found := shipped.doctor()).ok and found, timeout=30, what="a passing doctor")
    statuses = {check.name: check.status for check in report.checks}
    assert LIVE_CHECKS <= set(statuses)
    # No sync-vault-details run has finished yet; the service checks need --inside.
    assert {(name, status) for name, status in statuses.items() if status is not Status.PASS} <= {
        (f"last-run:{DETAILS}", Status.SKIP), ("service", Status.SKIP)}


def test_doctor_passes_inside_the_worker_and_web(shipped):
    worker = shipped.doctor_inside("worker")
    assert {name: check["status"] for name, check in worker.items()
            if check["status"] != "pass"} == {f"last-run:{DETAILS}": "skip", "prefect-database-url": "skip"}
    web = shipped.doctor_inside("web", "--api-url", shipped.public_api_url)
    assert {name: check["status"] for name, check in web.items()
            if check["status"] != "pass"} == {f"last-run:{DETAILS}": "skip", "database-url": "warn"}
    assert "fine on web" in web["database-url"]["detail"]  # the app database matters on the worker only
