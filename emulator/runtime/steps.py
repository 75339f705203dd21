"""The stack file's `[[steps]]`: what a developer does once Railway shows the services Active.

A step runs as `railway run SERVICE -- ...` runs on the developer's machine (railway.md §5, "Railway's own
local tooling"): the machine's own environment and tools (this interpreter first on PATH), the service's
variables on top (none without `service`), then the step's `variables`, `${{...}}` references resolved
against the running stack. The code goes up as `railway up` sends it, a snapshot of the working tree
(emulator/runtime/snapshot.py): its file:// URL, branch and commit are EMULATOR_SNAPSHOT_URL, _BRANCH and _COMMIT,
for a Prefect deployment's `git_clone` pull step.

Each step has one action and waits for its condition, within its timeout: `run` exits 0; `flow_run` creates a
flow run of a deployment through Prefect's REST API (POST /deployments/{id}/create_flow_run, as `prefect
deployment run` does) and follows it to Completed; `sql` polls a query on DATABASE_URL until its first value
is > 0; `http` polls a URL until it answers 200. Nothing here knows the application the stack deploys.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import httpx

from emulator.errors import BuildError, StepError
from emulator.model.plan import ServicePlan
from emulator.model.stack import Step
from emulator.model.variables import SecretSource, resolve
from emulator.wait import wait_until

FINAL_RUN_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
_STEP_NAMESPACE = "step"  # a step without a service: `${{VAR}}` means the step's own variables
_POLL = 0.2  # as often as benchmarks/p3_emulate.py's by-hand side looks: a longer poll only adds to each step

Log = Callable[[str], None]
Stopped = Callable[[], bool]
Plans = Mapping[str, "ServicePlan | BuildError"]


@dataclass(frozen=True)
class Endpoints:
    api_url: str  # the server's own address, for the emulator's API calls
    public_api_url: str | None  # through the edge, as a developer or the browser reaches it
    ui_url: str | None


def endpoints(server: ServicePlan) -> Endpoints:
    domain = server.public_domain
    return Endpoints(f"http://127.0.0.1:{server.port}/api", f"https://{domain}/api" if domain else None,
                     f"https://{domain}" if domain else None)


def service_plans(plans: Plans) -> dict[str, ServicePlan]:
    """The first replica's plan of each service that has one, by service name."""
    found: dict[str, ServicePlan] = {}
    for plan in plans.values():
        if isinstance(plan, ServicePlan):
            found.setdefault(plan.env.get("RAILWAY_SERVICE_NAME", plan.name), plan)
    return found


def resolve_values(values: Mapping[str, str], plans: Plans, shared: Mapping[str, str], secret: SecretSource,
                   service: str | None = None) -> dict[str, str]:
    """`values` with their `${{...}}` references resolved against the planned services (their local
    addresses), "shared", and `service`'s own variables for `${{VAR}}`."""
    namespaces: dict[str, Mapping[str, str]] = {"shared": shared}
    namespaces.update({name: plan.env for name, plan in service_plans(plans).items()})
    own = service or _STEP_NAMESPACE
    namespaces[own] = {**namespaces.get(own, {}), **values}
    try:
        resolved = resolve(namespaces, own, secret)
    except BuildError as exc:
        raise StepError(str(exc).replace(f"{own}: variable", "variable", 1)) from None
    return {name: resolved[name] for name in values}


@dataclass
class StepContext:
    """What every step needs from the `up` that runs it."""

    plans: Plans
    shared: Mapping[str, str]
    secret: SecretSource
    repo_dir: Path
    prefect_api: str | None  # the [prefect] server's API, where a step sets no PREFECT_API_URL
    snapshot: Mapping[str, str]  # EMULATOR_SNAPSHOT_* variables
    log: Log
    stopped: Stopped
    state: Callable[[str], str]  # a service's state (Active, Crashed, ...)


def step_environment(step: Step, context: StepContext) -> dict[str, str]:
    """The developer's environment, `step.service`'s variables, the step's own; this interpreter first on PATH."""
    base: dict[str, str] = {}
    if step.service is not None:
        plan = service_plans(context.plans).get(step.service)
        if plan is None:
            raise StepError(f"step {step.name}: there is no running service {step.service} "
                            f"({', '.join(service_plans(context.plans)) or 'none'}); fix `service` or the variant")
        base = {k: v for k, v in plan.env.items() if k not in ("PATH", "HOME")}  # the image's, not the laptop's
    values = resolve_values({**base, **step.variables}, context.plans, context.shared, context.secret,
                            step.service)
    # Railway's domains carry publicly signed certificates; the edge's is self-signed, so the laptop gets the
    # bundle the services trust (public roots plus the edge's), as it would trust Railway's without asking.
    trust = {k: v for p in service_plans(context.plans).values() for k, v in p.env.items() if k == "SSL_CERT_FILE"}
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, **trust, **values, **context.snapshot, "PATH": path}


def run_step(step: Step, context: StepContext) -> dict:
    """Run `step` and wait for its condition; its record ({"value": ..., "flow_run": ...}) or StepError."""
    if step.service is not None and (state := context.state(step.service)) != "Active":
        raise StepError(f"step {step.name} needs {step.service}, which is {state}; see `python -m emulator logs "
                        f"{step.service}` (add --build for the build and healthcheck)")
    env = step_environment(step, context)
    return _ACTIONS[step.action](step, env, context)


def _run(step: Step, env: dict[str, str], context: StepContext) -> dict:
    context.log(f"$ {step.target}")
    proc = subprocess.Popen(["/bin/sh", "-c", step.target], env=env, cwd=context.repo_dir,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # Ctrl-C is ours to pass on
    reader = threading.Thread(target=lambda: [context.log(line.decode("utf-8", "replace").rstrip())
                                              for line in proc.stdout], daemon=True)
    reader.start()
    wait_until(lambda: proc.poll() is not None, step.timeout, stopped=context.stopped)
    timed_out = proc.poll() is None and not context.stopped()
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    code = proc.wait()
    reader.join(timeout=2)
    if context.stopped():
        return {}
    if timed_out:
        raise StepError(f"step {step.name}: `{step.target}` was still running after {step.timeout:g}s: killed")
    if code != 0:
        raise StepError(f"step {step.name}: `{step.target}` exited with code {code} (its output is above)")
    return {"exit_code": 0}


def _flow_run(step: Step, env: dict[str, str], context: StepContext) -> dict:
    api_url = env.get("PREFECT_API_URL") or context.prefect_api
    if not api_url:
        raise StepError(f"step {step.name}: no Prefect API to create the flow run on; set PREFECT_API_URL in the "
                        "step's variables or name the server in [prefect]")
    with _prefect_client(api_url, env) as http:
        found = http.get(f"/deployments/name/{step.target}")
        if found.status_code == 404:
            raise StepError(f"step {step.name}: the server has no deployment {step.target}; an earlier step "
                            "should create it")
        found.raise_for_status()
        run = http.post(f"/deployments/{found.json()['id']}/create_flow_run", json={}).raise_for_status().json()
        context.log(f"created flow run {run['name']} of {step.target}; waiting for it to finish")
        record = {"flow_run": {"id": run["id"], "name": run["name"], "state": None}}
        seen: list[dict] = []

        def finished() -> bool:
            latest = http.get(f"/flow_runs/{run['id']}").raise_for_status().json()
            state = latest.get("state") or {}
            if not seen or state.get("name") != (seen[-1].get("state") or {}).get("name"):
                context.log(f"flow run {run['name']}: {state.get('name')}")
            seen[:] = [latest]
            return state.get("type") in FINAL_RUN_STATES

        wait_until(finished, step.timeout, interval=_POLL, stopped=context.stopped)
    state = seen[-1].get("state") or {}
    record["flow_run"]["state"] = state.get("name")
    if context.stopped() or state.get("type") == "COMPLETED":
        return record
    ended = "ended" if state.get("type") in FINAL_RUN_STATES else f"is still, after {step.timeout:g}s,"
    raise StepError(f"step {step.name}: flow run {run['name']} of {step.target} {ended} {state.get('name')}; see "
                    "`python -m emulator logs` for the worker's output", record)


def _sql(step: Step, env: dict[str, str], context: StepContext) -> dict:
    import psycopg

    url = env.get("DATABASE_URL")
    if not url:
        raise StepError(f"step {step.name}: DATABASE_URL is not set; set it in the step's variables, e.g. "
                        'DATABASE_URL = "${{Postgres.DATABASE_URL}}"')
    last: list = [None]

    def positive() -> bool:
        try:
            with psycopg.connect(url, connect_timeout=10) as conn:
                row = conn.execute(step.target).fetchone()
        except psycopg.errors.UndefinedTable:
            return False  # nothing has created it yet
        except psycopg.Error as exc:
            raise StepError(f"step {step.name}: `{step.target}` failed: {exc}") from None
        last[0] = row[0] if row else None
        return isinstance(last[0], (int, float)) and last[0] > 0

    context.log(f"{step.target}  (until > 0)")
    if wait_until(positive, step.timeout, interval=_POLL, stopped=context.stopped):
        context.log(f"-> {last[0]}")
        return {"value": last[0]}
    if context.stopped():
        return {}
    raise StepError(f"step {step.name}: `{step.target}` gave {last[0]}, not a number > 0, for {step.timeout:g}s",
                    {"value": last[0]})


def _http(step: Step, env: dict[str, str], context: StepContext) -> dict:
    last: list = ["no answer"]

    def ok() -> bool:
        try:
            with httpx.Client(verify=_verify(env), timeout=10) as http:
                last[0] = http.get(step.target).status_code
        except httpx.HTTPError as exc:
            last[0] = str(exc) or type(exc).__name__
        return last[0] == 200

    context.log(f"GET {step.target}  (until 200)")
    if wait_until(ok, step.timeout, interval=_POLL, stopped=context.stopped):
        context.log("-> 200")
        return {"value": 200}
    if context.stopped():
        return {}
    raise StepError(f"step {step.name}: GET {step.target} did not answer 200 within {step.timeout:g}s "
                    f"(last: {last[0]})")


_ACTIONS = {"run": _run, "flow_run": _flow_run, "sql": _sql, "http": _http}


class _PrefectRetries(httpx.HTTPTransport):
    """Retries as Prefect's own client does (prefect/client/base.py, `PrefectHttpxSyncClient.send` and
    `_send_with_retry`, Prefect 3.9.1): 408, 429, 502 and 503 answers and dropped connections, up to
    PREFECT_CLIENT_MAX_RETRIES (5) times, waiting `Retry-After` or 2**try seconds. A busy server answers 503
    when its database is locked; `prefect deployment run` waits that out, so a step must too."""

    CODES = {408, 429, 502, 503}
    ERRORS = (httpx.TimeoutException, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
    TRIES = 5

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(1, self.TRIES + 1):
            try:
                response = super().handle_request(request)
            except self.ERRORS:
                wait = 2.0 ** attempt
            else:
                if response.status_code not in self.CODES:
                    return response
                response.close()
                header = _retry_after(response.headers.get("Retry-After"))
                wait = 2.0 ** attempt if header is None else header
            time.sleep(wait)
        return super().handle_request(request)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:  # an HTTP date: Prefect's server never sends one
        return None


def _prefect_client(api_url: str, env: Mapping[str, str]) -> httpx.Client:
    user, colon, password = env.get("PREFECT_API_AUTH_STRING", "").partition(":")
    verify = _verify(env)
    return httpx.Client(base_url=api_url, timeout=30, auth=(user, password) if colon else None,
                        transport=_PrefectRetries(verify=verify))


def _verify(env: Mapping[str, str]):
    """The trust bundle the stack's services use (public CAs plus the edge), as the laptop would trust it."""
    bundle = env.get("SSL_CERT_FILE")
    return bundle if bundle and Path(bundle).is_file() else True


def pool_status(api_url: str, pool: str, auth: str | None = None) -> dict:
    """{"status": READY | NOT_READY | PAUSED | "missing" | "unauthorized" | "unreachable", "workers_online": n};
    `auth` is the server's PREFECT_SERVER_API_AUTH_STRING, when it sets one."""
    user, colon, password = (auth or "").partition(":")
    try:
        with httpx.Client(base_url=api_url, timeout=3, auth=(user, password) if colon else None) as http:
            found = http.get(f"/work_pools/{pool}")
            if found.status_code == 404:
                return {"status": "missing", "workers_online": 0}
            if found.status_code == 401:
                return {"status": "unauthorized", "workers_online": 0}
            found.raise_for_status()
            workers = http.post(f"/work_pools/{pool}/workers/filter", json={}).json()
    except httpx.HTTPError:
        return {"status": "unreachable", "workers_online": 0}
    return {"status": found.json()["status"],
            "workers_online": sum(1 for worker in workers if worker.get("status") == "ONLINE")}
