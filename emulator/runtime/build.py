"""Railway's Building step, carried out for the model's plans: everything that touches the disk before a
deployment's process starts.

`emulator.model.planner` says what to build and where; here the repository is snapshotted (what
`railway up` uploads) and exported, each repo service's builder is detected from those files and its image
venv built, and each replica gets its fresh app directory and HOME, its volume mounted, the runtime bin
directory and the trust bundle written; a postgres plan gets its volume directory and the postmaster's
command. A service whose build fails gets a BuildError with the build's own message, which the
supervisor shows as that deployment's Failed state and build log, and the others are built anyway.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import hashlib
import json
import os
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from typing import Mapping

from emulator.model.builders import build as detect
from emulator.model.plan import BuildError, ServicePlan
from emulator.model.planner import built, differences, plan_stack, runtime_bin
from emulator.model.stack import Service, Stack
from emulator.runtime.apt import install_stand_in
from emulator.runtime.edge import trust_bundle
from emulator.runtime.image import build_venv, copy_app, export
from emulator.runtime.postgres import postgres_server
from emulator.runtime.secrets import secret_store
from emulator.runtime.snapshot import Snapshot, SnapshotError, snapshot
from emulator.runtime.volumes import mount
from emulator.state import StateDir

Plans = Mapping[str, "ServicePlan | BuildError"]


def prepare_stack(stack: Stack, repo_dir: Path, state_dir: Path, ports: Mapping[str, int] | None = None,
                  edge_domains: Mapping[str, str] | None = None,
                  host_path: str | None = None) -> dict[str, ServicePlan | BuildError]:
    """Plan the stack (the model), then build it: what `up` and `run` start from."""
    plans = plan_stack(stack, repo_dir, state_dir, ports, edge_domains, host_path, secret=secret_store(state_dir))
    return build_stack(plans, repo_dir, state_dir, host_path)


def build_stack(plans: Plans, repo_dir: Path, state_dir: Path,
                host_path: str | None = None) -> dict[str, ServicePlan | BuildError]:
    """`plans` with every build carried out: each repo service's replicas built (or the service's BuildError
    in their place, keyed by the service's name as the planner keys its failures), postgres plans given
    their command."""
    builder = _Builder(Path(repo_dir).resolve(), StateDir(state_dir),
                       host_path if host_path is not None else os.environ.get("PATH", ""))
    if any(isinstance(plan, ServicePlan) and "SSL_CERT_FILE" in plan.env for plan in plans.values()):
        trust_bundle(builder.state.tls)
    done: dict[str, ServicePlan | BuildError] = {}
    by_service: dict[str, list[ServicePlan]] = {}
    for name, plan in plans.items():
        if isinstance(plan, ServicePlan) and plan.build is not None:
            by_service.setdefault(plan.build.service.name, []).append(plan)
        elif isinstance(plan, ServicePlan) and plan.kind == "postgres":
            done.update(_guarded(plan.name, lambda plan=plan: {plan.name: _postgres(plan)}))
        else:
            done[name] = plan
    for service, replicas in by_service.items():
        done.update(_guarded(service, lambda replicas=replicas: builder.service(replicas)))
    return {name: done[name] for name in _order(plans, done)}


def remove_homes(state_dir: Path, plans: Plans | None = None) -> None:
    """Delete the HOME and app directory of each of `plans`, or all of them when None: a container's
    filesystem goes with its deployment. Call it once the processes using them are gone."""
    state = StateDir(state_dir)
    if plans is None:
        for root in (state.homes, state.apps):
            shutil.rmtree(root, ignore_errors=True)
        return
    for plan in plans.values():
        if not isinstance(plan, ServicePlan):
            continue
        for path, root in ((plan.env.get("HOME"), state.homes), (plan.cwd, state.apps)):
            if path and Path(path).parent == root:
                shutil.rmtree(path, ignore_errors=True)


class _Builder:
    def __init__(self, repo_dir: Path, state: StateDir, host_path: str):
        self.repo_dir, self.state, self.host_path = repo_dir, state, host_path

    def service(self, replicas: list[ServicePlan]) -> dict[str, ServicePlan]:
        """One image for the service, then each replica's own filesystem from it."""
        started = time.monotonic()
        first = replicas[0].build
        source = self._source(first.service)
        image = detect(first.service, source, first.variables)
        venv = build_venv(image.builder, image.install, source, self.snapshot.tree)
        bin_dir, dirs, hidden = runtime_bin(self.state.root, image.tools, self.host_path)
        _ensure_runtime_bin(bin_dir, dirs, hidden)
        log = (*image.log, *venv.log, *differences(image, self.host_path), *image.start,
               f"Build time: {time.monotonic() - started:.2f} seconds")
        plans = {}
        for plan in replicas:
            spec = plan.build
            # The deployment's own bin directory (its apt-get's installs) goes with its HOME.
            own_bin = install_stand_in(spec.home / ".emulator", host_path=self.host_path, as_root=image.root)
            app = copy_app(source, Path(plan.cwd))
            if image.builder == "railpack":
                (app / ".venv").symlink_to(venv.path, target_is_directory=True)  # Railpack's /app/.venv
            if spec.service.volume:
                mount(self.state.root, spec.service.name, spec.service.volume, app)
            final = built(plan, image, source, venv.path / "bin", own_bin, bin_dir, log)
            _home(spec.home, final.env["PATH"])
            plans[plan.name] = final
        return plans

    @functools.cached_property
    def snapshot(self) -> Snapshot:
        """The repository as `railway up` would upload it, committed into the state dir's bare repository."""
        try:
            return snapshot(self.repo_dir, self.state.source)
        except SnapshotError as exc:
            raise BuildError(f"snapshot of {self.repo_dir} failed: {exc}") from None

    def _source(self, service: Service) -> Path:
        """The snapshot's files as this service's builder sees them (one export per tree and file list)."""
        tree = self.snapshot.tree[:16]
        name = tree
        if service.without_files or service.files:
            changes = json.dumps([service.without_files, sorted(service.files.items())])
            name += "-" + hashlib.sha256(changes.encode()).hexdigest()[:8]
        source = export(self.state.source, self.snapshot.commit, self.state.sources / name,
                        service.without_files, service.files)
        for old in self.state.sources.iterdir():  # earlier trees' files: the apps are copies of them
            if not old.name.startswith((tree, ".")):
                shutil.rmtree(old, ignore_errors=True)
        return source


def _guarded(service: str, build) -> dict[str, ServicePlan | BuildError]:
    try:
        return build()
    except BuildError as exc:
        return {service: exc}


def _postgres(plan: ServicePlan) -> ServicePlan:
    """The postmaster in the foreground, so it is the deployment's process and its lines the deploy log;
    as an unprivileged user when the emulator runs as root (PostgreSQL refuses root)."""
    Path(plan.cwd).mkdir(parents=True, exist_ok=True)
    argv, user = postgres_server(plan.env, Path(plan.cwd), plan.port).foreground_command()
    return dataclasses.replace(plan, argv=tuple(argv), user=user)


def _order(plans: Plans, done: Mapping[str, ServicePlan | BuildError]) -> list[str]:
    """The planner's order, a failed service's replicas replaced by its one BuildError."""
    names: list[str] = []
    for name, plan in plans.items():
        service = plan.build.service.name if isinstance(plan, ServicePlan) and plan.build else name
        key = service if service in done and isinstance(done[service], BuildError) else name
        if key in done and key not in names:
            names.append(key)
    return names


def _ensure_runtime_bin(bin_dir: Path, dirs: list[str], hidden: tuple[str, ...]) -> None:
    """Make the runtime bin directory unless it exists; shared by identical images, never rewritten."""
    target = bin_dir.parent
    if target.is_dir():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
    _link_executables(dirs, staging / "bin", hidden)
    try:
        staging.rename(target)
    except OSError:  # another stack made it meanwhile
        shutil.rmtree(staging)


def _link_executables(dirs: list[str], bin_dir: Path, hidden: tuple[str, ...]) -> None:
    bin_dir.mkdir(parents=True)
    seen = set()
    for directory in dirs:
        for entry in os.scandir(directory):
            if entry.name in seen:
                continue  # PATH order: the first directory wins
            seen.add(entry.name)
            if any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in hidden):
                continue
            if entry.is_file() and os.access(entry.path, os.X_OK):
                (bin_dir / entry.name).symlink_to(entry.path)


def _home(home: Path, path: str) -> None:
    """A fresh HOME per replica and deploy. Its .profile and .bash_profile re-export PATH because Nixpacks'
    `bash -l` reads /etc/profile, which resets PATH on Debian."""
    home.mkdir(parents=True, exist_ok=True)
    for profile in (".profile", ".bash_profile"):
        (home / profile).write_text(f"export PATH={shlex.quote(path)}\n")
