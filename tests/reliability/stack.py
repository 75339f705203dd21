"""The shipped stack under the emulator, as the fault matrix drives it: up, faults, flow runs, app rows.

`MatrixStack` runs railway.stack.toml (or one of its variants) with `python -m emulator`, in a state dir of its
own, and deploys `hold_flow` onto it the way `vault-ingest deploy` deploys the project's flows. The faults are
Railway's own operations, as the emulator models them: an out-of-memory kill of the worker's container (every
process SIGKILLed; the restart policy, ON_FAILURE by default, starts it again: emulator/runtime/process.py), a
push that redeploys a service (`deploy SERVICE`: the old deployment SIGTERMed, SIGKILLed after
RAILWAY_DEPLOYMENT_DRAINING_SECONDS, 0 s unset; every deployment on a fresh filesystem), and the whole project
stopped and started again (`down`, `up`: only Postgres's volume kept).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import psutil
import psycopg

from tests.reliability.hold_flow import MOMENTS
from tests.support.emulator import kill_service_groups
from tests.support.prefect_server import clean_environ, wait_until
from tests.support.prepared_postgres import prepared_env

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
# Prefect's loops shortened (prefect.md §4), named: the repossessor looks for expired leases every 2 s, a run
# refused a slot tries again 1 s later, a deployment's first lease lasts 60 s (Prefect's minimum is 30; longer
# than the automation's 45 s window as the 300 s default is longer than deploy's 180 s), the foreman marks a
# silent worker offline within seconds. No cron runs: the scheduler is off. Tests listen on loopback only.
FAST = [
    "--set", "web.PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED=false",
    "--set", "web.PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS=2",
    "--set", "web.PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS=1",
    "--set", "web.PREFECT_SERVER_CONCURRENCY_INITIAL_DEPLOYMENT_LEASE_DURATION=60",
    "--set", "web.PREFECT_SERVER_SERVICES_FOREMAN_LOOP_SECONDS=5",
    "--set", "web.PREFECT_SERVER_API_HOST=127.0.0.1",
    "--set", "worker.PREFECT_WORKER_QUERY_SECONDS=2",
    "--set", "worker.PREFECT_WORKER_PREFETCH_SECONDS=2",
    "--draining-seconds", "5",  # `down` only; a redeploy drains as Railway does (0 s)
]


class MatrixStack:
    def __init__(self, root: Path, variant: str | None = None) -> None:
        self.state, self.gates, self.variant = root / "state", root / "gates", variant
        self.gates.mkdir(parents=True)
        for moment in MOMENTS:
            (self.gates / moment).mkdir()

    def emulator(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "emulator", "--state-dir", str(self.state), *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout,
                              env=clean_environ(NO_COLOR="1", **prepared_env()))

    def ok(self, *args: str, timeout: float = 120) -> str:
        result = self.emulator(*args, timeout=timeout)
        console = self.state / "logs" / "console.log"
        assert result.returncode == 0, (args, result.stdout, result.stderr,
                                        console.read_text()[-4000:] if console.exists() else "")
        return result.stdout

    # -- Railway's operations

    def up(self) -> None:
        variant = ["--variant", self.variant] if self.variant else []
        self.ok("up", "--detach", "--no-deploy", *variant, *FAST, "--set", f"worker.HOLD_DIR={self.gates}",
                timeout=600)

    def deploy_flows(self, *args: str) -> str:
        source = (self.state / "source.git").as_uri()
        return self.ok("run", "worker", "--", "python", "-m", "tests.reliability.hold_flow", source, "main", *args,
                       timeout=300)

    def down(self) -> None:
        self.ok("down", timeout=180)

    def restart(self) -> None:
        """The whole project stopped, then started again (`make emulate`, Ctrl-C, `make emulate`)."""
        self.down()
        self.up()

    def redeploy(self, service: str) -> str:
        return self.ok("deploy", service, timeout=600)

    def kill_worker(self) -> None:
        """The worker's container killed (out of memory): SIGKILL to every process in it, at once."""
        replica = self.status()["services"]["worker"]["replicas"]["worker"]
        leader = psutil.Process(replica["pid"])
        family = [leader, *leader.children(recursive=True)]
        for process in family:
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        # Railway's restart policy (ON_FAILURE, the default) starts it again.
        wait_until(lambda: self.worker_replica()["restarts"] > replica["restarts"]
                   and self.worker_replica()["running"], timeout=60, what="the worker restarted by its policy",
                   interval=1)
        log = (self.state / "logs" / "worker.deploy.log").read_text(errors="replace")
        assert "Exited with code -9; restarting" in log, log[-3000:]

    def close(self) -> None:
        self.emulator("down", timeout=180)
        kill_service_groups(self.state)

    # -- what it looks like

    def status(self) -> dict:
        return json.loads(self.ok("status", "--json"))

    def worker_replica(self) -> dict:
        return self.status()["services"]["worker"]["replicas"]["worker"]

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.status()["api_url"], verify=str(self.state / "tls" / "edge.crt"),
                            timeout=30)

    def app_database(self) -> str:
        return self.ok("run", "worker", "--", "printenv", "DATABASE_URL").strip()

    def rows(self) -> list[tuple[str, str, datetime, datetime]]:
        with psycopg.connect(self.app_database()) as conn:
            return conn.execute("SELECT deployment, flow_run_id::text, started, finished FROM hold_rows "
                                "ORDER BY started").fetchall()


class Runs:
    """Flow runs of the `hold` deployments over one API client (the edge's URL is read again after an `up`)."""

    def __init__(self, stack: MatrixStack) -> None:
        self.stack = stack
        self.http = stack.api()
        deployments = self.http.post("/deployments/filter", json={}).raise_for_status().json()
        self.deployments = {d["name"]: d["id"] for d in deployments if d["name"] in MOMENTS}

    def reconnect(self) -> None:
        self.http.close()
        self.http = self.stack.api()

    def create(self, moment: str, delay: float = 0) -> str:
        body = {}
        if delay:
            when = datetime.now(timezone.utc) + timedelta(seconds=delay)
            body = {"state": {"type": "SCHEDULED", "state_details": {"scheduled_time": when.isoformat()}}}
        created = self.http.post(f"/deployments/{self.deployments[moment]}/create_flow_run", json=body)
        return created.raise_for_status().json()["id"]

    def read(self, run: str) -> dict:
        return self.http.get(f"/flow_runs/{run}").raise_for_status().json()

    def state(self, run: str) -> str:
        try:
            return self.read(run)["state"]["type"]
        except httpx.HTTPError:
            return "UNREACHABLE"

    def states(self, run: str) -> list[tuple[str, datetime]]:
        found = self.http.get("/flow_run_states/", params={"flow_run_id": run}).raise_for_status().json()
        return sorted((s["type"], datetime.fromisoformat(s["timestamp"])) for s in found)

    def wait_terminal(self, runs: list[str], timeout: float) -> dict[str, tuple[str, float]]:
        """Each run's final state and when it got there (time.monotonic()), or its state when `timeout` ran out."""
        deadline, ended = time.monotonic() + timeout, {}
        while len(ended) < len(runs) and time.monotonic() < deadline:
            for run in runs:
                if run not in ended and (state := self.state(run)) in TERMINAL:
                    ended[run] = (state, time.monotonic())
            time.sleep(1)
        return {run: ended.get(run) or (self.state(run), time.monotonic()) for run in runs}

    def unfinished(self) -> list[str]:
        """Runs of the hold deployments that are not in a final state: what a fault may have stranded."""
        found = self.http.post("/flow_runs/filter", json={"flow_runs": {"deployment_id": {
            "any_": list(self.deployments.values())}}}).raise_for_status().json()
        return [f"{run['id']} {run['state']['type']}" for run in found if run["state"]["type"] not in TERMINAL]

    def events(self, run: str) -> list[str]:
        found = self.http.post("/events/filter", json={"filter": {
            "resource": {"id": [f"prefect.flow-run.{run}"]}, "order": "ASC"}, "limit": 50}).raise_for_status().json()
        return [f"{event['occurred'][11:19]} {event['event']}" for event in found["events"]]
