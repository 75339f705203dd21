"""What a redeploy of the worker does to a flow run in progress, with a real Prefect server and worker.

On Railway a push redeploys the worker unless its Watch Paths exclude the change; the old deployment gets
SIGTERM and, after RAILWAY_DEPLOYMENT_DRAINING_SECONDS (default 0), SIGKILL (railwayapp/docs c2a634f,
deployments/deployment-teardown.md, variables/reference.md, builds/build-configuration.md). So with the
default a run dies with its worker (nothing reports it; the heartbeat automation `vault-ingest deploy`
ships marks it Crashed), and a change the Watch Paths exclude (the flow's code, which runs pull through
git_clone) leaves the worker, and the run, alone. Draining longer than the run is not enough on its own:
Prefect 3.9.1's worker turns SIGTERM into SIGINT to itself (prefect/utilities/processutils
forward_signal_handler), whose KeyboardInterrupt ends the worker and its runs at once, and the container
ends with its main process. A start script that waits for the worker's runs before stopping it does get
the window, and the run completes.

A throwaway repository of the test's own (a sleep flow), one stack for all four.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.support.emulator import kill_service_groups
from tests.support.prefect_server import clean_environ, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
POOL = "redeploy-pool"
UNRESPONSIVE = 40  # above Prefect's minimum heartbeat frequency, 30 s
PREFECT = re.search(r'name = "prefect"\nversion = "([^"]+)"', (ROOT / "uv.lock").read_text())[1]
FLOWS = '''import time

from prefect import flow


@flow
def sleeper(seconds: float = 20):
    time.sleep(seconds)
    return seconds
'''
REPOSITORY = {
    "requirements.txt": f"prefect=={PREFECT}\n",
    "Procfile": "web: prefect server start --host 127.0.0.1 --port $PORT\n",
    "start_worker.sh": f"exec prefect worker start --pool {POOL}\n",
    "railpack.json": '{"deploy": {"aptPackages": ["git"]}}\n',
    "flows.py": FLOWS,
}
# Railway's SIGTERM reaches this script (bash -c execs a lone command); it lets the worker's flow runs (its
# child processes) finish, then stops the worker. In the background the worker ignores SIGINT, which is
# what Prefect turns SIGTERM into, so with no runs left it is killed.
WAITING_START = f'''prefect worker start --pool {POOL} &
worker=$!
drain() {{
  echo "start_worker.sh: SIGTERM: waiting for this worker's flow runs"
  while [ -n "$(cat /proc/$worker/task/*/children 2>/dev/null)" ]; do sleep 1; done
  kill -KILL $worker
  exit 0
}}
trap drain TERM
wait $worker
'''
DEPLOY = f'''python - <<'PY'
import os
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from prefect.runner.storage import GitRepository
from prefect.workers.process import ProcessWorker
from vault_ingest.deploy import ensure_unresponsive_automation

with get_client(sync_client=True) as client:
    try:  # the worker may have made it already
        client.create_work_pool(WorkPoolCreate(name="{POOL}", type="process",
                                               base_job_template=ProcessWorker.get_default_base_job_template()))
    except ObjectAlreadyExists:
        pass
    ensure_unresponsive_automation(client, {UNRESPONSIVE})
source = GitRepository(url=os.environ["EMULATOR_SNAPSHOT_URL"], branch=os.environ["EMULATOR_SNAPSHOT_BRANCH"])
flow.from_source(source, "flows.py:sleeper").deploy(name="long", work_pool_name="{POOL}")
PY'''
STACK = f'''[project]
name = "redeploys"

[services.web]
public_domain = true
healthcheck_path = "/api/health"
watch_paths = ["/requirements.txt", "/Procfile"]

[services.web.variables]
PREFECT_SERVER_ANALYTICS_ENABLED = "false"
PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED = "false"

[services.worker]
start_command = "sh start_worker.sh"
# What must redeploy the worker: its dependencies and how it starts. The flows' code reaches runs through
# git_clone, so a change to it needs no new worker.
watch_paths = ["/requirements.txt", "/start_worker.sh", "/railpack.json"]

[services.worker.variables]
PREFECT_API_URL = "https://${{{{web.RAILWAY_PUBLIC_DOMAIN}}}}/api"
PREFECT_WORKER_QUERY_SECONDS = "2"
PREFECT_WORKER_PREFETCH_SECONDS = "2"
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
        self.state = root / ".emulator-redeploys"

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

    def start_run(self, api: httpx.Client, seconds: float) -> str:
        deployment = api.get("/deployments/name/sleeper/long").raise_for_status().json()
        created = api.post(f"/deployments/{deployment['id']}/create_flow_run",
                           json={"parameters": {"seconds": seconds}})
        run = created.raise_for_status().json()["id"]
        wait_run(api, run, ["RUNNING"], timeout=180)
        return run

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
        for name, text in REPOSITORY.items():
            (made.repo / name).write_text(text)
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
        run = world.start_run(api, seconds=20)
        worker = world.status()["services"]["worker"]["replicas"]["worker"]["pid"]
        (world.repo / "flows.py").write_text(FLOWS + "# a change that runs pick up through git_clone\n")
        result = world.deploy()
        assert result.returncode == 0, result.stdout
        assert "worker: skipped, none of the 1 changed file(s) match its watch paths" in result.stdout
        assert "nothing to deploy" in result.stdout
        done = wait_run(api, run, ["COMPLETED", "FAILED", "CRASHED"], timeout=120)
        assert done["state"]["type"] == "COMPLETED", done["state"]
        assert world.status()["services"]["worker"]["replicas"]["worker"]["pid"] == worker


def test_a_redeploy_with_railways_default_draining_crashes_a_run(world):
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


def test_draining_alone_does_not_save_a_run_from_a_worker_that_stops_at_sigterm(world):
    """Prefect 3.9's worker turns SIGTERM into SIGINT to itself, a KeyboardInterrupt that ends it and its runs
    at once (prefect/utilities/processutils forward_signal_handler, prefect/cli/worker.py); the container ends
    with its main process. So the draining window is never used."""
    world.configure('RAILWAY_DEPLOYMENT_DRAINING_SECONDS = "180"')
    # The setting applies to deployments made with it: deploy it once, then it is the one that drains.
    applied = world.deploy("worker")
    assert applied.returncode == 0, applied.stdout
    with world.api() as api:
        run = world.start_run(api, seconds=30)
        wait_until(lambda: heartbeats(api, run), timeout=60, what="the run's first heartbeat")
        result = world.deploy("worker")
        assert result.returncode == 0, result.stdout
        assert "SIGKILL after 180s (RAILWAY_DEPLOYMENT_DRAINING_SECONDS)" in result.stdout
        done = wait_run(api, run, ["COMPLETED", "FAILED", "CRASHED"], timeout=UNRESPONSIVE + 90)
        assert done["state"]["type"] == "CRASHED", done["state"]
    # The old worker left at once, well inside its window: nothing was left for the SIGKILL.
    last = world.worker_log().rsplit("Stopping Container", 1)[-1]
    assert "Received SIGTERM. Sending SIGINT to the process worker" in last and "SIGKILL" not in last


def test_with_a_start_script_that_waits_for_its_runs_draining_lets_a_run_complete(world):
    """The wrapper keeps the worker (and so its runs) alive after SIGTERM until its runs are done, inside the
    draining window; a change to it is in the worker's watch paths, so a push redeploys the worker."""
    world.configure('RAILWAY_DEPLOYMENT_DRAINING_SECONDS = "180"')  # as the test before left it
    (world.repo / "start_worker.sh").write_text(WAITING_START)
    pushed = world.deploy()
    assert pushed.returncode == 0, pushed.stdout
    assert "worker: 1 changed file(s) match its watch paths: start_worker.sh" in pushed.stdout
    with world.api() as api:
        run = world.start_run(api, seconds=30)
        result = world.deploy("worker")
        assert result.returncode == 0, result.stdout
        done = wait_run(api, run, ["COMPLETED", "FAILED", "CRASHED"], timeout=180)
        assert done["state"]["type"] == "COMPLETED", (done["state"], world.worker_log()[-3000:])
    assert "start_worker.sh: SIGTERM: waiting for this worker's flow runs" in world.worker_log()
    # With its run done the old worker goes, long before its 180 s are up.
    wait_until(lambda: world.status()["services"]["worker"]["state"] == "Active", timeout=60,
               what="the old worker removed once its run is done")


def wait_run(api: httpx.Client, run: str, states: list[str], timeout: float) -> dict:
    def reached():
        found = api.get(f"/flow_runs/{run}").raise_for_status().json()
        return found if found["state"]["type"] in states else None

    return wait_until(reached, timeout=timeout, what=f"flow run {run} to be {'/'.join(states)}")


def heartbeats(api: httpx.Client, run: str) -> list[dict]:
    found = api.post("/events/filter", json={"filter": {
        "event": {"name": ["prefect.flow-run.heartbeat"]}, "resource": {"id": [f"prefect.flow-run.{run}"]},
    }}).raise_for_status().json()
    return found["events"]


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-6000:] if path.is_file() else ""
