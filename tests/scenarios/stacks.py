"""One emulated Railway project per scenario: a variant of railway.stack.toml brought up in its own state dir.

Everything goes through `python -m emulator` as a developer would drive it (`up --detach`, `run`, `down`;
`status` is the same function called in-process), so each stack has its own ports, Postgres volume, edge and logs, and several can run side by side.
The fast Prefect settings go in as extra service variables (`--set`), never into the shipped stack file.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from emulator.model.stack import load_stack
from emulator.project import Project
from tests.support.emulator import kill_service_groups
from tests.support.prefect_server import clean_environ, stop_process_group
from tests.support.prepared_postgres import prepared_env
from tests.support.prefect_server import wait_until as support_wait_until
from vault_ingest.doctor import Report, run_checks

ROOT = Path(__file__).resolve().parents[2]
STACK_FILE = ROOT / "railway.stack.toml"
POOL = "hyperliquid-vault-ingestion"
DEPLOYMENTS = ("sync-vaults/hourly", "sync-vault-details/hourly")
VAULTS = "SELECT count(*) FROM vaults"
UNRESPONSIVE_RUN_SECONDS = 45

# Settings every scenario stack gets on top of the shipped ones. Each stack's idle loops cost a share of the
# two cores, so only what the scenarios need is quickened: NOT_READY_QUICKLY is for the stacks that wait for it.
FAST = {
    "web": {
        # The tests create the runs they follow; no hourly runs queued behind them.
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        # Tests listen on loopback only; on Railway the launcher's default 0.0.0.0 is what the edge needs.
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        # `up` deploys with web's variables, as `railway run web -- vault-ingest deploy` would.
        "UNRESPONSIVE_RUN_SECONDS": str(UNRESPONSIVE_RUN_SECONDS),
    },
    "worker": {
        "PREFECT_WORKER_QUERY_SECONDS": "5",  # Prefect's 10 s delays each run; every poll costs the idle stack
        "PREFECT_WORKER_PREFETCH_SECONDS": "2",
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",  # Prefect's minimum
    },
}
# Prefect's defaults take 90-105 s to notice a stopped worker and 60 s for a deployment (prefect.md §1.4).
# The worker heartbeats every 2 s, so a loaded machine's hiccup does not count as three missed ones.
NOT_READY_QUICKLY = {
    "web": {
        "PREFECT_SERVER_SERVICES_FOREMAN_LOOP_SECONDS": "1",
        "PREFECT_SERVER_SERVICES_FOREMAN_DEPLOYMENT_LAST_POLLED_TIMEOUT_SECONDS": "5",
        "PREFECT_SERVER_SERVICES_FOREMAN_WORK_QUEUE_LAST_POLLED_TIMEOUT_SECONDS": "5",
    },
    "worker": {"PREFECT_WORKER_HEARTBEAT_SECONDS": "2"},
}
UP_TIMEOUT = 420.0  # several stacks start at once on two cores

# Every check asks a stack's server; twice a second is plenty next to Prefect's one-second loops.
wait_until = functools.partial(support_wait_until, interval=0.5)




@dataclass(frozen=True)
class Spec:
    """How to bring one stack up: a variant (None: the shipped stack) and `up` options."""

    variant: str | None = None
    label: str | None = None  # the state dir's name, when the variant alone does not tell stacks apart
    deploy: bool = True
    first_run_timeout: float = 240.0
    variables: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    replay_latency: float | None = None
    services: tuple[str, ...] = ()  # `up --service`: only these and what they reference (no flow deploy)

    @property
    def name(self) -> str:
        return self.label or self.variant or "shipped"

    def up_args(self) -> list[str]:
        services = load_stack(STACK_FILE, self.variant).services
        args = ["up", "--detach", "--draining-seconds", "5", "--step-timeout", f"first-run={self.first_run_timeout:g}"]
        if self.variant:
            args += ["--variant", self.variant]
        if not self.deploy:
            args.append("--no-deploy")
        for service in self.services:
            args += ["--service", service]
        if self.replay_latency is not None:
            args += ["--replay-latency", f"{self.replay_latency:g}"]
        for service in services:
            values = {**FAST.get(service, {}), **self.variables.get(service, {})}
            args += [arg for name, value in values.items() for arg in ("--set", f"{service}.{name}={value}")]
        return args


class Stack:
    def __init__(self, spec: Spec, state: Path) -> None:
        self.spec, self.state = spec, state
        self.up_result: subprocess.CompletedProcess | None = None  # set by bring_up
        self._spawned: list[subprocess.Popen] = []

    # -- the emulator's CLI

    def emulator(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "emulator", "--state-dir", str(self.state), *args], cwd=ROOT,
                              env=clean_environ(NO_COLOR="1"), capture_output=True, text=True, timeout=timeout)

    def start(self) -> subprocess.Popen:
        """`up --detach`, not waited for: it exits 0 once ready, 1 once a step after the services failed."""
        return subprocess.Popen([sys.executable, "-m", "emulator", "--state-dir", str(self.state),
                                 *self.spec.up_args()], cwd=ROOT, env=clean_environ(NO_COLOR="1", **prepared_env()),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL)

    def status(self) -> dict:
        """What `status --json` prints, computed here: the tests poll it, and a CLI start costs 0.6 s of CPU."""
        return Project(STACK_FILE, self.state).status()

    def service_state(self, service: str) -> str:
        return self.status()["services"][service]["state"]

    def run(self, service: str, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """`python -m emulator run SERVICE -- ARGV`: the command in that service's runtime and variables."""
        return self.emulator("run", service, "--", *argv, timeout=timeout)

    def spawn(self, service: str, *argv: str, log: Path) -> subprocess.Popen:
        """`run` in the background (its own process group, output to `log`), stopped at teardown."""
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "emulator", "--state-dir", str(self.state), "run",
                                     service, "--", *argv], cwd=ROOT, env=clean_environ(NO_COLOR="1"),
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self._spawned.append(proc)
        return proc

    # -- what runs

    def project(self) -> dict:
        return json.loads((self.state / "project.json").read_text())

    def first_run(self) -> dict:
        """The flow run of the stack file's `first-run` step ({id, name, state}) and the rows its `vaults` step
        counted (None until that step is done)."""
        steps = {step["name"]: step for step in self.project()["steps"]}
        return {**steps["first-run"].get("flow_run", {}), "vaults": steps["vaults"].get("value")}

    def runtime(self) -> dict:
        return json.loads((self.state / "runtime.json").read_text())

    def pid(self, service: str) -> int:
        return self.runtime()["services"][service]["pid"]

    def log(self, service: str, stream: str = "deploy") -> str:
        path = self.state / "logs" / f"{service}.{stream}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def public_api_url(self) -> str:
        return self.project()["public_api_url"]

    @property
    def ui_url(self) -> str:
        return self.project()["ui_url"]

    @property
    def edge_cert(self) -> Path:
        return self.state / "tls" / "edge.crt"

    def api(self, *, auth: tuple[str, str] | None = None) -> httpx.Client:
        """The Prefect API through the edge, over TLS, as a browser or a laptop reaches it."""
        return httpx.Client(base_url=self.public_api_url, verify=str(self.edge_cert), auth=auth, timeout=30)

    def transport(self) -> httpx.HTTPTransport:
        """For `run_checks`: the network, trusting the edge's self-signed certificate."""
        return httpx.HTTPTransport(verify=str(self.edge_cert))

    @functools.cached_property
    def app_database(self) -> str:
        return self.run("Postgres", "printenv", "DATABASE_URL").stdout.strip()

    def rows(self, sql: str) -> list[tuple] | None:
        """The rows of a query on the app database; None when its table does not exist (nothing was written)."""
        with psycopg.connect(self.app_database, connect_timeout=10) as conn:
            try:
                return conn.execute(sql).fetchall()
            except psycopg.errors.UndefinedTable:
                return None

    def count(self, sql: str) -> int | None:
        found = self.rows(sql)
        return None if found is None else found[0][0]

    def ui_settings(self) -> dict:
        """What the UI asks first: where the API is (prefect.md §2.1)."""
        return httpx.get(f"{self.ui_url}/ui-settings", verify=str(self.edge_cert), timeout=30).json()

    # -- Prefect

    def readiness(self) -> dict[str, str]:
        """The status of the work pool and of each deployment, by name."""
        with self.api() as api:
            found = {POOL: self.pool(api)["status"]}
            found.update({name: self.deployment(api, name)["status"] for name in DEPLOYMENTS})
        return found

    def all_ready(self, status: str = "READY") -> dict[str, str] | None:
        """The readiness once the pool and every deployment are `status`, else None (for wait_until)."""
        found = self.readiness()
        return found if set(found.values()) == {status} else None

    def deployment(self, api: httpx.Client, name: str) -> dict:
        return api.get(f"/deployments/name/{name}").raise_for_status().json()

    def pool(self, api: httpx.Client) -> dict:
        return api.get(f"/work_pools/{POOL}").raise_for_status().json()

    def create_run(self, api: httpx.Client, deployment: str) -> str:
        created = api.post(f"/deployments/{self.deployment(api, deployment)['id']}/create_flow_run", json={})
        return created.raise_for_status().json()["id"]

    def wait_run(self, api: httpx.Client, run_id: str, states: Iterable[str], timeout: float) -> dict:
        wanted = set(states)

        def reached():
            run = api.get(f"/flow_runs/{run_id}").raise_for_status().json()
            return run if run["state"]["type"] in wanted else None

        return wait_until(reached, timeout=timeout, what=f"flow run {run_id} to be {'/'.join(sorted(wanted))}")

    # -- vault-ingest doctor

    def doctor(self, auth: str | None = None) -> Report:
        """The doctor from a laptop: the public API URL through the edge."""
        return run_checks(self.public_api_url, pool=POOL, auth=auth, transport=self.transport(),
                          inside_service=False)

    def doctor_inside(self, service: str, *args: str) -> dict[str, dict]:
        """`railway run SERVICE -- vault-ingest doctor --inside`: the checks by name, as JSON dicts."""
        result = self.run(service, "vault-ingest", "doctor", "--inside", "--json", *args)
        return {check["name"]: check for check in json.loads(result.stdout)["checks"]}

    # -- teardown

    def down(self) -> None:
        """Stop everything this stack started: `emulator down`, then whatever still runs, by process group."""
        for proc in self._spawned:
            stop_process_group(proc, grace=15)
        self.emulator("down", timeout=180)
        kill_service_groups(self.state)


def bring_up(stacks: list[Stack]) -> dict[str, subprocess.CompletedProcess]:
    """Start every stack at once and wait for each `up --detach` to return; its result by stack name."""
    started = [(stack, stack.start()) for stack in stacks]
    results = {}
    for stack, proc in started:
        try:
            out, _ = proc.communicate(timeout=UP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        results[stack.spec.name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
    return results
