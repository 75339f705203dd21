"""Redeploys of a running stack (`python -m emulator deploy [SERVICE...]`), as Railway redeploys on a push.

What Railway does (railwayapp/docs c2a634f):
- `deployments/github-autodeploys.md`: services linked to a repository "automatically deploy when new
  commits are pushed to the connected branch"; `builds/build-configuration.md`: unless their Watch Paths
  match none of the changed files (emulator/model/watch_paths.py). A deploy of named services (the
  dashboard's Deploy, `railway up`) builds them whatever changed.
- `deployments/reference.md`: Building → Deploying (waits for the healthcheck, if any) → Active; a build
  or deploy error makes the new deployment Failed, and the previous one stays as it was. "older deploys
  ... are eventually removed - first having their status updated to Removing before they are finally
  Removed"; RAILWAY_DEPLOYMENT_OVERLAP_SECONDS is the time "from when a new deployment becomes Active until
  the previous deployment is removed" (default 0, `variables/reference.md`).
- `deployments/deployment-teardown.md`: "Once the new deployment is active, the previous deployment is sent
  a SIGTERM signal and given time to gracefully shutdown before being forcefully stopped with a SIGKILL",
  RAILWAY_DEPLOYMENT_DRAINING_SECONDS, "its default value is 0" (`variables/reference.md`).

So a redeploy snapshots the tree, builds the new deployment beside the old one, waits for it to be Active,
switches the edge to it, then drains the old one: SIGTERM to its main process, SIGKILL after its draining
seconds. The draining is the old deployment's own RAILWAY_DEPLOYMENT_DRAINING_SECONDS, else Railway's 0,
not `up`'s local default for stopping the whole stack: a redeploy is Railway's operation and must kill
what Railway kills. (Railway's docs do not say whether a changed value applies to the deployment it
replaces; taking the old one's is the cautious reading: set it, deploy, then rely on it.)

Locally a redeployed service gets a new port, since the old deployment still holds its own; its edge
follows, but another service's variable that names it over the private network keeps the old port until
that service is redeployed too (said in the deploy output). A user-set PORT cannot be shared, so there
the old deployment is drained first and the new one starts after it, with no overlap.
"""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import threading
from typing import TYPE_CHECKING, Callable

from emulator.errors import EmulatorError
from emulator.model.plan import BuildError, ServicePlan
from emulator.model.planner import plan_stack
from emulator.model.stack import Stack
from emulator.model.watch_paths import triggering
from emulator.runtime.build import build_stack, remove_homes
from emulator.runtime.process import ACTIVE, FINISHED, Deployment
from emulator.runtime.secrets import secret_store
from emulator.runtime.snapshot import snapshot
from emulator.runtime.supervisor import Supervisor

if TYPE_CHECKING:
    from emulator.project import Project, UpOptions

DRAINING = "RAILWAY_DEPLOYMENT_DRAINING_SECONDS"
OVERLAP = "RAILWAY_DEPLOYMENT_OVERLAP_SECONDS"
_START_GRACE = 60.0  # past a healthcheck's timeout (or, without one, for the process to start)


class Redeployer:
    """Carries out deploy requests (emulator/runtime/control.py) on the running supervisor."""

    def __init__(self, project: "Project", options: "UpOptions", supervisor: Supervisor) -> None:
        self.project, self.options, self.supervisor = project, options, supervisor
        self.state = project.state
        self._keys = itertools.count(1)
        self._lock = threading.Lock()

    def remember_deployed(self, stack: Stack) -> None:
        """What `up` just built from: each repo service's commit, to compare the next push against."""
        repo = [name for name, service in stack.services.items() if service.source == "repo"]
        try:
            commit = snapshot(self.project.repo_dir, self.state.source).commit if repo else None
        except EmulatorError:  # the build log already says why; a later deploy then deploys everything
            commit = None
        self.state.update_project(deployed={name: commit for name in repo} if commit else {})

    def handle(self, request: dict, say: Callable[[str], None]) -> int:
        with self._lock:  # one deploy at a time, as Railway queues a service's deployments
            return self._deploy(list(request.get("services") or []), say)

    def _deploy(self, asked: list[str], say: Callable[[str], None]) -> int:
        stack = self.project.stack(self.options)  # the stack as `up` runs it (its variant, --service, --set)
        repo = [name for name, service in stack.services.items() if service.source == "repo"]
        unknown = [name for name in asked if name not in stack.services]
        if unknown:
            raise EmulatorError(f"no service named {unknown[0]!r}; the stack's repo services: {', '.join(repo)}")
        builtin = [name for name in asked if name not in repo]
        if builtin:
            raise EmulatorError(f"{builtin[0]} is not built from the repository, so there is nothing to redeploy; "
                                f"the repo services: {', '.join(repo)}")
        source = snapshot(self.project.repo_dir, self.state.source)
        deployed = self.state.read_project().get("deployed") or {}
        say(f"snapshot {source.commit[:12]} of {self.project.repo_dir}")
        chosen = asked or self._triggered(stack, repo, deployed, source.commit, say)
        if not chosen:
            say("nothing to deploy")
            return 0
        failed = []
        for name in chosen:
            if not self._deploy_service(stack, name, say):
                failed.append(name)
                continue
            deployed[name] = source.commit
            self.state.update_project(deployed=deployed)
            if stack.prefect is not None and name == stack.prefect.server:
                self._update_addresses(stack)
        if failed:
            say(f"failed: {', '.join(failed)} (the previous deployment stays Active)")
            return 1
        return 0

    def _triggered(self, stack: Stack, repo: list[str], deployed: dict, commit: str, say) -> list[str]:
        """The repo services a push of `commit` redeploys: those whose Watch Paths match a changed file."""
        chosen = []
        for name in repo:
            before = deployed.get(name)
            if before == commit:
                say(f"{name}: unchanged since its last deploy")
                continue
            changed = _changed_files(self.state.source, before, commit) if before else None
            patterns = stack.services[name].watch_paths
            if changed is None:
                say(f"{name}: no earlier deploy to compare with: deploying")
                chosen.append(name)
            elif matching := triggering(patterns, changed):
                shown = ", ".join(matching[:5]) + (" ..." if len(matching) > 5 else "")
                say(f"{name}: {len(matching)} changed file(s) " + (f"match its watch paths: {shown}" if patterns
                                                                    else f"(no watch paths): {shown}"))
                chosen.append(name)
            else:
                say(f"{name}: skipped, none of the {len(changed)} changed file(s) match its watch paths "
                    f"({', '.join(patterns)})")
        return chosen

    def _deploy_service(self, stack: Stack, name: str, say: Callable[[str], None]) -> bool:
        supervisor = self.supervisor
        current = {key: plan for key, plan in supervisor.plans.items() if "~" not in key}
        mine = [key for key, plan in current.items() if _service_of(key, plan) == name]
        ports = {key: plan.port for key, plan in current.items()
                 if isinstance(plan, ServicePlan) and key not in mine}
        domains = {_service_of(key, plan): plan.public_domain for key, plan in current.items()
                   if isinstance(plan, ServicePlan) and plan.public_domain}
        say(f"{name}: building")
        planned = plan_stack(stack, self.project.repo_dir, self.state.root, ports, domains,
                             secret=secret_store(self.state.root))
        # Only this service is built: the others keep running what they were deployed with.
        new = build_stack({key: plan for key, plan in planned.items() if _service_of(key, plan) == name},
                          self.project.repo_dir, self.state.root)
        errors = [plan for plan in new.values() if isinstance(plan, BuildError)]
        if errors:
            supervisor.sink.build(name, f"Build failed: {errors[0]}")
            remove_homes(self.state.root, new)
            say(f"{name}: the build failed: {errors[0]}")
            return False
        self._warn_private_references(stack, name, say)
        from emulator.project import with_draining  # (project imports this module) `down`'s local default
        for key, plan in new.items():
            if not self._replace(key, with_draining(plan, self.options.draining_seconds), say):
                remove_homes(self.state.root, {key: plan for key, plan in new.items()})
                return False
        return True

    def _replace(self, instance: str, plan: ServicePlan, say: Callable[[str], None]) -> bool:
        """One instance: the new deployment beside the old one, then the switch, then the old one's drain."""
        supervisor = self.supervisor
        key = f"{instance}~{next(self._keys)}"
        old = supervisor.deployments.get(instance)
        if old is not None and old.plan.port == plan.port:  # a user-set PORT: no room for both
            say(f"{instance}: PORT {plan.port} is set on the service, so locally the old deployment stops first")
            self._drain(old, say, wait=True)
        deployment = supervisor.deploy_beside(key, plan)
        say(f"{instance}: deploying beside the running deployment (port {plan.port}"
            + (", healthcheck " + plan.healthcheck_path if plan.healthcheck_path else "") + ")")
        timeout = (plan.healthcheck_timeout if plan.healthcheck_path else 0) + _START_GRACE
        try:
            state = deployment.wait_state({ACTIVE} | FINISHED, timeout)
        except TimeoutError:
            state = deployment.state
        if state != ACTIVE:
            deployment.stop()
            supervisor.remove(key)
            say(f"{instance}: the new deployment is {state}, not Active; the previous one keeps serving "
                f"(`python -m emulator logs {instance} --build` says why)")
            return False
        replaced = supervisor.switch(key)
        say(f"{instance}: the new deployment is Active (pid {deployment.pid})"
            + (f"; {instance}'s domain now reaches it" if plan.public_domain else ""))
        if replaced is not None and replaced.state not in FINISHED:
            self._drain(replaced, say, key=key)
        elif replaced is not None:
            replaced.stop()
            supervisor.remove(key)
        return True

    def _drain(self, old: Deployment, say: Callable[[str], None], key: str | None = None,
               wait: bool = False) -> None:
        """Overlap, then SIGTERM, then SIGKILL after the old deployment's draining seconds (Railway's 0 unset)."""
        overlap, draining = _seconds(old.plan, OVERLAP), _seconds(old.plan, DRAINING)
        old.plan = dataclasses.replace(old.plan, draining_seconds=draining)
        say(f"{old.name}: the previous deployment (pid {old.pid}) "
            + (f"overlaps for {overlap:g}s, then " if overlap else "")
            + f"gets SIGTERM, and SIGKILL after {draining:g}s ({DRAINING}"
            + ("" if DRAINING in old.plan.env else ", Railway's default") + ")")

        def drain() -> None:
            if overlap:
                self.supervisor.sink.deploy(old.name, f"Overlapping with the new deployment for {overlap:g}s")
                self.supervisor.wait_stopping(overlap)  # a stop of the whole stack ends the overlap early
            old.stop()
            if key is not None:
                self.supervisor.remove(key)
            remove_homes(self.state.root, {old.name: old.plan})

        if wait:
            drain()
            return
        # The deploy is done once the new deployment is Active; a long drain must not hold the next one.
        threading.Thread(target=drain, name=f"drain-{old.name}", daemon=True).start()

    def _warn_private_references(self, stack: Stack, name: str, say: Callable[[str], None]) -> None:
        others = [other for other, service in stack.services.items() if other != name and any(
            f"{name}.RAILWAY_PRIVATE_DOMAIN" in value.replace(" ", "") or f"{name}.PORT" in value.replace(" ", "")
            for value in service.variables.values())]
        if others:
            say(f"note: {', '.join(others)} reach {name} over the private network; locally that is a port, and the "
                f"new deployment has a new one, so they keep reaching the old deployment until redeployed "
                "(on Railway the private name follows the new deployment)")

    def _update_addresses(self, stack: Stack) -> None:
        """The Prefect server moved to a new port: `status` and the steps must find it there."""
        self.project.record_addresses(stack, {key: plan for key, plan in self.supervisor.plans.items()
                                              if "~" not in key})


def _changed_files(bare, before: str, after: str) -> list[str] | None:
    """Files that differ between two snapshot commits; None when `before` is no longer known."""
    result = subprocess.run(["git", "--git-dir", str(bare), "diff", "--name-only", "--no-renames", before, after],
                            capture_output=True, text=True)
    return result.stdout.split("\n")[:-1] if result.returncode == 0 else None


def _service_of(key: str, plan: ServicePlan | BuildError) -> str:
    if isinstance(plan, ServicePlan):
        return plan.env.get("RAILWAY_SERVICE_NAME", plan.name)
    return key.partition(".")[0]


def _seconds(plan: ServicePlan, variable: str) -> float:
    try:
        return max(0.0, float(plan.env.get(variable, "0") or 0))
    except ValueError:
        return 0.0

