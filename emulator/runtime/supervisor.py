"""Runs a project's service plans side by side, as Railway runs a project's deployments.

Services are independent: one that crashes or completes never stops another (unlike honcho or
foreman). Each public domain gets an edge. A service starts once the services its variables reference are
Active, as Railway orders a batch deploy (push deploys are not ordered there). Everything that runs is
written to `<state>/runtime.json`, so another process (`python -m emulator down` / `status`) can see it
and stop it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Mapping

import psutil

from emulator.errors import SupervisorError
from emulator.model.plan import BuildError, ServicePlan, start_order
from emulator.runtime.edge import EDGE_HOST, Edge
from emulator.runtime.image import cache_dir
from emulator.runtime.logs import LogSink
from emulator.runtime.postgres import PREPARED_ENV, UNSAFE_FAST_ENV, postgres_server
from emulator.runtime.process import ACTIVE, CRASHED, FAILED, FINISHED, REMOVED, Deployment, ProcessGroup
from emulator.state import StateDir, write_json
from emulator.wait import wait_until

BUILTIN_KINDS = ("postgres", "replay")
_BUILTIN_READY_TIMEOUT = 60.0


class Supervisor:
    """`Supervisor(plans, state_dir).start()` … `.stop()`, or `.serve()` to run until Ctrl-C / SIGTERM.

    A BuildError in `plans` is that service's failed deploy: its message goes to its build log.
    """

    def __init__(self, plans: Mapping[str, ServicePlan | BuildError], state_dir: Path,
                 sink: LogSink | None = None, *, restart_delay: float = 0.0) -> None:
        self.state_dir = Path(state_dir)
        self.sink = sink or LogSink(self.state_dir)
        self.plans = dict(plans)
        self.build_errors = {name: str(p) for name, p in self.plans.items() if isinstance(p, BuildError)}
        self.deployments: dict[str, Deployment] = {}
        self.edges: dict[str, Edge] = {}
        self._restart_delay = restart_delay
        self._halt = threading.Event()
        self._lock = threading.RLock()
        self._own_sink = sink is None
        self._seen: dict[str, tuple[str, int | None]] = {}
        self._claimed = False  # runtime.json is ours to write only once start() found no live owner
        self._stopped = False

    # -- lifecycle

    def start(self) -> "Supervisor":
        """Start the edges, then each service once the services it references are Active (or finished)."""
        previous = read_runtime(self.state_dir)
        if previous and supervisor_alive(previous) and previous["supervisor"]["pid"] != os.getpid():
            raise SupervisorError(f"the emulator is already running from {self.state_dir} "
                               f"(pid {previous['supervisor']['pid']}); stop it with `python -m emulator down`")
        if previous and (left := stop_from_state_file(self.state_dir)):
            self.sink.system(f"stopped {', '.join(left)}, left running by an emulator that did not stop cleanly")
        self._claimed = True
        self.sink.register(self.plans)
        self.sink.add_secrets(s for p in self.plans.values() if isinstance(p, ServicePlan) for s in p.secrets)
        for name, message in self.build_errors.items():
            self.sink.build(name, message)
            self.sink.system(f"{name} {FAILED}: the build failed")
        for name, plan in self._service_plans():
            self.deployments[name] = self._deployment(plan)
        for name, plan in self._service_plans():
            if plan.public_domain:
                self.edges[name] = self._edge(plan)
        self._write_runtime()
        for batch in start_order(self.plans):
            for name in batch:
                for other in self.deployments[name].plan.depends_on:
                    for needed in [d for d in self.deployments.values() if _service(d.plan) == other]:
                        self._wait_ready(needed)
                if not self._halt.is_set():
                    self.deployments[name].start()
        return self

    def stop(self) -> None:
        """Stop every service (the apps, then the databases), then the edges; leave no process behind."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._halt.set()
        draining = max((d.plan.draining_seconds for d in self.deployments.values()), default=0)
        self.sink.system(f"stopping all services (SIGTERM, SIGKILL after up to {draining:g}s)")
        with self._lock:  # a redeploy may be adding or removing one
            deployments = list(self.deployments.values())
        apps = [d for d in deployments if d.plan.kind not in BUILTIN_KINDS]
        for batch in (apps, [d for d in deployments if d not in apps]):
            threads = [threading.Thread(target=d.stop) for d in batch]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        for edge in self.edges.values():
            edge.stop()
        survivors = [p.pid for d in self.deployments.values() for p in d.processes()]
        if survivors:
            self.sink.system(f"processes {survivors} survived the stop")
        if self._claimed:
            self._write_runtime(final=True)
        self.sink.system("all services stopped")
        if self._own_sink:
            self.sink.close()

    def serve(self, then: Callable[[Callable[[], bool]], None] | None = None) -> int:
        """Start, run until SIGINT/SIGTERM (or SIGHUP: the terminal closed), stop; the exit status is 128 + the
        signal, as honcho's.

        `then` runs once everything has started, given a callable that turns True once a stop is asked for.
        """
        received: list[int] = []

        def on_signal(signum, _frame):
            received.append(signum)
            self._halt.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            self.start()
            if then is not None and not self._halt.is_set():
                then(self._halt.is_set)
            self._halt.wait()
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 128 + received[0] if received else 0

    def __enter__(self) -> "Supervisor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- queries

    def state(self, service: str) -> str:
        if service in self.build_errors:
            return FAILED
        return self.deployments[service].state

    def restart_count(self, service: str) -> int:
        return 0 if service in self.build_errors else self.deployments[service].restarts

    def wait_state(self, service: str, states: str | Iterable[str], timeout: float) -> str:
        if service in self.build_errors:
            wanted = {states} if isinstance(states, str) else set(states)
            if FAILED not in wanted:
                raise TimeoutError(f"{service} is {FAILED} (its build failed), not {'/'.join(sorted(wanted))}")
            return FAILED
        return self.deployments[service].wait_state(states, timeout)

    def url(self, service: str) -> str | None:
        edge = self.edges.get(service)
        return edge.url if edge else None

    # -- redeploys (emulator/runtime/redeploy.py)

    def deploy_beside(self, key: str, plan: ServicePlan) -> Deployment:
        """Start a new deployment of `plan.name` under `key`, beside the one that serves the service now."""
        with self._lock:
            if self._halt.is_set():
                raise SupervisorError("the emulator is stopping; nothing is deployed")
            deployment = self._deployment(plan)
            self.plans[key], self.deployments[key] = plan, deployment
            self.sink.add_secrets(plan.secrets)
            self._write_runtime()
        return deployment.start()

    def switch(self, key: str) -> Deployment | None:
        """Make the deployment under `key` the service's own (its edge forwards to it); the one it replaces
        moves to `key` until `remove(key)`, and is returned (None if the service had none)."""
        with self._lock:
            new = self.deployments.pop(key)
            name = new.plan.name
            old, old_plan = self.deployments.get(name), self.plans.get(name)
            self.deployments[name], self.plans[name] = new, new.plan
            self.build_errors.pop(name, None)
            if old is not None:
                self.deployments[key], self.plans[key] = old, old_plan
            else:
                self.plans.pop(key, None)
            if name in self.edges:
                self.edges[name].target_port = new.plan.port
            self._write_runtime()
        return old

    def wait_stopping(self, seconds: float) -> bool:
        """Wait up to `seconds`; True as soon as the whole stack is being stopped."""
        return self._halt.wait(seconds)

    def remove(self, key: str) -> None:
        """Forget a deployment that has stopped (a replaced one, or a new one that failed)."""
        with self._lock:
            self.deployments.pop(key, None)
            self.plans.pop(key, None)
            if not self._stopped:
                self._write_runtime()

    # -- internals

    def _service_plans(self):
        return [(n, p) for n, p in self.plans.items() if isinstance(p, ServicePlan)]

    def _deployment(self, plan: ServicePlan) -> Deployment:
        common = {"restart_delay": self._restart_delay, "on_change": self._changed, "user": plan.user}
        if plan.kind == "app":
            return Deployment(plan, self.sink, **common)
        if plan.kind == "postgres":
            return _postgres(plan, self.sink, common)
        if plan.kind == "replay":
            return Deployment(plan, self.sink, ready=lambda stopped: _wait_port(plan.port, stopped), **common)
        raise ValueError(f"{plan.name}: unknown service kind {plan.kind!r}")

    def _edge(self, plan: ServicePlan) -> Edge:
        host, _, port = plan.public_domain.rpartition(":")
        if host != EDGE_HOST or not port.isdigit():
            raise ValueError(f"{plan.name}: public domain {plan.public_domain!r} is not {EDGE_HOST}:<edge port>")
        try:
            edge = Edge(int(port), plan.port, StateDir(self.state_dir).tls).start()
        except OSError as exc:
            raise SupervisorError(f"{plan.name}: cannot listen on {plan.public_domain} ({exc}); is another "
                               "emulator running? `python -m emulator down` stops it") from exc
        self.sink.system(f"{plan.name} public at {edge.url} -> 127.0.0.1:{plan.port} (http:// gets a 301 to https://)")
        return edge

    def _wait_ready(self, deployment: Deployment) -> None:
        """Until `deployment` is Active or finished: a healthcheck bounds that, else the built-ins' minute."""
        plan = deployment.plan
        timeout = plan.healthcheck_timeout if plan.healthcheck_path else _BUILTIN_READY_TIMEOUT
        if wait_until(lambda: deployment.state in FINISHED | {ACTIVE}, timeout, stopped=self._halt.is_set):
            return
        if not self._halt.is_set():
            self.sink.system(f"{deployment.name} not ready after {timeout:g}s; starting what references it anyway")

    def _changed(self, deployment: Deployment) -> None:
        with self._lock:
            now = (deployment.state, deployment.pid)
            before = self._seen.get(deployment.name, (None, None))
            self._seen[deployment.name] = now
            if now[0] != before[0]:
                self.sink.system(f"{deployment.name} {now[0]}")
            if now[1] is not None and now[1] != before[1]:
                self.sink.system(f"{deployment.name} started (pid={now[1]})")
            if self._claimed and not self._stopped:
                self._write_runtime()

    def _write_runtime(self, final: bool = False) -> None:
        with self._lock:
            services = {}
            for name, plan in self.plans.items():
                if isinstance(plan, BuildError):
                    services[name] = {"service": name, "kind": None, "state": FAILED,
                                      "error": self.sink.mask(self.build_errors[name])}
                    continue
                deployment, edge = self.deployments.get(name), self.edges.get(name)
                pid = None if final or deployment is None else deployment.pid
                services[name] = {
                    "service": _service(plan),
                    "kind": plan.kind,
                    "state": deployment.state if deployment else FAILED,
                    "pid": pid, "pgid": pid,  # each service leads its own process group
                    "started_at": deployment.started_at if pid else None,
                    "restarts": deployment.restarts if deployment else 0,
                    "exit_code": deployment.exit_code if deployment else None,
                    "port": plan.port,
                    "draining_seconds": plan.draining_seconds,
                    "public_domain": plan.public_domain,
                    "url": edge.url if edge else None,
                    "edge_port": edge.port if edge else None,
                    "logs": {stream: str(self.sink.path(plan.name, stream)) for stream in ("build", "deploy")},
                }
            me = psutil.Process()
            runtime = {
                "version": 1,
                "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "supervisor": None if final else {"pid": me.pid, "started_at": me.create_time()},
                "services": services,
            }
            write_json(StateDir(self.state_dir).runtime_file, runtime)


def _postgres(plan: ServicePlan, sink: LogSink, common: dict) -> Deployment:
    """PostgreSQL as the plan runs it (the postmaster in the foreground, its data in the service's volume),
    initialised first and ready once it accepts connections."""
    server = postgres_server(plan.env, Path(plan.cwd), plan.port, template_cache=cache_dir() / "postgres")
    if server.unsafe_fast:
        plan = dataclasses.replace(plan, build_log=(*plan.build_log, f"fsync is off ({UNSAFE_FAST_ENV}=1): faster, "
                                                    "but a crash of this machine can lose or corrupt the data; "
                                                    "Railway's Postgres keeps fsync on"))
    if server.prepared and not (server.data_dir / "PG_VERSION").exists():
        plan = dataclasses.replace(plan, build_log=(*plan.build_log, f"the new volume starts as a copy of "
                                                    f"{server.prepared} ({PREPARED_ENV}), not empty as on Railway"))
    database = plan.env.get("POSTGRES_DB") or plan.env.get("PGDATABASE") or "railway"

    def ready(stopped) -> bool:
        if not _wait_port(plan.port, stopped):
            return False
        server.wait_ready(_BUILTIN_READY_TIMEOUT)  # listening is not yet accepting: recovery may be under way
        server.create_database(database)  # as the postgres image does for POSTGRES_DB on first start
        return True

    return Deployment(plan, sink, prepare=server.init, ready=ready, **common)


def _wait_port(port: int, stopped, timeout: float = _BUILTIN_READY_TIMEOUT) -> bool:
    def answers() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    return bool(wait_until(answers, timeout, interval=0.05, stopped=stopped))


def _service(plan: ServicePlan) -> str:
    return plan.env.get("RAILWAY_SERVICE_NAME", plan.name)  # replicas share it


# -- for another process: `status` and `down`

def read_runtime(state_dir: Path) -> dict | None:
    """The last `runtime.json` written under `state_dir`, or None if the emulator never ran there."""
    return StateDir(state_dir).read_runtime()


def supervisor_alive(runtime: dict) -> bool:
    owner = runtime.get("supervisor")
    proc = _same_process(owner["pid"], owner["started_at"]) if owner else None
    return proc is not None and _running(proc)


def observed(runtime: dict) -> dict:
    """`runtime` checked against the processes, for `status`: each service's "running" says whether its
    process (the same one: pid and create time) still runs. `stale` is the supervisor that `runtime.json`
    names when it died without stopping (kill -9); then a service whose process is gone no longer shows
    the Active it was last written with, but Crashed, as Railway shows a deployment whose process ended
    without being stopped."""
    owner = runtime.get("supervisor")
    alive = supervisor_alive(runtime)
    services = {}
    for name, entry in runtime["services"].items():
        running = bool(entry.get("pgid")) and _still_ours(entry)
        state = entry.get("state")
        if not alive and not running and state not in FINISHED:
            state = CRASHED
        services[name] = {**entry, "state": state, "running": running}
    return {"supervisor": owner if alive else None, "stale": owner if owner and not alive else None,
            "services": services}


def stop_from_state_file(state_dir: Path, timeout: float | None = None) -> list[str]:
    """Stop what `runtime.json` says runs: SIGTERM the supervisor and let it stop its services; if it is
    gone or hangs, stop each service's process group directly (SIGTERM, SIGKILL after its draining).
    Returns the services it stopped."""
    runtime = read_runtime(state_dir)
    if runtime is None:
        return []
    services = runtime["services"]
    running = [name for name, s in services.items() if s.get("pid") and s.get("state") not in FINISHED]
    owner = runtime.get("supervisor")
    supervisor = _same_process(owner["pid"], owner["started_at"]) if owner else None
    stopped = []
    if supervisor is not None and supervisor.pid != os.getpid():
        stopped = list(running)
        draining = max((s.get("draining_seconds") or 0 for s in services.values()), default=0)
        supervisor.send_signal(signal.SIGTERM)
        # It drains the apps, then the databases.
        if not _wait_gone(supervisor, timeout if timeout is not None else 2 * draining + 30):
            supervisor.kill()
    for name, service in services.items():
        if service.get("pgid") and _still_ours(service):
            ProcessGroup(service["pgid"]).terminate(service.get("draining_seconds") or 0)
            if name not in stopped:
                stopped.append(name)
    after = read_runtime(state_dir) or runtime
    after["supervisor"] = None
    for service in after["services"].values():
        if service.get("pid"):
            service.update(pid=None, pgid=None, started_at=None, state=REMOVED)
    write_json(StateDir(state_dir).runtime_file, after)
    return stopped


def _wait_gone(proc: psutil.Process, timeout: float) -> bool:
    # Polled rather than psutil's wait(), which would reap the process, and its exit status, from a parent
    # that is waiting for it (the shell or test that ran `up`).
    def gone() -> bool:
        try:
            return proc.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    return bool(wait_until(gone, timeout, interval=0.05))


def _same_process(pid: int, started_at: float | None) -> psutil.Process | None:
    """The process `pid` if it is still the one that started at `started_at` (pids get reused)."""
    try:
        proc = psutil.Process(pid)
        return proc if started_at is not None and abs(proc.create_time() - started_at) < 0.01 else None
    except psutil.Error:
        return None


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _still_ours(service: dict) -> bool:
    pgid, started_at = service["pgid"], service.get("started_at")
    if started_at is None:
        return False
    if psutil.pid_exists(pgid):
        leader = _same_process(pgid, started_at)
        if leader is None:
            return False  # the pid is another process's now
        if _running(leader):
            return True
    # The leader is gone (or a zombie nobody reaps) but the group lives on: its members were all started
    # after the leader.
    members = ProcessGroup(pgid).track()
    try:
        return bool(members) and all(p.create_time() >= started_at - 0.01 for p in members)
    except psutil.Error:
        return False
