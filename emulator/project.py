"""One local Railway project: the stack file, the repository it deploys, and its state dir; what each command does.

The repository is the checkout the repo services build from (`--repo`, default: the stack file's directory);
the stack file may live elsewhere, and the state dir (emulator/state.py) sits beside the stack file.
"""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, TextIO

from emulator.errors import EmulatorError, StepError
from emulator.model.plan import BuildError, ServicePlan
from emulator.model.planner import plan_stack
from emulator.model.stack import Stack, load_stack
from emulator.model.variables import referenced_services
from emulator.runtime import steps
from emulator.runtime.build import build_stack, prepare_stack, remove_homes
from emulator.runtime.control import RequestWatcher, submit
from emulator.runtime.logs import LogSink
from emulator.runtime.process import ACTIVE, FINISHED
from emulator.runtime.redeploy import Redeployer
from emulator.runtime.secrets import secret_store
from emulator.runtime.snapshot import snapshot
from emulator.runtime.supervisor import Supervisor, observed, stop_from_state_file, supervisor_alive
from emulator.state import STACK_FILE, StateDir
from emulator.wait import wait_until

# Railway's draining default is 0 s, which kills a worker's flow runs mid-way; locally services get time
# to shut down cleanly unless the stack sets RAILWAY_DEPLOYMENT_DRAINING_SECONDS or `up` is told otherwise.
LOCAL_DRAINING_SECONDS = 10.0
# Railway documents no restart backoff, but each restart there starts a container, which takes a moment;
# with none at all, ten retries are spent in under a second, before a sibling server is even healthy.
LOCAL_RESTART_DELAY = 1.0
REPLAY_SOURCE = "replay"
_SETTLED = FINISHED | {ACTIVE}


@dataclass
class UpOptions:
    variant: str | None = None
    variables: dict[str, dict[str, str]] = field(default_factory=dict)  # {service or "shared": {NAME: value}}
    live: bool = False  # the real Hyperliquid API instead of the replay service
    replay: dict[str, str] = field(default_factory=dict)  # variables for every replay service (faults, folder)
    draining_seconds: float = LOCAL_DRAINING_SECONDS
    deploy: bool = True  # after the services are Active: the stack's [[steps]]
    services: list[str] = field(default_factory=list)  # only these and what they reference; empty: all
    step_timeouts: dict[str, float] = field(default_factory=dict)  # step name -> seconds, over the stack file's


def find_stack_file(start: Path | None = None) -> Path:
    """`railway.stack.toml` in `start` (default: the working directory) or the nearest parent holding one."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / STACK_FILE).is_file():
            return folder / STACK_FILE
    raise EmulatorError(f"no {STACK_FILE} in {here} or its parents; run from the repository or pass --stack FILE")


class Project:
    def __init__(self, stack_file: Path, state_dir: Path | None = None, repo_dir: Path | None = None) -> None:
        self.stack_file = Path(stack_file).resolve()
        self.repo_dir = Path(repo_dir).resolve() if repo_dir else self.stack_file.parent
        if not self.repo_dir.is_dir():
            raise EmulatorError(f"--repo {repo_dir}: no such directory; give the repository to deploy")
        if not self.stack_file.is_file():
            raise EmulatorError(f"{self.stack_file}: no such stack file; create it or pass --stack PATH")
        self.state = StateDir(state_dir) if state_dir else StateDir.beside(self.stack_file)
        self.state_dir = self.state.root

    # -- up

    def up(self, options: UpOptions, sink: LogSink | None = None) -> int:
        """Run the stack in the foreground until SIGINT/SIGTERM; the exit status is 128 + the signal."""
        runtime = self.state.read_runtime()
        if runtime and supervisor_alive(runtime):
            raise EmulatorError(f"the emulator is already running from {self.state_dir} "
                                f"(pid {runtime['supervisor']['pid']}); `python -m emulator status` shows it, "
                                "`python -m emulator down` stops it")
        left = stop_from_state_file(self.state_dir)  # what an emulator that was killed left running
        remove_homes(self.state_dir)
        stack = self.stack(options)
        ports, domains = previous_ports(self.state.read_runtime(), free_only=True)
        plans = prepare_stack(stack, self.repo_dir, self.state_dir, ports, domains)
        plans = {name: with_draining(plan, options.draining_seconds) for name, plan in plans.items()}
        sink = sink or LogSink(self.state_dir)
        sink.register(plans)
        addresses = _addresses(stack, plans, secret_store(self.state_dir))
        records = [{"name": step.name, "action": step.action, "target": step.target, "state": "pending"}
                 for step in (stack.steps if options.deploy else ())]
        self.state.update_project(options=dataclasses.asdict(options), pid=os.getpid(), phase="starting",
                                  message=None, steps=records, repo=str(self.repo_dir),
                                  stack_file=str(self.stack_file), **addresses)
        if left:
            sink.system(f"stopped {', '.join(left)}, left running by an emulator that did not stop cleanly")
        only = f", only {', '.join(stack.services)} (--service)" if options.services else ""
        sink.system(f"{stack.project} ({stack.environment}), variant {stack.variant or 'base'}{only}, "
                    f"repository {self.repo_dir}, state in {self.state_dir}")
        supervisor = Supervisor(plans, self.state_dir, sink, restart_delay=LOCAL_RESTART_DELAY)
        redeployer = Redeployer(self, options, supervisor)
        redeployer.remember_deployed(stack)

        def then(stopped: Callable[[], bool]) -> None:
            RequestWatcher(self.state, redeployer.handle).start(stopped)  # `python -m emulator deploy`
            self._after_start(supervisor, stack, plans, records, stopped)

        try:
            return supervisor.serve(then=then)
        finally:
            remove_homes(self.state_dir, plans)

    def record_addresses(self, stack: Stack, plans: Mapping[str, ServicePlan | BuildError]) -> None:
        """The Prefect server's addresses and the [urls] in project.json, after a redeploy moved a service."""
        self.state.update_project(**_addresses(stack, plans, secret_store(self.state_dir)))

    def stack(self, options: UpOptions) -> Stack:
        stack = load_stack(self.stack_file, options.variant, options.variables)
        if options.services:
            stack = only_services(stack, options.services)
        unknown = set(options.step_timeouts) - {step.name for step in stack.steps}
        if unknown:
            raise EmulatorError(f"--step-timeout {sorted(unknown)[0]}: the stack has no such step; its steps: "
                                f"{', '.join(step.name for step in stack.steps) or 'none'}")
        stack = dataclasses.replace(stack, steps=tuple(
            dataclasses.replace(step, timeout=options.step_timeouts.get(step.name, step.timeout))
            for step in stack.steps))
        replay = [name for name, service in stack.services.items() if service.source == REPLAY_SOURCE]
        if options.live:
            return without_services(stack, replay)
        for name in replay:
            stack = with_variables(stack, name, options.replay)
        return stack

    def _after_start(self, supervisor: Supervisor, stack: Stack, plans: Mapping[str, ServicePlan | BuildError],
                     records: list[dict], stopped: Callable[[], bool]) -> None:
        log = supervisor.sink.system
        _settle(supervisor, stopped)
        if stopped():
            return
        if not records:
            self._ready(log)
            return
        try:
            source = snapshot(self.repo_dir, self.state.source)
        except EmulatorError as exc:
            return self._failed(log, f"the snapshot of {self.repo_dir} failed: {exc}")
        log(f"snapshot {source.commit[:12]} of {self.repo_dir} -> {source.url} "
            f"({'new' if source.changed else 'unchanged since the last up'})")
        context = steps.StepContext(
            plans=plans, shared=stack.shared, secret=secret_store(self.state_dir), repo_dir=self.repo_dir,
            prefect_api=self.state.read_project().get("api_url"), stopped=stopped, log=log,
            state=lambda name: _service_state(supervisor, name),
            snapshot={"EMULATOR_SNAPSHOT_URL": source.url, "EMULATOR_SNAPSHOT_BRANCH": source.branch,
                      "EMULATOR_SNAPSHOT_COMMIT": source.commit})
        self._run_steps(stack, records, context, log, stopped)

    def _run_steps(self, stack: Stack, records: list[dict], context: steps.StepContext, log,
                   stopped: Callable[[], bool]) -> None:
        """Each step in turn, its record in project.json as it goes; the first failure ends them."""
        for step, record in zip(stack.steps, records):
            record["state"] = "running"
            self.state.update_project(phase=f"step {step.name}", steps=records)
            log(f"step {step.name}: {step.action}" + (f" as {step.service}" if step.service else ""))
            context.log = lambda line, name=step.name: log(f"{name} | {line}")
            try:
                record.update(steps.run_step(step, context))
            except StepError as exc:
                record.update(state="failed", detail=str(exc), **exc.record)
                self.state.update_project(steps=records)
                return self._failed(log, str(exc))
            except Exception as exc:  # noqa: BLE001 - the services keep running; say what failed and serve on
                record.update(state="failed", detail=str(exc))
                self.state.update_project(steps=records)
                return self._failed(log, f"step {step.name} failed: {exc}")
            if stopped():
                return
            record["state"] = "done"
            self.state.update_project(steps=records)
            log(f"step {step.name}: done")
        self._ready(log)

    def _ready(self, log) -> None:
        project = self.state.update_project(phase="ready")
        for line in summary(project, self.state):
            log(line)
        log("Ctrl-C or `python -m emulator down` stops every service; the data stays for the next `up`")

    def _failed(self, log, message: str) -> None:
        project = self.state.update_project(phase="failed", message=message)
        log(f"problem: {message}")
        for line in summary(project, self.state):
            log(line)

    # -- detached up

    def wait_detached(self, child: subprocess.Popen, timeout: float) -> int:
        """Wait for a background `up` to be ready (0), to have a problem while still running (1), or to exit."""
        console = self.state.console_log

        def settled() -> dict | bool:
            project = self.state.read_project()
            ours = project.get("pid") == child.pid and project.get("phase") in ("ready", "failed")
            return child.poll() is not None or (ours and project)

        project = wait_until(settled, timeout)
        if project is None:
            print(f"emulator: not ready after {timeout:g}s; still starting in the background (pid {child.pid}), "
                  f"see {console}", file=sys.stderr)
            return 1
        if child.poll() is not None:
            tail = console.read_text(errors="replace").splitlines()[-30:] if console.is_file() else []
            print("\n".join(tail))
            print(f"emulator: the background `up` exited with code {child.returncode}; "
                  f"its output is in {console}", file=sys.stderr)
            return child.returncode or 1
        if project["phase"] == "failed":
            print(f"problem: {project['message']}")
        for line in summary(project, self.state):
            print(line)
        print(f"running in the background (pid {child.pid}); logs: {console} or `python -m emulator logs`; "
              "stop it with `python -m emulator down`")
        return 0 if project["phase"] == "ready" else 1

    # -- deploy

    def deploy(self, services: list[str], timeout: float, out: TextIO | None = None) -> int:
        """Have the running `up` redeploy `services` (none: those a push of the tree would), printing its
        progress; 0 once each is Active, 1 if a build or deploy failed (the previous deployment stays)."""
        runtime = self.state.read_runtime()
        if not (runtime and supervisor_alive(runtime)):
            raise EmulatorError(f"no emulator is running from {self.state_dir}; `python -m emulator up` deploys "
                                "the stack first, then `deploy` redeploys it")
        return submit(self.state, {"services": services}, out or sys.stdout, lambda: supervisor_alive(runtime),
                      timeout)

    def watch(self, interval: float, timeout: float) -> int:
        """`deploy --watch`: every `interval` seconds, what a push of the tree would redeploy, until Ctrl-C."""
        print(f"watching {self.repo_dir}; each change is deployed as a push would be (Ctrl-C stops)", flush=True)
        try:
            while True:
                heard = io.StringIO()
                self.deploy([], timeout, out=heard)
                if "nothing to deploy" not in heard.getvalue():
                    print(heard.getvalue(), end="", flush=True)
                time.sleep(interval)
        except KeyboardInterrupt:
            return 0

    # -- down, reset

    def down(self) -> list[str]:
        """Stop what runs; the services it stopped."""
        stopped = stop_from_state_file(self.state_dir)
        remove_homes(self.state_dir)
        return stopped

    def reset(self) -> list[str]:
        """Stop what runs, then delete the whole state dir: volumes, secrets, logs, the source snapshot."""
        stopped = self.down()
        self.state.wipe()
        return stopped

    # -- status

    def status(self) -> dict:
        runtime = observed(self.state.read_runtime() or {"supervisor": None, "services": {}})
        project = self.state.read_project()
        running = runtime["supervisor"] is not None
        services: dict[str, dict] = {}
        for name, entry in runtime["services"].items():
            group = services.setdefault(entry.get("service", name), {"replicas": {}, "url": None, "error": None})
            group["replicas"][name] = {key: entry.get(key)
                                       for key in ("state", "running", "pid", "port", "restarts", "exit_code")}
            group["url"] = group["url"] or entry.get("url")
            group["error"] = group["error"] or entry.get("error")
        for group in services.values():
            group["state"] = _group_state([r["state"] for r in group["replicas"].values()])
        pool = None
        if running and project.get("api_url") and project.get("pool"):
            pool = {"name": project["pool"], **steps.pool_status(project["api_url"], project["pool"],
                                                                  project.get("api_auth"))}
        options = project.get("options") or {}
        return {
            "state_dir": str(self.state_dir),
            "running": running,
            "pid": runtime["supervisor"]["pid"] if running else None,
            # The emulator died without stopping (kill -9): its pid, and the services still running without it.
            "stale": runtime["stale"] and {"pid": runtime["stale"]["pid"], "left_running": sorted(
                {e.get("service", n) for n, e in runtime["services"].items() if e["running"]})},
            "variant": options.get("variant"),
            "phase": project.get("phase") if running else None,
            "message": project.get("message") if running else None,
            "services": services,
            "ui_url": project.get("ui_url"),
            "api_url": project.get("public_api_url") or project.get("api_url"),
            "urls": project.get("urls") or {},
            "pool": pool,
            "steps": project.get("steps") or [],
        }

    # -- logs

    def log_files(self, service: str | None, stream: str) -> list[tuple[str, Path]]:
        """(name, file) of `service`'s `stream` log ("build" or "deploy"), one per replica; every service's
        and the emulator's own when `service` is None."""
        runtime = self.state.read_runtime() or {"services": {}}
        logs = self.state.logs
        instances = {name: entry.get("service", name) for name, entry in runtime["services"].items()}
        if service is None:
            return [("system", logs / "emulator.log"), *[(n, logs / f"{n}.{stream}.log") for n in instances]]
        chosen = [name for name, group in instances.items() if service in (name, group)]
        if not chosen:
            known = sorted(set(instances.values())) or ["none yet: run `python -m emulator up` first"]
            raise EmulatorError(f"no service named {service!r}; services: {', '.join(known)}")
        return [(name, logs / f"{name}.{stream}.log") for name in chosen]

    # -- run

    def run(self, service: str, argv: list[str], variant: str | None = None) -> int:
        """`railway run`: `argv` with `service`'s variables, inside its modelled runtime (PATH, HOME), planned
        as the last `up` was (or as `variant`) on the running stack's ports, so it reaches the services.
        Returns the command's exit status."""
        if not argv:
            raise EmulatorError("nothing to run; give the command after --, e.g. `run worker -- git --version`")
        runtime = self.state.read_runtime()
        saved = self.state.read_project().get("options") or {}
        known = {f.name for f in dataclasses.fields(UpOptions)}  # a state dir from an older emulator has others
        options = UpOptions(**{key: value for key, value in saved.items() if key in known})
        options.services = []  # like `railway run`, a service's variables whether or not it is deployed
        if variant is not None:
            options.variant = variant
        stack = self.stack(options)
        ports, domains = previous_ports(runtime, free_only=False)
        planned = plan_stack(stack, self.repo_dir, self.state_dir, ports, domains, secret=secret_store(self.state_dir))
        # One replica's image and filesystem: the command runs in it, the other services are not touched.
        first = _instances(planned, service)[0]
        plans = build_stack({first: planned[first]}, self.repo_dir, self.state_dir)
        try:
            plan = _pick(plans, service)
            env = plan.env if plan.kind == "app" else {**os.environ, **plan.env}
            try:
                proc = subprocess.Popen(argv, env=env, cwd=plan.cwd)
            except FileNotFoundError:
                print(f"emulator run: {argv[0]}: command not found in {service}'s runtime "
                      f"(PATH={env.get('PATH', '')})", file=sys.stderr)
                return 127
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the command's to handle
            try:
                code = proc.wait()
            finally:
                signal.signal(signal.SIGINT, previous)
            return 128 - code if code < 0 else code
        finally:
            remove_homes(self.state_dir, plans)


def _addresses(stack: Stack, plans: Mapping[str, ServicePlan | BuildError], secret) -> dict:
    """The Prefect server's addresses and work pool as [prefect] names them, and the [urls] to print."""
    found, pool = None, None
    if stack.prefect is not None:
        server = steps.service_plans(plans).get(stack.prefect.server)
        found = steps.endpoints(server) if server else None
    try:
        urls = steps.resolve_values(stack.urls, plans, stack.shared, secret)
        if stack.prefect is not None and stack.prefect.work_pool:
            pool = steps.resolve_values({"pool": stack.prefect.work_pool}, plans, stack.shared, secret)["pool"]
    except StepError:  # a variant without the service they name: nothing to print or ask
        urls = {}
    return {
        "api_url": found.api_url if found else None,
        "public_api_url": found.public_api_url if found else None,
        "ui_url": found.ui_url if found else None,
        # The server's own credentials, for `status` to read the pool as its owner would (docs/railway.md §5).
        "api_auth": server.env.get("PREFECT_SERVER_API_AUTH_STRING") if found else None,
        "pool": pool,
        "urls": urls,
    }


def summary(project: dict, state: StateDir) -> list[str]:
    """The stack's [urls], one a line; a note on the edge's certificate under the first https:// one."""
    urls = project.get("urls") or {}
    width = max((len(label) for label in urls), default=0) + 1
    lines = []
    for label, url in urls.items():
        note = ""
        if url.startswith("https://127.0.0.1:") and not any("certificate" in line for line in lines):
            note = f"  (self-signed certificate: accept it once, or trust {state.edge_cert})"
        lines.append(f"{(label + ':').ljust(width)} {url}{note}")
    return lines


def _service_state(supervisor: Supervisor, service: str) -> str:
    """A service's state, its replicas' if it has several (Active if any is)."""
    states = [supervisor.state(name) for name, plan in supervisor.plans.items()
              if name == service or (isinstance(plan, ServicePlan) and plan.env.get("RAILWAY_SERVICE_NAME") == service)]
    if not states:
        return "not deployed"
    return ACTIVE if ACTIVE in states else states[0]


def previous_ports(runtime: dict | None, free_only: bool) -> tuple[dict[str, int], dict[str, str]]:
    """The ports (by instance) and edge domains (by service) of the last run, so a redeploy keeps its
    addresses and an open browser tab keeps working; with `free_only`, only those still free."""
    ports, domains = {}, {}
    for name, entry in ((runtime or {}).get("services") or {}).items():
        if entry.get("port") and (not free_only or _free(entry["port"])):
            ports[name] = entry["port"]
        if entry.get("public_domain") and entry.get("edge_port") and (not free_only or _free(entry["edge_port"])):
            domains[entry.get("service", name)] = entry["public_domain"]
    return ports, domains


def with_draining(plan: ServicePlan | BuildError, seconds: float) -> ServicePlan | BuildError:
    """The local draining default, where the stack does not set RAILWAY_DEPLOYMENT_DRAINING_SECONDS."""
    if isinstance(plan, BuildError) or "RAILWAY_DEPLOYMENT_DRAINING_SECONDS" in plan.env:
        return plan
    return dataclasses.replace(plan, draining_seconds=seconds)


def without_services(stack: Stack, names: list[str]) -> Stack:
    """`stack` without `names`, and without every variable that references one of them."""
    services = {}
    for name, service in stack.services.items():
        if name not in names:
            kept = {k: v for k, v in service.variables.items() if not referenced_services(v) & set(names)}
            services[name] = dataclasses.replace(service, variables=kept)
    return dataclasses.replace(stack, services=services)


def only_services(stack: Stack, names: list[str]) -> Stack:
    """`names` and every service their variables reference, directly or through another service."""
    for name in names:
        if name not in stack.services:
            raise EmulatorError(f"--service {name}: the stack has no such service; it has "
                                f"{', '.join(stack.services)}")
    kept, pending = set(), list(names)
    while pending:
        name = pending.pop()
        if name not in kept:
            kept.add(name)
            for value in stack.services[name].variables.values():
                pending.extend(referenced_services(value) & stack.services.keys())
    return without_services(stack, [name for name in stack.services if name not in kept])


def with_variables(stack: Stack, name: str, variables: Mapping[str, str]) -> Stack:
    service = stack.services[name]
    services = {**stack.services, name: dataclasses.replace(service, variables={**service.variables, **variables})}
    return dataclasses.replace(stack, services=services)


def app_database_url(plans: Mapping[str, ServicePlan | BuildError]) -> str | None:
    """The app database as the services reach it: an app's DATABASE_URL, else the Postgres service's."""
    found = [p for p in plans.values() if isinstance(p, ServicePlan) and p.env.get("DATABASE_URL")]
    found.sort(key=lambda plan: plan.kind != "app")
    return found[0].env["DATABASE_URL"] if found else None


def _instances(plans: Mapping[str, ServicePlan | BuildError], service: str) -> list[str]:
    """The keys of `service`'s plans: its replicas', or its one BuildError's."""
    names = [name for name, plan in plans.items()
             if name == service or (isinstance(plan, ServicePlan) and plan.env.get("RAILWAY_SERVICE_NAME") == service)]
    if not names:
        services = sorted({p.env.get("RAILWAY_SERVICE_NAME", n) if isinstance(p, ServicePlan) else n
                           for n, p in plans.items()})
        raise EmulatorError(f"no service named {service!r}; services: {', '.join(services)}")
    return names


def _pick(plans: Mapping[str, ServicePlan | BuildError], service: str) -> ServicePlan:
    plan = plans[_instances(plans, service)[0]]
    if isinstance(plan, BuildError):
        raise EmulatorError(f"{service}: its build fails, so it has no environment to run in: {plan}")
    return plan


def _group_state(states: list[str]) -> str:
    if len(set(states)) == 1:
        return states[0]
    counts = {state: states.count(state) for state in dict.fromkeys(states)}
    return ", ".join(f"{count}/{len(states)} {state}" for state, count in counts.items())


def _settle(supervisor: Supervisor, stopped: Callable[[], bool]) -> None:
    """Wait until every deployment is past Deploying (healthchecks bound how long that takes)."""
    for deployment in supervisor.deployments.values():
        wait_until(lambda: deployment.state in _SETTLED, deployment.plan.healthcheck_timeout + 60, interval=0.5,
                   stopped=stopped)


def _free(port: int) -> bool:
    """Whether a service or the edge could listen on `port` now. Bound as they bind, with SO_REUSEADDR: only
    another listener stops that, not the connections an edge closed first, which the kernel keeps in
    TIME_WAIT on its port for a minute after `down` (a plain bind fails on them, and the domain moved)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
