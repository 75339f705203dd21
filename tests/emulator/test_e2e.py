"""The whole emulator, as `make emulate` runs it: real PostgreSQL, Prefect server, worker(s) and replay.

One stack (one state dir, its own ports) goes through a deployment's life in order: `up` with the base
stack file runs the first sync-vaults to Completed; `down` leaves no process; `up` again (`--no-deploy`), now
with two worker replicas, still has the data and the deployments and runs a burst of flow runs exactly once
each; `reset` wipes it.
Fast Prefect settings come in through `--set`, never by editing the shipped stack file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from tests.support.emulator import kill_service_groups
from tests.support.prefect_server import wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FAST = [
    "--set", "worker.PREFECT_WORKER_QUERY_SECONDS=1",
    "--set", "worker.PREFECT_WORKER_HEARTBEAT_SECONDS=2",
    "--set", "worker.PREFECT_WORKER_PREFETCH_SECONDS=2",
    # No cron runs piling up behind the ones the tests make; a stopped worker counted offline within seconds.
    "--set", "web.PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED=false",
    "--set", "web.PREFECT_SERVER_SERVICES_FOREMAN_LOOP_SECONDS=1",
    # Tests listen on loopback only; on Railway the launcher's default 0.0.0.0 is what the edge needs.
    "--set", "web.PREFECT_SERVER_API_HOST=127.0.0.1",
    "--draining-seconds", "5",
]
BURST = 4  # runs at once on two replicas; each run is a Prefect engine process (~8 CPU-s)


def emulator(state: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "emulator", "--state-dir", str(state), *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=timeout)
    return result


def up(state: Path, *args: str) -> subprocess.CompletedProcess:
    result = emulator(state, "up", "--detach", *FAST, *args, timeout=300)
    console = state / "logs" / "console.log"
    assert result.returncode == 0, result.stdout + result.stderr + (console.read_text()[-6000:] if console.exists()
                                                                     else "")
    return result


def status(state: Path) -> dict:
    return json.loads(emulator(state, "status", "--json").stdout)


def everything_running(state: Path) -> list[psutil.Process]:
    """The supervisor and every process under it (flow runs included)."""
    pid = status(state)["pid"]
    leader = psutil.Process(pid)
    return [leader, *leader.children(recursive=True)]


def app_database(state: Path) -> str:
    return emulator(state, "run", "worker", "--", "printenv", "DATABASE_URL").stdout.strip()


def kill_leftovers(state: Path) -> None:
    """Whatever a failed test left behind, so nothing outlives the module."""
    emulator(state, "down")
    kill_service_groups(state)


@pytest.fixture(scope="module")
def state():
    # Not under pytest's basetemp, whose 0700 reset would lock out the user PostgreSQL runs as under root.
    with tempfile.TemporaryDirectory(prefix="emulator-e2e-") as root:
        path = Path(root) / "state"
        try:
            yield path
        finally:
            kill_leftovers(path)


@pytest.fixture(scope="module")
def first_up(state):
    return up(state)


def test_up_runs_the_first_sync_vaults_and_status_shows_the_stack(state, first_up):
    assert "Prefect UI:  https://127.0.0.1:" in first_up.stdout
    now = status(state)
    assert now["running"] and now["phase"] == "ready"
    assert {name: group["state"] for name, group in now["services"].items()} == {
        "Postgres": "Active", "web": "Active", "worker": "Active", "hyperliquid": "Active"}
    steps = {step["name"]: step for step in now["steps"]}
    assert [step["state"] for step in now["steps"]] == ["done", "done", "done"]
    assert steps["first-run"]["flow_run"]["state"] == "Completed" and steps["vaults"]["value"] > 0
    assert now["pool"] == {"name": "hyperliquid-vault-ingestion", "status": "READY", "workers_online": 1}
    # The UI through the edge, over TLS, tells the browser to call the API the same way.
    settings = httpx.get(f"{now['ui_url']}/ui-settings", verify=str(state / "tls" / "edge.crt")).json()
    assert settings["api_url"] == now["api_url"] == f"{now['ui_url']}/api"
    with psycopg.connect(app_database(state)) as conn:
        assert conn.execute("SELECT count(*) FROM vaults").fetchone()[0] == steps["vaults"]["value"]
    build = (state / "logs" / "web.build.log").read_text()
    assert "↳ Found web command in Procfile" in build and "[1/1] Healthcheck succeeded!" in build
    password = emulator(state, "run", "Postgres", "--", "printenv", "POSTGRES_PASSWORD").stdout.strip()
    assert password and not [p.name for p in (state / "logs").iterdir() if password in p.read_text()]


def test_down_leaves_no_process_alive(state, first_up):
    with psycopg.connect(app_database(state)) as conn:  # a mark to find after the next up
        conn.execute("CREATE TABLE kept_across_deploys AS SELECT 42 AS answer")
    processes = everything_running(state)
    assert len(processes) > 6  # supervisor, Postgres and its helpers, server, worker, replay
    result = emulator(state, "down")
    assert result.returncode == 0 and "stopped" in result.stdout
    assert not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not status(state)["running"]
    assert not (state / "homes").exists() or not list((state / "homes").iterdir())


@pytest.fixture(scope="module")
def replicas_up(state, first_up):
    before = status(state)
    if before["running"]:
        emulator(state, "down")
    # Nothing to redeploy: the flows' deployments are in Prefect's database, on the Postgres volume.
    result = up(state, "--variant", "worker-replicas", "--no-deploy")
    return before, result


def test_data_survives_down_and_up(state, replicas_up):
    before, _ = replicas_up
    now = status(state)
    assert now["variant"] == "worker-replicas" and now["steps"] == []
    assert now["ui_url"] == before["ui_url"]  # the edge port is kept, so an open browser tab still works
    with httpx.Client(base_url=now["api_url"], verify=str(state / "tls" / "edge.crt"), timeout=30) as api:
        steps = {step["name"]: step for step in before["steps"]}
        first_run = api.get(f"/flow_runs/{steps['first-run']['flow_run']['id']}").raise_for_status().json()
        assert first_run["state"]["type"] == "COMPLETED"
        assert api.get("/deployments/name/sync-vaults/hourly").raise_for_status().json()["id"] == \
            first_run["deployment_id"]
    with psycopg.connect(app_database(state)) as conn:
        assert conn.execute("SELECT answer FROM kept_across_deploys").fetchone() == (42,)
        assert conn.execute("SELECT count(*) FROM vaults").fetchone()[0] == steps["vaults"]["value"]


def test_worker_replicas_run_every_flow_run_exactly_once(state, replicas_up):
    # Without a first run to wait for, `up` returns once the services are Active, before the workers poll.
    now = wait_until(lambda: (found := status(state))["pool"]["workers_online"] == 2 and found, timeout=60,
                     what="both worker replicas online")
    worker = now["services"]["worker"]
    assert set(worker["replicas"]) == {"worker.1", "worker.2"} and worker["state"] == "Active"
    deployed = emulator(state, "run", "worker", "--", "python", "tests/emulator/exactly_once_flow.py",
                        (state / "source.git").as_uri(), now["pool"]["name"], timeout=120)
    assert deployed.returncode == 0, deployed.stderr
    marks = state.parent / "executions"
    marks.mkdir()
    api = httpx.Client(base_url=now["api_url"], verify=str(state / "tls" / "edge.crt"), timeout=30)
    deployment = api.get("/deployments/name/record-execution/burst").json()["id"]
    runs = [api.post(f"/deployments/{deployment}/create_flow_run", json={"parameters": {"folder": str(marks)}})
            .json()["id"] for _ in range(BURST)]

    deadline = time.monotonic() + 150
    while True:
        states = [api.get(f"/flow_runs/{run}").json()["state"]["type"] for run in runs]
        if all(s in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for s in states) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert states == ["COMPLETED"] * BURST, emulator(state, "logs", "worker").stdout[-5000:]
    executions = sorted(path.name.split(".")[0] for path in marks.iterdir())
    assert executions == sorted(runs)  # one file per run: none ran twice, none was lost
    for run in runs:
        history = api.get("/flow_run_states/", params={"flow_run_id": run}).json()
        assert [s["type"] for s in history].count("RUNNING") == 1
    replica_ids = {psutil.Process(r["pid"]).environ()["RAILWAY_REPLICA_ID"] for r in worker["replicas"].values()}
    assert {path.name.split(".")[1] for path in marks.iterdir()} <= replica_ids
    api.close()


def test_reset_wipes_the_data(state, replicas_up):
    processes = everything_running(state)
    result = emulator(state, "reset")
    assert result.returncode == 0 and "removed" in result.stdout
    assert not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not state.exists()
