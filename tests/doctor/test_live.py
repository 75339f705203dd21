"""The API-side checks against a fake Prefect server on httpx.MockTransport, one broken scenario per test.

The fake's payloads are dumped from Prefect's own client schema models, so field names and shapes are the
ones a real 3.9 server sends; the real-server tests (test_real_server.py) confirm the important paths.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, unquote

import httpx
import pytest
from prefect.client.schemas.objects import Flow, FlowRun, State, Worker, WorkPool
from prefect.client.schemas.responses import DeploymentResponse, GlobalConcurrencyLimitResponse

from vault_ingest.doctor import Status, run_checks

DOMAIN = "vault-ingest-web.up.railway.app"
API = f"https://{DOMAIN}/api"
AUTH = "admin:s3cret-pass"
POOL = "hyperliquid-vault-ingestion"
GIT_STEP = {"prefect.deployments.steps.git_clone": {"repository": "https://github.com/you/repo.git", "branch": "main"}}


def dump(model) -> dict:
    return model.model_dump(mode="json")


@dataclass
class FakePrefect:
    """A Prefect server as the doctor sees it: shipped configuration unless a test changes a field."""

    ui_api_url: str = API
    auth_string: str | None = AUTH
    health: httpx.Response = field(default_factory=lambda: httpx.Response(200, json=True))
    pools: dict[str, dict] = field(default_factory=dict)
    workers: list[dict] = field(default_factory=list)
    deployments: list[dict] = field(default_factory=list)
    flows: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    states: dict[str, list[dict]] = field(default_factory=dict)
    fail_paths: dict[str, int] = field(default_factory=dict)  # path -> HTTP status to answer instead

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path in self.fail_paths:
            return httpx.Response(self.fail_paths[path], text="Internal Server Error")
        if path == "/ui-settings":
            return httpx.Response(200, json={"api_url": self.ui_api_url, "auth": "BASIC" if self.auth_string else None,
                                             "csrf_enabled": False, "flags": [], "default_ui": "v2"})
        if path == "/api/health":
            return self.health
        if not path.startswith("/api/"):
            return httpx.Response(404, json={"detail": "Not Found"})
        if self.auth_string and request.headers.get("authorization") != basic(self.auth_string):
            return httpx.Response(401, json={"exception_message": "Unauthorized"})
        body = json.loads(request.content or b"{}")
        return self.route(request.method, unquote(path.removeprefix("/api")), body, request)

    def route(self, method: str, path: str, body: dict, request: httpx.Request) -> httpx.Response:
        if method == "POST" and path == "/work_pools/filter":
            return httpx.Response(200, json=list(self.pools.values()))
        if method == "GET" and path.startswith("/work_pools/"):
            pool = self.pools.get(path.removeprefix("/work_pools/"))
            return httpx.Response(200, json=pool) if pool else httpx.Response(404, json={"detail": "Not found"})
        if method == "POST" and path.endswith("/workers/filter"):
            return httpx.Response(200, json=self.workers)
        if method == "POST" and path == "/deployments/filter":
            wanted = body["work_pools"]["name"]["any_"]
            return httpx.Response(200, json=[d for d in self.deployments if d["work_pool_name"] in wanted])
        if method == "POST" and path == "/flows/filter":
            wanted = body["flows"]["id"]["any_"]
            return httpx.Response(200, json=[f for f in self.flows if f["id"] in wanted])
        if method == "POST" and path == "/flow_runs/filter":
            assert body["sort"] == "END_TIME_DESC"
            runs = [r for r in self.runs if r["deployment_id"] in body["deployments"]["id"]["any_"]
                    and r["state"]["type"] in body["flow_runs"]["state"]["type"]["any_"]]
            runs.sort(key=lambda r: r["end_time"], reverse=True)
            return httpx.Response(200, json=runs[: body["limit"]])
        if method == "GET" and path == "/flow_run_states/":
            return httpx.Response(200, json=self.states[parse_qs(request.url.query.decode())["flow_run_id"][0]])
        raise AssertionError(f"the fake has no route for {method} {path}")

    # --- building blocks -------------------------------------------------------------------------------

    def add_pool(self, status: str = "READY", type: str = "process", name: str = POOL) -> None:
        self.pools[name] = dump(WorkPool(name=name, type=type, status=status, is_paused=status == "PAUSED"))

    def add_worker(self, status: str = "ONLINE", seconds_ago: int = 5) -> None:
        self.workers.append(dump(Worker(name=f"ProcessWorker {uuid.uuid4()}", work_pool_id=uuid.uuid4(),
                                        status=status, last_heartbeat_time=datetime.now(timezone.utc) - timedelta(seconds=seconds_ago))))

    def add_deployment(self, flow: str, status: str = "READY", pull_steps: list | None = None) -> dict:
        flow_model = Flow(name=flow)
        self.flows.append(dump(flow_model))
        limit = GlobalConcurrencyLimitResponse(name=f"deployment:{uuid.uuid4()}", limit=1, active=True,
                                               active_slots=0, slot_decay_per_second=0.0)
        deployment = dump(DeploymentResponse(name="hourly", flow_id=flow_model.id, work_pool_name=POOL, status=status,
                                             work_queue_name="default", pull_steps=pull_steps or [GIT_STEP],
                                             global_concurrency_limit=limit))
        self.deployments.append(deployment)
        return deployment

    def add_run(self, deployment: dict, history: list[str], message: str = "", minutes_ago: int = 1) -> None:
        """A finished run whose states went through `history`; the last is its current state."""
        final = State(type=history[-1], message=message)
        run = dump(FlowRun(flow_id=deployment["flow_id"], deployment_id=deployment["id"], name=f"run-{len(self.runs)}",
                           state=final, end_time=datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)))
        self.runs.append(run)
        self.states[run["id"]] = [dump(State(type=t)) for t in history[:-1]] + [dump(final)]


def basic(auth: str) -> str:
    return "Basic " + base64.b64encode(auth.encode()).decode()


def shipped() -> FakePrefect:
    """The documented configuration, working: a READY pool, an ONLINE worker, both flows deployed and run."""
    fake = FakePrefect()
    fake.add_pool()
    fake.add_worker()
    for flow in ("sync-vaults", "sync-vault-details"):
        fake.add_run(fake.add_deployment(flow), ["SCHEDULED", "PENDING", "RUNNING", "COMPLETED"])
    return fake


def doctor(fake: FakePrefect, api_url: str = API, auth: str | None = AUTH):
    return run_checks(api_url, pool=POOL, auth=auth, transport=fake.transport(), inside_service=False, env={})


def statuses(report) -> dict[str, Status]:
    return {check.name: check.status for check in report.checks}


# --- the shipped configuration -------------------------------------------------------------------------


def test_shipped_configuration_passes_cleanly():
    report = doctor(shipped())
    assert report.ok
    assert statuses(report) == {
        "api": Status.PASS, "ui-api-url": Status.PASS, "auth": Status.PASS, "work-pool": Status.PASS,
        "workers": Status.PASS,
        "deployment:sync-vaults/hourly": Status.PASS, "last-run:sync-vaults/hourly": Status.PASS,
        "deployment:sync-vault-details/hourly": Status.PASS, "last-run:sync-vault-details/hourly": Status.PASS,
        "slots:sync-vaults/hourly": Status.PASS, "slots:sync-vault-details/hourly": Status.PASS,
        "service": Status.SKIP,
    }
    assert report.text().splitlines()[-1].startswith("OK: 11 passed, 0 warnings")


# --- (1) no worker polls the pool ----------------------------------------------------------------------


def test_no_worker_names_not_ready_and_the_worker_service_fix():
    fake = shipped()
    fake.pools[POOL]["status"] = "NOT_READY"
    fake.workers.clear()
    for deployment in fake.deployments:
        deployment["status"] = "NOT_READY"
    report = doctor(fake)
    assert not report.ok
    pool = report.check("work-pool")
    assert pool.status is Status.FAIL and "NOT_READY" in pool.detail and "no worker has ever polled it" in pool.detail
    workers = report.check("workers")
    assert workers.status is Status.FAIL
    # Both causes docs/railway.md names: no worker service, and a worker service that runs `web`.
    for fix in ("bash start_worker.sh", "Dockerfile.worker", "↳ Found web command in Procfile", "PREFECT_WORK_POOL"):
        assert fix in workers.fix
    deployment = report.check("deployment:sync-vaults/hourly")
    assert deployment.status is Status.FAIL and "NOT_READY" in deployment.detail


def test_offline_workers_name_the_last_heartbeat_and_the_worker_log():
    fake = shipped()
    fake.pools[POOL]["status"] = "NOT_READY"
    fake.workers.clear()
    fake.add_worker("OFFLINE", seconds_ago=600)
    report = doctor(fake)
    workers = report.check("workers")
    assert workers.status is Status.FAIL
    assert "all OFFLINE; last heartbeat 10 min ago" in workers.detail
    assert "deploy log" in workers.fix and "start_worker.sh: error" in workers.fix
    assert "its workers stopped sending heartbeats" in report.check("work-pool").detail


def test_an_online_worker_beside_old_offline_ones_passes():
    fake = shipped()
    fake.add_worker("OFFLINE", seconds_ago=3600)
    workers = doctor(fake).check("workers")
    assert workers.status is Status.PASS and "1 ONLINE" in workers.detail and "1 OFFLINE" in workers.detail


def test_deployment_not_ready_beside_online_workers_names_the_queue():
    fake = shipped()
    fake.deployments[0]["status"] = "NOT_READY"
    check = doctor(fake).check("deployment:sync-vaults/hourly")
    assert check.status is Status.FAIL
    assert "none polls its queue 'default'" in check.detail and "--work-queue" in check.fix


@pytest.mark.parametrize("status, words", [("PAUSED", "prefect work-pool resume"), ("READY", "process worker")])
def test_paused_or_foreign_pool_fails(status, words):
    fake = shipped()
    fake.add_pool(status=status, type="process" if status == "PAUSED" else "kubernetes")
    check = doctor(fake).check("work-pool")
    assert check.status is Status.FAIL and words in check.fix + check.detail


def test_missing_pool_lists_the_pools_there_are():
    fake = shipped()
    fake.pools.clear()
    fake.add_pool(name="other-pool")
    report = doctor(fake)
    check = report.check("work-pool")
    assert check.status is Status.FAIL
    assert f"work pool '{POOL}' does not exist (pools on this server: ['other-pool'])" in check.detail
    assert f"PREFECT_WORK_POOL={POOL}" in check.fix
    assert report.check("workers").status is Status.SKIP


def test_no_deployments_warns_with_the_deploy_command():
    fake = shipped()
    fake.deployments.clear()
    report = doctor(fake)
    assert report.ok
    check = report.check("deployments")
    assert check.status is Status.WARN and f"vault-ingest deploy --work-pool {POOL}" in check.fix


# --- (2) the UI cannot reach its API -------------------------------------------------------------------


@pytest.mark.parametrize("ui_api_url", ["http://127.0.0.1:4200/api", "http://0.0.0.0:8080/api"])
def test_ui_fallback_url_names_prefect_ui_api_url_and_the_launcher(ui_api_url):
    fake = shipped()
    fake.ui_api_url = ui_api_url
    report = doctor(fake)
    check = report.check("ui-api-url")
    assert not report.ok and check.status is Status.FAIL
    assert f"Can't connect to Server API at {ui_api_url}" in check.detail
    assert "PREFECT_UI_API_URL=https://${{RAILWAY_PUBLIC_DOMAIN}}/api" in check.fix
    assert "vault-ingest serve" in check.fix


def test_ui_url_without_scheme_gets_https_added():
    fake = shipped()
    fake.ui_api_url = f"{DOMAIN}/api"
    check = doctor(fake).check("ui-api-url")
    assert check.status is Status.FAIL and "has no http(s):// scheme" in check.detail
    assert f"PREFECT_UI_API_URL=https://{DOMAIN}/api" in check.fix


def test_ui_url_on_another_origin_says_so():
    fake = shipped()
    fake.ui_api_url = "https://old-name.up.railway.app/api"
    check = doctor(fake).check("ui-api-url")
    assert check.status is Status.FAIL
    assert f"the UI calls https://old-name.up.railway.app/api, but the API checked here is {API}" in check.detail
    assert "unset PREFECT_UI_API_URL on web" in check.fix


@pytest.mark.parametrize("ui_api_url, api_url", [
    ("/api", API),  # relative: resolved against whichever host served the page
    (API, "http://web.railway.internal:8080/api"),  # checked privately, as from inside the worker
])
def test_ui_url_that_works_passes(ui_api_url, api_url):
    fake = shipped()
    fake.ui_api_url = ui_api_url
    assert doctor(fake, api_url=api_url).check("ui-api-url").status is Status.PASS


# --- (3) runs crash in the git_clone pull step ---------------------------------------------------------

CRASH = "Process exited with status code: 1. Process exited with a general error."


def test_crash_before_running_in_git_clone_names_git_and_its_fixes():
    fake = shipped()
    fake.add_run(fake.deployments[0], ["SCHEDULED", "PENDING", "PENDING", "CRASHED"], CRASH, minutes_ago=0)
    report = doctor(fake)
    check = report.check("last-run:sync-vaults/hourly")
    assert not report.ok and check.status is Status.FAIL
    assert "before the flow started, in its git_clone pull step" in check.detail and CRASH in check.detail
    for fix in ("RAILPACK_DEPLOY_APT_PACKAGES=git", "railpack.json", "Dockerfile.worker", "No such file or directory"):
        assert fix in check.fix
    assert report.check("last-run:sync-vault-details/hourly").status is Status.PASS


def test_crash_while_running_is_not_blamed_on_git():
    fake = shipped()
    fake.add_run(fake.deployments[0], ["SCHEDULED", "PENDING", "RUNNING", "CRASHED"], "Worker was killed",
                 minutes_ago=0)
    check = doctor(fake).check("last-run:sync-vaults/hourly")
    assert check.status is Status.WARN
    assert "RAILWAY_DEPLOYMENT_DRAINING_SECONDS" in check.fix and "git" not in check.fix


def test_an_old_crash_followed_by_a_completed_run_passes():
    fake = FakePrefect()
    fake.add_pool()
    fake.add_worker()
    deployment = fake.add_deployment("sync-vaults")
    fake.add_run(deployment, ["SCHEDULED", "PENDING", "CRASHED"], CRASH, minutes_ago=120)
    fake.add_run(deployment, ["SCHEDULED", "PENDING", "RUNNING", "COMPLETED"], minutes_ago=60)
    assert doctor(fake).check("last-run:sync-vaults/hourly").status is Status.PASS


def test_crash_in_another_pull_step_does_not_claim_git():
    fake = FakePrefect()
    fake.add_pool()
    fake.add_worker()
    step = {"prefect.deployments.steps.set_working_directory": {"directory": "/app"}}
    fake.add_run(fake.add_deployment("sync-vaults", pull_steps=[step]), ["PENDING", "CRASHED"], CRASH)
    check = doctor(fake).check("last-run:sync-vaults/hourly")
    assert check.status is Status.FAIL and "set_working_directory" in check.detail and "git" not in check.fix


def test_a_deployment_that_never_ran_is_skipped():
    fake = FakePrefect()
    fake.add_pool()
    fake.add_worker()
    fake.add_deployment("sync-vaults")
    report = doctor(fake)
    assert report.ok and report.check("last-run:sync-vaults/hourly").status is Status.SKIP


# --- (5) auth -----------------------------------------------------------------------------------------


def test_auth_required_but_not_given():
    report = doctor(shipped(), auth=None)
    check = report.check("auth")
    assert check.status is Status.FAIL and "requires basic auth" in check.detail and "none were given" in check.detail
    assert "--auth" in check.fix and "PREFECT_API_AUTH_STRING" in check.fix
    assert all(report.check(name).status is Status.SKIP for name in ("work-pool", "workers", "deployments"))


def test_wrong_credentials_are_named_and_never_printed():
    report = doctor(shipped(), auth="admin:not-the-password")
    check = report.check("auth")
    assert check.status is Status.FAIL and check.detail.startswith("wrong credentials: the API refused admin:***")
    assert "${{web.PREFECT_SERVER_API_AUTH_STRING}}" in check.fix
    assert "not-the-password" not in report.text() + report.to_json()


def test_open_api_on_a_public_domain_warns():
    fake = shipped()
    fake.auth_string = None
    report = doctor(fake, auth=None)
    assert report.ok
    check = report.check("auth")
    assert check.status is Status.WARN and "PREFECT_SERVER_API_AUTH_STRING=admin:" in check.fix


def test_open_api_on_a_private_address_passes():
    fake = shipped()
    fake.auth_string = None
    fake.ui_api_url = "/api"
    assert doctor(fake, api_url="http://127.0.0.1:4200/api", auth=None).check("auth").status is Status.PASS


# --- the server cannot be reached, or is not at that URL ------------------------------------------------


def test_unreachable_server_names_the_url_and_likely_fixes():
    def refuse(request):
        raise httpx.ConnectError("[Errno -2] Name or service not known", request=request)

    report = run_checks(API, pool=POOL, auth=AUTH, transport=httpx.MockTransport(refuse), inside_service=False)
    check = report.check("api")
    assert check.status is Status.FAIL
    assert check.detail == f"GET {API}/health got no answer: [Errno -2] Name or service not known"
    for fix in ("Deploy the `web` service", "Settings → Networking", "/api"):
        assert fix in check.fix
    assert [c.status for c in report.checks[1:]] == [Status.SKIP] * (len(report.checks) - 1)


@pytest.mark.parametrize("answer", [
    httpx.Response(404, json={"detail": "Not Found"}),
    httpx.Response(200, text="<!doctype html><html>", headers={"content-type": "text/html"}),  # the UI's index
])
def test_url_without_api_suffix_gets_it_added(answer):
    fake = shipped()
    fake.health = answer
    check = doctor(fake, api_url=f"https://{DOMAIN}").check("api")
    assert check.status is Status.FAIL and check.fix == f"Add /api to the URL: --api-url https://{DOMAIN}/api"


def test_bad_gateway_names_the_start_command():
    fake = shipped()
    fake.health = httpx.Response(502, text="Application failed to respond")
    check = doctor(fake).check("api")
    assert check.status is Status.FAIL and "HTTP 502" in check.detail and "vault-ingest serve" in check.fix


def test_redirect_names_where_to():
    fake = shipped()
    fake.health = httpx.Response(301, headers={"location": f"{API}/health"})
    check = doctor(fake, api_url=f"http://{DOMAIN}/api").check("api")
    assert check.status is Status.FAIL and check.fix == f"Use the URL it redirects to, e.g. --api-url {API}"


@pytest.mark.parametrize("api_url, detail", [("", "no API URL given"), (f"{DOMAIN}/api", "has no http(s):// scheme")])
def test_unusable_api_url_is_named_before_any_request(api_url, detail):
    report = doctor(FakePrefect(health=httpx.Response(500)), api_url=api_url)
    assert report.check("api").status is Status.FAIL and detail in report.check("api").detail


def test_server_error_midway_is_a_failed_check_not_a_traceback():
    fake = shipped()
    fake.fail_paths["/api/deployments/filter"] = 500
    report = doctor(fake)
    check = report.check("api-request")
    assert check.status is Status.FAIL
    assert check.detail.startswith(f"POST {API}/deployments/filter answered HTTP 500")
    assert report.check("work-pool").status is Status.PASS  # what was answered before still counts


def test_password_in_the_api_url_is_masked():
    report = doctor(shipped(), api_url=f"https://admin:url-secret@{DOMAIN}/api")
    assert "url-secret" not in report.text() + report.to_json()


def test_non_json_answers_are_failed_or_warned_checks_not_tracebacks():
    fake = shipped()
    original = fake.handle

    def html_for_ui_settings_and_flows(request):
        if request.url.path in ("/ui-settings", "/api/flows/filter"):
            return httpx.Response(200, text="<html>proxy</html>", headers={"content-type": "text/html"})
        return original(request)

    report = run_checks(API, pool=POOL, auth=AUTH, transport=httpx.MockTransport(html_for_ui_settings_and_flows),
                        inside_service=False)
    assert report.check("ui-api-url").status is Status.WARN
    assert "answered with something other than JSON" in report.check("api-request").detail
