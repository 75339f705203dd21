"""`vault-ingest worker`: Prefect's process worker that drains on SIGTERM, against a real Prefect server.

SIGTERM goes to the worker's own process only, as Railway sends it (not to a process group), and the flow runs
are real flow-run processes of a real deployment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
import pytest
from tests.support.prefect_server import FAST_WORKER_SETTINGS, railway_web_service, stop_process_group, wait_until

from vault_ingest.errors import ConfigError
from vault_ingest.worker import Drain, draining_seconds

FLOW = '''import time

from prefect import flow


@flow
def sleeper(seconds: float):
    time.sleep(seconds)
    return seconds
'''
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def test_the_drain_finds_what_it_wraps_on_prefects_process_worker():
    from prefect.workers.process import ProcessWorker

    drain = Drain(ProcessWorker(work_pool_name="any"))
    assert (drain.runs(), drain.in_progress(), drain.draining) == (0, False, False)


def test_a_prefect_without_those_methods_is_refused_by_name():
    with pytest.raises(ConfigError, match="no get_and_submit_flow_runs, _submit_run_and_capture_errors, "
                                          "_submitting_flow_run_ids.*uv sync --locked"):
        Drain(object())


@pytest.mark.parametrize(("raw", "seconds"), [("", None), ("3600", 3600.0), (" 0 ", 0.0), ("an hour", None)])
def test_draining_seconds(raw, seconds):
    assert draining_seconds({"RAILWAY_DEPLOYMENT_DRAINING_SECONDS": raw}) == seconds


# --- a real server and worker ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(request):
    return railway_web_service(request).server


@pytest.fixture
def deployment(server, tmp_path):
    """A pool of the test's own and a deployment of `sleeper` whose code is a local directory."""
    pool = f"drain-{uuid.uuid4().hex[:8]}"
    code = tmp_path / "flows"
    code.mkdir()
    (code / "sleeper.py").write_text(FLOW)
    with server.http() as http:
        http.post("/api/work_pools/", json={"name": pool, "type": "process"}).raise_for_status()
        flow_id = http.post("/api/flows/", json={"name": "sleeper"}).raise_for_status().json()["id"]
        made = http.post("/api/deployments/", json={
            "name": pool, "flow_id": flow_id, "work_pool_name": pool, "entrypoint": "sleeper.py:sleeper",
            "pull_steps": [{"prefect.deployments.steps.set_working_directory": {"directory": str(code)}}],
        }).raise_for_status().json()
    return pool, made["id"]


def create_run(server, deployment_id: str, seconds: float, start_in: float = 0) -> str:
    body: dict = {"parameters": {"seconds": seconds}}
    if start_in:
        when = datetime.now(timezone.utc) + timedelta(seconds=start_in)
        body["state"] = {"type": "SCHEDULED", "state_details": {"scheduled_time": when.isoformat()}}
    with server.http() as http:
        return http.post(f"/api/deployments/{deployment_id}/create_flow_run", json=body).raise_for_status().json()["id"]


def state(server, run: str) -> dict:
    with server.http() as http:
        return http.get(f"/api/flow_runs/{run}").raise_for_status().json()["state"]


def infrastructure_pid(server, run: str) -> str:
    with server.http() as http:
        return http.get(f"/api/flow_runs/{run}").raise_for_status().json()["infrastructure_pid"]


def start_worker(server, pool: str, home: Path, log_path: Path, **env: str) -> subprocess.Popen:
    # No prefetch: a run is taken once it is due, not up to 10 s early, so when it is due is when it could be taken.
    environment = server.client_env(home, **FAST_WORKER_SETTINGS, PREFECT_WORKER_PREFETCH_SECONDS="0", **env)
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "vault_ingest.cli", "worker", "--pool", pool],
                                env=environment, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_on_sigterm_a_run_in_progress_completes_no_new_run_is_taken_and_the_worker_exits_0(server, deployment,
                                                                                           tmp_path):
    pool, deployment_id = deployment
    log_path = tmp_path / "worker.log"
    worker = start_worker(server, pool, tmp_path / "home", log_path, RAILWAY_DEPLOYMENT_DRAINING_SECONDS="120")
    try:
        running = create_run(server, deployment_id, seconds=20)
        wait_until(lambda: state(server, running)["type"] == "RUNNING", timeout=120,
                   what=f"the first run Running; worker log:\n{log_path}")
        # Due a few seconds into the drain, long after any poll that was under way at the SIGTERM has returned.
        later = create_run(server, deployment_id, seconds=1, start_in=4)
        os.kill(worker.pid, signal.SIGTERM)  # the main process only, as Railway sends it
        wait_until(lambda: "SIGTERM: taking no more flow runs; waiting for the 1 in progress" in log_path.read_text(),
                   timeout=30, what="the worker to take SIGTERM")
        assert worker.poll() is None, "the worker left with its run still running"
        done = wait_until(lambda: (found := state(server, running))["type"] in TERMINAL and found, timeout=120,
                          what="the first run to end")
        assert done["type"] == "COMPLETED", (done, log_path.read_text()[-3000:])
        assert worker.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    finally:
        stop_process_group(worker)
    log = log_path.read_text()
    assert "Railway SIGKILLs what is left 120s after the SIGTERM" in log
    assert "no flow runs left: the worker stops" in log
    # Due during the drain, and no worker took it: it waits for the next worker, as on Railway the new deployment's.
    assert state(server, later)["type"] == "SCHEDULED", log[-3000:]
    assert later not in log


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_second_sigterm_stops_at_once_and_without_draining_seconds_says_so(server, deployment, tmp_path):
    pool, deployment_id = deployment
    log_path = tmp_path / "worker.log"
    worker = start_worker(server, pool, tmp_path / "home", log_path)
    try:
        running = create_run(server, deployment_id, seconds=600)
        wait_until(lambda: state(server, running)["type"] == "RUNNING", timeout=120,
                   what=f"the run Running; worker log:\n{log_path}")
        os.kill(worker.pid, signal.SIGTERM)
        wait_until(lambda: "taking no more flow runs" in log_path.read_text(), timeout=30, what="the first SIGTERM")
        os.kill(worker.pid, signal.SIGTERM)
        assert worker.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        stop_process_group(worker)
    log = log_path.read_text()
    assert "RAILWAY_DEPLOYMENT_DRAINING_SECONDS is unset (Railway's default 0): they are SIGKILLed now" in log
    assert "second SIGTERM: stopping now" in log
