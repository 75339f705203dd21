"""What a redeploy of the worker does to a flow run in progress, with a real Prefect server and worker.

On Railway a push redeploys the worker unless its Watch Paths exclude the change; the old deployment gets
SIGTERM and, after RAILWAY_DEPLOYMENT_DRAINING_SECONDS (default 0), SIGKILL (railwayapp/docs c2a634f,
deployments/deployment-teardown.md, variables/reference.md, builds/build-configuration.md). So with the
default a run dies with its worker (nothing reports it; the heartbeat automation `vault-ingest deploy`
ships marks it Crashed), and a change the Watch Paths exclude (the flow's code, which runs pull through
git_clone) leaves the worker, and the run, alone. With the shipped start_worker.sh (`vault-ingest worker`) and
draining longer than the run, the old worker takes no new run, waits for its run, which completes, and goes;
a run due meanwhile goes to the new worker. Draining alone is not enough for Prefect's own `prefect worker
start`: Prefect 3.9.1 turns SIGTERM into SIGINT to itself (prefect/utilities/processutils
setup_signal_handlers_worker), whose KeyboardInterrupt ends the worker and its runs at once.

The repository is a copy of what the worker's image is built from and runs (the lock, the package,
start_worker.sh, railpack.json), as they ship, plus a sleep flow: a tree the tests may change. One stack for all.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.emulator import deploy_step, kill_service_groups
from tests.support.prefect_server import clean_environ, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
POOL = "redeploy-pool"
UNRESPONSIVE = 40  # above Prefect's minimum heartbeat frequency, 30 s
SHIPPED = ("pyproject.toml", "uv.lock", "README.md", "Procfile", "railpack.json", "start_worker.sh", "vault_ingest")
WATCH_PATHS = tomllib.loads((ROOT / "railway.stack.toml").read_text())["services"]["worker"]["watch_paths"]
FLOWS = """import os
import time
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run


@flow
def sleeper(seconds: float = 20, gate: str = ""):
    # With a gate directory, the run leaves its pid there and ends early once the test leaves it a release.
    if gate:
        (Path(gate) / f"{flow_run.id}.pid").write_text(str(os.getpid()))
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (gate and (Path(gate) / f"{flow_run.id}.release").exists()):
        time.sleep(0.2)
    return seconds
"""
PREFECTS_OWN = f"exec prefect worker start --pool {POOL}\n"
DEPLOY = deploy_step(POOL, "flows.py:sleeper", "long", before_deploy=(
    f"    from vault_ingest.deploy import ensure_unresponsive_automation\n"
    f"    ensure_unresponsive_automation(client, {UNRESPONSIVE})"))
STACK = f'''[project]
name = "redeploys"

[services.web]
start_command = "prefect server start --host 127.0.0.1 --port $PORT"
public_domain = true
healthcheck_path = "/api/health"
watch_paths = ["/uv.lock"]

[services.web.variables]
PREFECT_SERVER_ANALYTICS_ENABLED = "false"
PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED = "false"

[services.worker]
start_command = "bash start_worker.sh"
# railway.stack.toml's: what the worker itself runs redeploys it; the flows' code reaches runs through git_clone.
watch_paths = {json.dumps(WATCH_PATHS)}

[services.worker.variables]
PREFECT_API_URL = "https://${{{{web.RAILWAY_PUBLIC_DOMAIN}}}}/api"
PREFECT_WORK_POOL = "{POOL}"
PREFECT_WORKER_QUERY_SECONDS = "2"
PREFECT_WORKER_PREFETCH_SECONDS = "0"
PREFECT_FLOWS_HEARTBEAT_FREQUENCY = "30"
{{draining}}

[prefect]
server = "web"
work_pool = "{POOL}"

[[steps]]
name = "deploy"
variables = {{ PREFECT_API_URL = "https://${{{{web.RAILWAY_PUBLIC_DOMAIN}}}}/api" }}
run = """{DEPLOY}"""
timeout = 240
'''


class World:
    def __init__(self, root: Path) -> None:
        self.root, self.repo, self.stack = root, root / "repo", root / "redeploys.stack.toml"
        self.state, self.gates = root / ".emulator-redeploys", root / "gates"

    def emulator(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "emulator", "--repo", str(self.repo), "--stack",
                               str(self.stack), *args], cwd=self.root, capture_output=True, text=True,
                              timeout=timeout, env=clean_environ(NO_COLOR="1", PREFECT_HOME=str(self.root / "home")))

    def configure(self, draining: str = "") -> None:
        self.stack.write_text(STACK.replace("{draining}", draining))

    def status(self) -> dict:
        return json.loads(self.emulator("status", "--json").stdout)

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.status()["api_url"], verify=str(self.state / "tls" / "edge.crt"),
                            timeout=30)

    def create_run(self, api: httpx.Client, seconds: float, start_in: float = 0, gated: bool = False) -> str:
        deployment = api.get("/deployments/name/sleeper/long").raise_for_status().json()
        body: dict = {"parameters": {"seconds": seconds, **({"gate": str(self.gates)} if gated else {})}}
        if start_in:
            when = datetime.now(timezone.utc) + timedelta(seconds=start_in)
            body["state"] = {"type": "SCHEDULED", "state_details": {"scheduled_time": when.isoformat()}}

        def create() -> httpx.Response | None:
            # A server whose SQLite database is busy answers 503; Prefect's own client retries it (client/base.py).
            answer = api.post(f"/deployments/{deployment['id']}/create_flow_run", json=body)
            return None if answer.status_code == 503 else answer

        created = wait_until(create, timeout=60, what="create_flow_run to answer other than 503", interval=1)
        assert created.is_success, (created.status_code, created.text, _tail(self.state / "logs" / "web.deploy.log"))
        return created.json()["id"]

    def start_run(self, api: httpx.Client, seconds: float, gated: bool = False) -> str:
        run = self.create_run(api, seconds, gated=gated)
        wait_run(api, run, ["RUNNING"], timeout=180)
        return run

    def run_pid(self, run: str) -> int:
        pid = self.gates / f"{run}.pid"
        wait_until(pid.exists, timeout=60, what=f"flow run {run} to leave its pid")
        return int(pid.read_text())

    def release(self, run: str) -> None:
        (self.gates / f"{run}.release").touch()

    def deploy(self, *services: str) -> subprocess.CompletedProcess:
        result = self.emulator("deploy", *services, timeout=400)
        assert "error" not in result.stderr, result.stderr
        return result

    def worker_log(self) -> str:
        return (self.state / "logs" / "worker.deploy.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def world():
    # Not under pytest's basetemp, whose 0700 reset would lock out users the services may run as.
    with tempfile.TemporaryDirectory(prefix="emulator-redeploys-") as root:
        made = World(Path(root))
        made.repo.mkdir()
        made.gates.mkdir()
        for name in SHIPPED:
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, made.repo / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / name, made.repo / name)
        (made.repo / "flows.py").write_text(FLOWS)
        made.configure()
        try:
            up = made.emulator("up", "--detach", timeout=600)
            assert up.returncode == 0, up.stdout + up.stderr + _tail(made.state / "logs" / "console.log")
            yield made
        finally:
            made.emulator("down", timeout=180)
            kill_service_groups(made.state)


def test_a_code_change_outside_the_workers_watch_paths_leaves_a_run_alone(world):
    with world.api() as api:
        run = world.start_run(api, seconds=120, gated=True)
        worker = world.status()["services"]["worker"]["replicas"]["worker"]["pid"]
        (world.repo / "flows.py").write_text(FLOWS + "# a change that runs pick up through git_clone\n")
        result = world.deploy()
        assert result.returncode == 0, result.stdout
        assert "worker: skipped, none of the 1 changed file(s) match its watch paths" in result.stdout
        assert "nothing to deploy" in result.stdout
        world.release(run)  # held until after the push: it ran through it
        done = wait_run(api, run, ["COMPLETED", "FAILED", "CRASHED"], timeout=120)
        assert done["state"]["type"] == "COMPLETED", done["state"]
        assert world.status()["services"]["worker"]["replicas"]["worker"]["pid"] == worker


def test_a_redeploy_with_railways_default_draining_crashes_a_run(world):
    """The shipped worker drains, but Railway's default window is 0 s: the SIGKILL comes with the SIGTERM."""
    with world.api() as api:
        run = world.start_run(api, seconds=600)
        # The automation that marks it Crashed starts counting at the run's first heartbeat.
        wait_until(lambda: heartbeats(api, run), timeout=60, what="the run's first heartbeat")
        result = world.deploy("worker")
        assert result.returncode == 0, result.stdout
        assert "SIGKILL after 0s (RAILWAY_DEPLOYMENT_DRAINING_SECONDS, Railway's default)" in result.stdout
        crashed = wait_run(api, run, ["COMPLETED", "FAILED", "CRASHED"], timeout=UNRESPONSIVE + 90)
        assert crashed["state"]["type"] == "CRASHED", crashed["state"]
        assert f"No heartbeat for {UNRESPONSIVE} s" in crashed["state"]["message"]
        assert "Still running after the 0s draining period: SIGKILL" in world.worker_log()


def test_with_the_shipped_worker_and_draining_longer_than_the_run_a_redeploy_lets_it_complete(world):
    """The old worker takes no new run after SIGTERM, keeps its run going, and its heartbeats (the drain outlasts
    the automation's window), and leaves once the run is done; a run due meanwhile goes to the new worker."""
    world.configure('RAILWAY_DEPLOYMENT_DRAINING_SECONDS = "180"')
    # The setting applies to deployments made with it: deploy it once, then it is the one that drains.
    applied = world.deploy("worker")
    assert applied.returncode == 0, applied.stdout
    with world.api() as api:
        # It goes on until a heartbeat after the SIGTERM shows it still alive, then the test lets it end.
        run = world.start_run(api, seconds=300, gated=True)
        old = worker_name(api, run)
        result = world.deploy("worker")
        assert result.returncode == 0, result.stdout
        assert "SIGKILL after 180s (RAILWAY_DEPLOYMENT_DRAINING_SECONDS)" in result.stdout
        wait_until(lambda: "SIGTERM: taking no more flow runs; waiting for the 1 in progress" in world.worker_log(),
                   timeout=60, what="the old worker to take SIGTERM")
        sigterm = datetime.now(timezone.utc)
        # Due a few seconds into the drain, after any poll the old worker had under way at the SIGTERM.
        later = world.create_run(api, seconds=1, start_in=5)
        # The run keeps sending its own heartbeats while its worker drains (one every 30 s).
        wait_until(lambda: any(datetime.fromisoformat(event["occurred"]) > sigterm for event in heartbeats(api, run)),
                   timeout=90, what="a heartbeat of the run after its worker's SIGTERM")
        world.release(run)
        done = wait_run(api, run, ["COMPLETED", "FAILED", "CRASHED"], timeout=180)
        assert done["state"]["type"] == "COMPLETED", (done["state"], world.worker_log()[-3000:])
        taken = wait_run(api, later, ["COMPLETED", "FAILED", "CRASHED"], timeout=180)
        assert taken["state"]["type"] == "COMPLETED", taken["state"]
        assert worker_name(api, later) not in (None, old)
    # With its run done the old worker goes by itself, long before its 180 s are up.
    wait_until(lambda: world.status()["services"]["worker"]["state"] == "Active", timeout=60,
               what="the old worker removed once its run is done")
    last = world.worker_log().rsplit("Stopping Container", 1)[-1]
    assert "no flow runs left: the worker stops" in last and "draining period: SIGKILL" not in last


def test_draining_alone_does_not_save_a_run_from_prefects_own_worker(world):
    """Prefect 3.9's `prefect worker start` turns SIGTERM into SIGINT to itself, a KeyboardInterrupt that ends it
    and its runs at once (prefect/utilities/processutils setup_signal_handlers_worker, prefect/cli/worker.py);
    the container ends with its main process. So the draining window is never used: the run's process is gone
    with the worker, and the run is then Crashed by the automation as with the default draining (the test before)."""
    (world.repo / "start_worker.sh").write_text(PREFECTS_OWN)  # draining still 180 s, as the test before left it
    pushed = world.deploy()
    assert pushed.returncode == 0, pushed.stdout
    assert "worker: 1 changed file(s) match its watch paths: start_worker.sh" in pushed.stdout
    with world.api() as api:
        run = world.start_run(api, seconds=300, gated=True)
        flow_run_process = psutil.Process(world.run_pid(run))
        result = world.deploy("worker")
        assert result.returncode == 0, result.stdout
        assert "SIGKILL after 180s (RAILWAY_DEPLOYMENT_DRAINING_SECONDS)" in result.stdout
        wait_until(lambda: not flow_run_process.is_running(), timeout=30, what="the run's process to be gone")
    # The new deployment's worker is up (until its SIGTERM handler is in place, a stop would wait out the window).
    wait_until(lambda: "started!" in world.worker_log().rsplit("Starting Container", 1)[-1], timeout=120,
               what="the new deployment's worker to start")
    # The old worker left at once, well inside its window: nothing was left for the SIGKILL.
    last = world.worker_log().rsplit("Stopping Container", 1)[-1]
    assert "Received SIGTERM. Sending SIGINT to the process worker" in last and "draining period: SIGKILL" not in last


def wait_run(api: httpx.Client, run: str, states: list[str], timeout: float) -> dict:
    def reached():
        found = api.get(f"/flow_runs/{run}").raise_for_status().json()
        return found if found["state"]["type"] in states else None

    return wait_until(reached, timeout=timeout, what=f"flow run {run} to be {'/'.join(states)}")


def worker_name(api: httpx.Client, run: str) -> str | None:
    """The worker that took `run`: Prefect labels each run with it (BaseWorker._give_worker_labels_to_flow_run)."""
    return api.get(f"/flow_runs/{run}").raise_for_status().json()["labels"].get("prefect.worker.name")


def heartbeats(api: httpx.Client, run: str) -> list[dict]:
    found = api.post("/events/filter", json={"filter": {
        "event": {"name": ["prefect.flow-run.heartbeat"]}, "resource": {"id": [f"prefect.flow-run.{run}"]},
    }}).raise_for_status().json()
    return found["events"]


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-6000:] if path.is_file() else ""
