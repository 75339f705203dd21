"""What a developer does once Railway shows the services Active: deploy the flows, run one, look at the data.

The code goes up as `railway up` sends it, a snapshot of the working tree (emulator/snapshot.py), and the
flows are deployed from it with `vault-ingest deploy` run the way `railway run web -- ...` runs it on the
developer's machine: the web service's variables with the machine's own tools, and the public API URL
through the edge. Then one `sync-vaults` run is created and followed to its end, and the app database is
asked how many vaults it holds. Everything here also serves `status`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import httpx

from emulator.plan import ServicePlan
from vault_ingest.deploy import FLOWS

SERVER_SERVICE = "web"  # the stack's Prefect server
DEFAULT_POOL = "hyperliquid-vault-ingestion"
FIRST_DEPLOYMENT = f"{FLOWS[0].flow_name}/{FLOWS[0].name}"  # sync-vaults/hourly
FINAL_RUN_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")

Log = Callable[[str], None]
Stopped = Callable[[], bool]


class BootstrapError(RuntimeError):
    """A step after `up` failed; the message says which and where to look."""


@dataclass(frozen=True)
class Endpoints:
    api_url: str  # the server's own address, for the emulator's API calls
    public_api_url: str | None  # through the edge, as a developer or the browser reaches it
    ui_url: str | None


def endpoints(server: ServicePlan) -> Endpoints:
    domain = server.public_domain
    return Endpoints(f"http://127.0.0.1:{server.port}/api", f"https://{domain}/api" if domain else None,
                     f"https://{domain}" if domain else None)


def work_pool(plans: Mapping[str, object], shared: Mapping[str, str]) -> str:
    """The pool the workers poll, as the stack sets it."""
    for plan in plans.values():
        if isinstance(plan, ServicePlan) and plan.env.get("PREFECT_WORK_POOL"):
            return plan.env["PREFECT_WORK_POOL"]
    return shared.get("PREFECT_WORK_POOL", DEFAULT_POOL)


def deploy_flows(server: ServicePlan, source_url: str, ref: str, pool: str, repo_dir: Path, log: Log,
                 stopped: Stopped, timeout: float = 180.0) -> None:
    """`vault-ingest deploy` against the stack's server, the flows pulled from `source_url` at `ref`."""
    api = endpoints(server)
    env = {
        **server.env,
        # The developer's machine, not the image: its Python with the project installed, and its git.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "PREFECT_API_URL": api.public_api_url or api.api_url,
    }
    argv = [sys.executable, "-m", "vault_ingest.cli", "deploy", "--work-pool", pool, "--source", source_url,
            "--ref", ref]
    log(f"$ vault-ingest deploy --work-pool {pool} --source {source_url} --ref {ref}  "
        f"(PREFECT_API_URL={env['PREFECT_API_URL']})")
    code = _run(argv, env, repo_dir, log, stopped, timeout)
    if code != 0 and not stopped():
        raise BootstrapError(f"`vault-ingest deploy` exited with code {code} (its output is above)")


def create_run(api_url: str, deployment: str = FIRST_DEPLOYMENT) -> dict:
    with httpx.Client(base_url=api_url, timeout=30) as http:
        found = http.get(f"/deployments/name/{deployment}")
        if found.status_code == 404:
            raise BootstrapError(f"the server has no deployment {deployment}; the deploy step did not create it")
        found.raise_for_status()
        created = http.post(f"/deployments/{found.json()['id']}/create_flow_run", json={})
        created.raise_for_status()
        return created.json()


def wait_run(api_url: str, run_id: str, timeout: float, log: Log, stopped: Stopped) -> dict:
    """Follow a flow run until it ends, logging each state; returns the run, maybe unfinished on timeout."""
    deadline = time.monotonic() + timeout
    seen = None
    with httpx.Client(base_url=api_url, timeout=10) as http:
        while True:
            run = http.get(f"/flow_runs/{run_id}").json()
            state = run.get("state") or {}
            if state.get("name") != seen:
                seen = state.get("name")
                log(f"flow run {run['name']}: {seen}")
            if state.get("type") in FINAL_RUN_STATES or stopped() or time.monotonic() > deadline:
                return run
            time.sleep(0.5)


def count_vaults(database_url: str) -> int | None:
    """Rows in the app's `vaults` table; None if the table does not exist yet."""
    import psycopg

    with psycopg.connect(database_url, connect_timeout=10) as conn:
        if conn.execute("SELECT to_regclass('public.vaults')").fetchone()[0] is None:
            return None
        return conn.execute("SELECT count(*) FROM vaults").fetchone()[0]


def pool_status(api_url: str, pool: str) -> dict:
    """{"status": READY | NOT_READY | PAUSED | "missing" | "unreachable", "workers_online": n}."""
    try:
        with httpx.Client(base_url=api_url, timeout=3) as http:
            found = http.get(f"/work_pools/{pool}")
            if found.status_code == 404:
                return {"status": "missing", "workers_online": 0}
            found.raise_for_status()
            workers = http.post(f"/work_pools/{pool}/workers/filter", json={}).json()
    except httpx.HTTPError:
        return {"status": "unreachable", "workers_online": 0}
    return {"status": found.json()["status"],
            "workers_online": sum(1 for worker in workers if worker.get("status") == "ONLINE")}


def _run(argv: list[str], env: dict[str, str], cwd: Path, log: Log, stopped: Stopped, timeout: float) -> int:
    """Run a command, its output lines to `log`; killed on `stopped()` or after `timeout` seconds."""
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)  # Ctrl-C is ours to pass on
    reader = threading.Thread(target=lambda: [log(line.decode("utf-8", "replace").rstrip()) for line in proc.stdout],
                              daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if stopped() or time.monotonic() > deadline:
            proc.kill()
            if not stopped():
                log(f"still running after {timeout:g}s: killed")
            break
        time.sleep(0.1)
    code = proc.wait()
    reader.join(timeout=2)
    return code
