"""A Prefect server and a process worker on a real PostgreSQL, to be killed and restarted mid-run.

`FaultStack` is Railway's `web` and `worker` without the emulator: the server has the Prefect database on
PostgreSQL and gets a fresh PREFECT_HOME at every start (Railway's ephemeral filesystem); the worker's process
tree dies by SIGKILL (a redeploy with 0 s draining, an out-of-memory kill). Each fault-matrix cell gets its own
deployment of a small flow, `hold`, whose pull step and body wait on files the test removes, so a run can be
caught in Pending after its pull steps or in Running; a finished run writes one row to the app database.
"""

from __future__ import annotations

import signal
import subprocess
import textwrap
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import psutil
import psycopg

from tests.support.prefect_server import (
    FAST_WORKER_SETTINGS, HOST, PREFECT, PrefectServer, clean_environ, prefect_server, stop_process_group,
    wait_until,
)
from emulator.runtime.postgres import free_port

POOL = "fault-pool"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

# Prefect's loops shortened (prefect.md §4): the repossessor looks for expired leases every 2 s, a run refused a
# slot tries again 1 s later; a deployment's first lease lasts 60 s (Prefect's minimum is 30), longer than the
# automation's window as the 300 s default is longer than deploy's 180 s.
SERVER_SETTINGS = {
    "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "2",
    "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "1",
    "PREFECT_SERVER_CONCURRENCY_INITIAL_DEPLOYMENT_LEASE_DURATION": "60",
    "PREFECT_SERVER_SERVICES_FOREMAN_LOOP_SECONDS": "5",
}

FLOW = '''
import os, time
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from prefect import flow
from prefect.runtime import deployment, flow_run


@flow(name="hold")
def hold():
    gate = Path(os.environ["HOLD_DIR"]) / deployment.name
    started = datetime.now(timezone.utc)
    (gate / f"running-{flow_run.id}").touch()
    while (gate / "hold-running").exists():
        time.sleep(0.2)
    with psycopg.connect(os.environ["APP_DATABASE_URL"]) as conn:
        conn.execute("INSERT INTO hold_rows (cell, flow_run_id, started, finished) VALUES (%s, %s, %s, now())",
                     (deployment.name, flow_run.id, started))
'''


@dataclass
class FaultStack:
    workdir: Path
    prefect_database_url: str  # postgresql://, as Railway hands it out
    app_database_url: str
    database_leases: bool  # False: a plain `prefect server start`, with `lease_storage`
    lease_storage: str = "prefect.server.concurrency.lease_storage.memory"  # Prefect's default
    port: int = field(default_factory=lambda: free_port(HOST))
    server: PrefectServer | None = None
    worker: subprocess.Popen | None = None
    _server_stack: ExitStack | None = None
    _starts: int = 0

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.port}/api"

    @property
    def hold_dir(self) -> Path:
        return self.workdir / "gates"

    # -- web ----------------------------------------------------------------------------------------------

    def start_web(self) -> None:
        self._starts += 1
        env = {**SERVER_SETTINGS, "PREFECT_API_DATABASE_CONNECTION_URL": self.prefect_database_url}
        if not self.database_leases:  # a plain `prefect server start`: asyncpg URL, leases where it is told
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = self.prefect_database_url.replace(
                "postgresql://", "postgresql+asyncpg://", 1)
            env["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"] = self.lease_storage
        self._server_stack = ExitStack()
        self.server = self._server_stack.enter_context(prefect_server(
            self.workdir / "web", env=env, launcher=self.database_leases, port=self.port,
            home=self.workdir / "web" / f"home-{self._starts}", timeout=180,
        ))

    def stop_web(self) -> None:
        """Railway's redeploy of web: SIGTERM, the process group gone; its filesystem goes with it."""
        if self._server_stack:
            self._server_stack.close()
        self.server = self._server_stack = None

    # -- worker -------------------------------------------------------------------------------------------

    def start_worker(self) -> None:
        env = {
            **FAST_WORKER_SETTINGS,
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",  # what `deploy` gives its deployments for a 45 s window
            "HOLD_DIR": str(self.hold_dir),
            "APP_DATABASE_URL": self.app_database_url,
        }
        home = self.workdir / "worker-home"
        client_env = self.client_env(home, **env)
        log = (self.workdir / "worker.log").open("ab")
        self.worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", POOL, "--type", "process", "--name", "w"],
            env=client_env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def kill_worker(self) -> None:
        """SIGKILL to the worker and every process it started (flow runs run in sessions of their own)."""
        if self.worker is None:
            return
        try:
            family = [psutil.Process(self.worker.pid), *psutil.Process(self.worker.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for process in family:
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        self.worker.wait(timeout=10)
        self.worker = None

    def stop(self) -> None:
        if self.worker is not None:
            stop_process_group(self.worker, 3.0)
            self.worker = None
        self.stop_web()

    def client_env(self, home: Path, **overrides: str) -> dict[str, str]:
        return clean_environ(**{"PREFECT_HOME": str(home), "PREFECT_API_URL": self.api_url, "DO_NOT_TRACK": "1",
                                **overrides})

    # -- the API ------------------------------------------------------------------------------------------

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30)

    def setup(self, automation: dict) -> None:
        """The pool, the flow's code, the app table and the automation; once per stack."""
        from prefect.workers.process import ProcessWorker

        (self.workdir / "flows").mkdir(parents=True, exist_ok=True)
        (self.workdir / "flows" / "hold.py").write_text(textwrap.dedent(FLOW))
        with psycopg.connect(self.app_database_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS hold_rows (cell text, flow_run_id uuid, started timestamptz, "
                         "finished timestamptz)")
        with self.http() as http:
            http.post("/work_pools/", json={
                "name": POOL, "type": "process",
                "base_job_template": ProcessWorker.get_default_base_job_template(),
            }).raise_for_status()
            http.post("/automations/", json=automation).raise_for_status()

    def deploy_cell(self, cell: str) -> str:
        """A deployment of `hold` named `cell`, concurrency limit 1, whose pull step waits on `hold-pending`."""
        gate = self.hold_dir / cell
        gate.mkdir(parents=True)
        wait = f"sh -c 'touch {gate}/pulled; while [ -e {gate}/hold-pending ]; do sleep 0.2; done'"
        with self.http() as http:
            flow_id = http.post("/flows/", json={"name": "hold"}).raise_for_status().json()["id"]
            return http.post("/deployments/", json={
                "name": cell, "flow_id": flow_id, "work_pool_name": POOL, "entrypoint": "hold.py:hold",
                "concurrency_limit": 1,
                "pull_steps": [
                    {"prefect.deployments.steps.set_working_directory": {"directory": str(self.workdir / "flows")}},
                    {"prefect.deployments.steps.run_shell_script": {"script": wait}},
                ],
            }).raise_for_status().json()["id"]

    def create_run(self, deployment_id: str, delay: float = 0) -> str:
        body = {}
        if delay:
            when = datetime.now(timezone.utc) + timedelta(seconds=delay)
            body = {"state": {"type": "SCHEDULED", "state_details": {"scheduled_time": when.isoformat()}}}
        with self.http() as http:
            return http.post(f"/deployments/{deployment_id}/create_flow_run", json=body).raise_for_status().json()["id"]

    def run(self, run_id: str) -> dict:
        with self.http() as http:
            return http.get(f"/flow_runs/{run_id}").raise_for_status().json()

    def state(self, run_id: str) -> str:
        try:
            return self.run(run_id)["state"]["type"]
        except httpx.HTTPError:
            return "UNREACHABLE"

    def wait_terminal(self, run_id: str, timeout: float) -> str:
        """The run's final state type, or its state when `timeout` ran out (the caller asserts)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state(run_id)
            if state in TERMINAL:
                return state
            time.sleep(1)
        return self.state(run_id)

    def events(self, run_id: str) -> list[str]:
        """The names of the run's events, oldest first: what the automation saw."""
        with self.http() as http:
            found = http.post("/events/filter", json={"filter": {
                "resource": {"id": [f"prefect.flow-run.{run_id}"]}, "order": "ASC",
            }, "limit": 50}).raise_for_status().json()
        return [f"{event['occurred'][11:19]} {event['event']}" for event in found["events"]]

    def rows(self, cell: str) -> list[tuple[str, datetime, datetime]]:
        with psycopg.connect(self.app_database_url) as conn:
            return conn.execute("SELECT flow_run_id::text, started, finished FROM hold_rows WHERE cell = %s "
                                "ORDER BY started", [cell]).fetchall()

    def wait_for(self, path: Path, timeout: float, what: str) -> None:
        wait_until(path.exists, timeout=timeout, what=what, interval=0.2)
