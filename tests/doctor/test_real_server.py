"""The doctor against a real Prefect server: the session's shared `web` service (launcher, basic auth,
RAILWAY_PUBLIC_DOMAIN, PostgreSQL) and real process workers. Each test keeps to its own work pool."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from tests.support.prefect_server import (
    FAST_WORKER_SETTINGS,
    HOST,
    PREFECT,
    WEB_AUTH,
    WEB_DOMAIN,
    railway_web_service,
    stop_process_group,
    wait_until,
)

from vault_ingest.doctor import Status, run_checks

pytestmark = pytest.mark.e2e

GIT = shutil.which("git")
PUBLIC_API = f"https://{WEB_DOMAIN}/api"


@pytest.fixture(scope="module")
def web(request):
    return railway_web_service(request)


class EdgeTransport(httpx.HTTPTransport):
    """Railway's edge in one line: https://<public domain>/... reaches the local server, TLS already ended."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme="http", host=HOST, port=self.port)
        return super().handle_request(request)


def bare_repo(root: Path) -> str:
    """A file:// git repository with a trivial flow, which git_clone can clone shallowly."""
    src = root / "src"
    src.mkdir(parents=True)
    (src / "flows.py").write_text("from prefect import flow\n\n\n@flow\ndef hello():\n    return 1\n")
    identity = ["-c", "user.name=doctor", "-c", "user.email=doctor@example.com"]
    for args in (["init", "-q", "-b", "main", str(src)], ["-C", str(src), "add", "."],
                 ["-C", str(src), *identity, "commit", "-qm", "flow"],
                 ["clone", "-q", "--bare", str(src), str(root / "repo.git")]):
        subprocess.run([GIT, *args], check=True)
    return f"file://{root / 'repo.git'}"


def deploy_and_queue_a_run(http: httpx.Client, pool: str, repository: str) -> str:
    """Pool, git_clone deployment and one flow run to pick up; returns the deployment's label."""
    http.post("/api/work_pools/", json={"name": pool, "type": "process"}).raise_for_status()
    flow_id = http.post("/api/flows/", json={"name": "hello"}).json()["id"]
    deployment = http.post("/api/deployments/", json={
        "name": pool, "flow_id": flow_id, "work_pool_name": pool, "entrypoint": "flows.py:hello",
        "pull_steps": [{"prefect.deployments.steps.git_clone": {"repository": repository, "branch": "main"}}],
    })
    deployment.raise_for_status()
    http.post(f"/api/deployments/{deployment.json()['id']}/create_flow_run", json={}).raise_for_status()
    return f"hello/{pool}"


def start_worker(web, tmp_path: Path, pool: str, path: str) -> subprocess.Popen:
    env = web.server.client_env(tmp_path / "worker-home", PATH=path, **FAST_WORKER_SETTINGS)
    with (tmp_path / "worker.log").open("wb") as log:
        return subprocess.Popen([PREFECT, "worker", "start", "--pool", pool, "--type", "process"], env=env,
                                cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def test_no_worker_then_a_gitless_one(web, tmp_path):
    """The two failures a missing or git-less worker service causes, each named with its fix."""
    pool = f"doctor-{uuid.uuid4().hex[:8]}"
    with web.server.http() as http:
        label = deploy_and_queue_a_run(http, pool, bare_repo(tmp_path / "git"))

    def doctor():
        return run_checks(web.server.api_url, pool=pool, auth=WEB_AUTH, inside_service=False)

    report = doctor()
    assert not report.ok
    assert report.check("work-pool").status is Status.FAIL and "NOT_READY" in report.check("work-pool").detail
    assert "bash start_worker.sh" in report.check("workers").fix
    assert report.check(f"deployment:{label}").status is Status.FAIL
    assert report.check(f"last-run:{label}").status is Status.SKIP

    # Only the venv's bin on PATH: prefect and python, no git (the reference's way to simulate Railpack).
    worker = start_worker(web, tmp_path, pool, path=str(Path(sys.executable).parent))
    try:
        report = wait_until(
            lambda: (r := doctor()).check(f"last-run:{label}").status is Status.FAIL and r,
            timeout=90, what=f"the git-less worker's run to crash; worker log {tmp_path / 'worker.log'}", interval=1,
        )
    finally:
        stop_process_group(worker)
    for name in ("work-pool", "workers", f"deployment:{label}"):
        assert report.check(name).status is Status.PASS, report.text()
    crash = report.check(f"last-run:{label}")
    assert "before the flow started, in its git_clone pull step" in crash.detail
    assert "RAILPACK_DEPLOY_APT_PACKAGES=git" in crash.fix
    assert "No such file or directory: 'git'" in (tmp_path / "worker.log").read_text()  # the cause the fix names


def test_shipped_configuration_passes_cleanly(web, tmp_path, postgres_admin_url):
    """As documented: a worker with git, a run that completed, the doctor at the public https URL, and the
    service-side checks against real values (Railway's postgresql:// URLs, git on PATH)."""
    pool = f"doctor-{uuid.uuid4().hex[:8]}"
    with web.server.http() as http:
        label = deploy_and_queue_a_run(http, pool, bare_repo(tmp_path / "git"))
    # One environment with web's and the worker's variables, so every service-side check sees a real value.
    service_env = {
        "RAILWAY_SERVICE_NAME": "worker",
        "PATH": os.environ["PATH"],
        "DATABASE_URL": postgres_admin_url,
        "PREFECT_API_DATABASE_CONNECTION_URL": web.database_url,
    }

    def doctor():
        return run_checks(PUBLIC_API, pool=pool, auth=WEB_AUTH, transport=EdgeTransport(web.server.port),
                          inside_service=None, env=service_env)

    worker = start_worker(web, tmp_path, pool, path=os.environ["PATH"])
    try:
        report = wait_until(lambda: (r := doctor()).check(f"last-run:{label}").status is not Status.SKIP and r,
                            timeout=90, what=f"the run to finish; worker log {tmp_path / 'worker.log'}", interval=1)
    finally:
        stop_process_group(worker)
    assert report.ok, report.text()
    assert {check.status for check in report.checks} == {Status.PASS}, report.text()
    assert "prefect-database-url" in {check.name for check in report.checks}


def test_auth_missing_and_wrong_are_named(web):
    pool = f"doctor-{uuid.uuid4().hex[:8]}"
    missing = run_checks(web.server.api_url, pool=pool, auth=None, inside_service=False).check("auth")
    assert missing.status is Status.FAIL and "requires basic auth" in missing.detail

    # The CLI as a user runs it: URL and credentials from the environment, JSON out, non-zero exit.
    env = {**os.environ, "PREFECT_API_URL": web.server.api_url, "PREFECT_API_AUTH_STRING": "admin:wrong-password"}
    result = subprocess.run([sys.executable, "-m", "vault_ingest.cli", "doctor", "--json", "--outside"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    auth = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "auth")
    assert auth["status"] == "fail" and auth["detail"].startswith("wrong credentials")
    assert "wrong-password" not in result.stdout + result.stderr
