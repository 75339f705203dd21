"""From the stack and the repo to one ServicePlan per replica: what each local process runs, and with what.

Railway services are independent, so a service whose variables or build fail gets a BuildError and the
others are planned anyway. The local stand-ins for what a container would give a process:

- Ports: every replica listens on its own free local port, exposed as PORT, and
  `<slug>.railway.internal:<port>` is rewritten to it. As on Railway, that injected PORT is not a variable:
  `${{svc.PORT}}` resolves only where the user set PORT (or on the Hyperliquid stand-in, which plays a
  service with PORT set), and renders empty elsewhere (emulator/model/variables.py). A user-set PORT is honoured
  as is (it must be free locally, and rules out replicas).
- The image: each repo service is built here, from a snapshot of the repo (`emulator.runtime.image`): its working
  directory is a fresh copy of the snapshot per replica and deploy (Railpack's /app), and PATH is the
  image's own venv bin followed by a directory of symlinks to the host's executables (never a
  virtualenv's), minus the optional tools the image lacks and minus every package manager, so nothing a
  service runs can install onto the host. Between the two, the deployment's own bin directory holds an
  apt-get stand-in (`emulator.runtime.apt`) whose installs land there and go with the deployment.
- HOME: one per replica and deploy, as each container starts with a fresh filesystem. Its .profile and
  .bash_profile re-export PATH because Nixpacks' `bash -l` reads /etc/profile, which resets PATH on
  Debian; in the real image, root's ~/.profile puts the Nix profile back the same way.
- Volumes (`emulator.runtime.volumes`): Postgres's and a service's declared one are directories under the state
  dir, which survive redeploys.
- TLS: with any public domain, SSL_CERT_FILE names the public CA roots plus the edge's certificate, so
  `https://<public domain>` works from inside the stack as Railway's publicly signed domains do.

Plans are keyed by instance name: the service name, or `<service>.<n>` when it has several replicas.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import os
import platform
import shlex
import shutil
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Mapping

from emulator.model.builders import OPTIONAL_TOOLS, PACKAGE_TOOLS, build
from emulator.runtime.apt import install_stand_in
from emulator.runtime.edge import edge_domain, trust_bundle
from emulator.runtime.image import build_venv, copy_app, export
from emulator.model.plan import BuildError, ServicePlan
from emulator.runtime.snapshot import Snapshot, SnapshotError, snapshot
from emulator.model.stack import Service, Stack
from emulator.state import StateDir
from emulator.runtime.postgres import PostgresServer
from emulator.model.variables import (
    POSTGRES_PORT, POSTGRES_TEMPLATE, POSTGRES_VOLUME, RAILWAY_PORT, Endpoint, localize, loopback_warnings,
    railway_variables, referenced_services, resolve, secret_store, secret_values, slug,
)
from emulator.runtime.volumes import map_mount_path, mount, volume_dir, volume_variables

TOOL_EXECUTABLES = {
    "git": ("git", "git-*"), "curl": ("curl",), "wget": ("wget",), "ssh": ("ssh", "ssh-*", "scp", "sftp"),
}
NEVER_ON_PATH = ("apt", "apt-*", "aptitude", "dpkg", "dpkg-*", "apk", "yum", "dnf", "microdnf", "zypper",
                 "pacman", "brew", "snap", "sudo", "su")
_RESERVED = ("PATH", "HOME")  # the emulator's model of the image; a user value would undo it


def plan_stack(stack: Stack, repo_dir: Path, state_dir: Path, ports: Mapping[str, int] | None = None,
               edge_domains: Mapping[str, str] | None = None,
               host_path: str | None = None) -> dict[str, ServicePlan | BuildError]:
    """Plan every service, building each repo service's image. `ports` (by instance name) and
    `edge_domains` (by service name, "127.0.0.1:<port>") pin what the runtime already holds; anything
    missing is picked free here. `host_path` defaults to $PATH."""
    return _Planner(stack, Path(repo_dir).resolve(), Path(state_dir).resolve(), dict(ports or {}),
                    dict(edge_domains or {}),
                    host_path if host_path is not None else os.environ.get("PATH", "")).plan()


def remove_homes(state_dir: Path, plans: Mapping[str, ServicePlan | BuildError] | None = None) -> None:
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


class _Planner:
    def __init__(self, stack: Stack, repo_dir: Path, state_dir: Path, ports: dict[str, int],
                 edge_domains: dict[str, str], host_path: str):
        self.stack, self.repo_dir, self.state_dir = stack, repo_dir, state_dir
        self.state = StateDir(state_dir)
        self.host_path = host_path
        self.failed: dict[str, BuildError] = {}
        self.instances = {name: _instance_names(service) for name, service in stack.services.items()}
        self.ports = self._local_ports(ports)
        public = [name for name, service in stack.services.items() if service.public_domain]
        # Only the edge port carries over: the host is always the edge's, also for a state dir written when
        # the domain was still localhost:<port>.
        kept = {name: int(domain.rpartition(":")[2]) for name, domain in edge_domains.items()}
        wanted = [name for name in public if name not in kept]
        ports_for = {**kept, **dict(zip(wanted, _free_ports(len(wanted))))}
        self.domains = {name: edge_domain(ports_for[name]) for name in public}  # a domain only if asked for
        self.endpoints = {
            slug(name): Endpoint(self._railway_port(service), self.ports.get(self.instances[name][0], 0),
                                 dual_stack=service.source != "repo")
            for name, service in stack.services.items()
        }
        self.warnings: dict[str, list[str]] = {}  # build-log lines about each service's variables
        self.deployments = {name: str(uuid.uuid4()) for name in stack.services}
        self.replica_ids = {instance: str(uuid.uuid4()) for names in self.instances.values() for instance in names}
        self.secret = secret_store(state_dir)

    def plan(self) -> dict[str, ServicePlan | BuildError]:
        plans: dict[str, ServicePlan | BuildError] = {}
        for name, service in self.stack.services.items():
            try:
                if name in self.failed:
                    raise self.failed[name]
                plans.update(self._service(service))
            except BuildError as exc:
                plans[name] = exc
        return plans

    def _service(self, service: Service) -> dict[str, ServicePlan]:
        reserved = [var for var in _RESERVED if var in service.variables]
        if reserved:
            raise BuildError(f"{service.name}: {reserved[0]} is set as a service variable; the emulator sets it to "
                             "model the runtime image, so remove it")
        if service.source == "postgres" and service.replicas > 1:
            raise BuildError(f"{service.name}: a service with a volume cannot have replicas; set replicas = 1")
        replicas = [(instance, self._variables(service, index))
                    for index, instance in enumerate(self.instances[service.name])]
        if service.source != "repo":
            return {instance: self._builtin_plan(service, instance, variables) for instance, variables in replicas}
        started = time.monotonic()
        source = self._source(service)
        image = build(service, source, replicas[0][1])
        venv = build_venv(image.builder, image.install, source, self.snapshot.tree)
        bin_dir = self._runtime_bin(image.tools)
        build_log = (*image.log, *venv.log, *self._differences(image), *image.start,
                     f"Build time: {time.monotonic() - started:.2f} seconds")
        plans = {}
        for instance, variables in replicas:
            replica_id = self.replica_ids[instance]
            # The deployment's own bin directory (its apt-get's installs) goes with its HOME.
            own_bin = install_stand_in(self.state.homes / replica_id / ".emulator", host_path=self.host_path,
                                       as_root=image.root)
            path = os.pathsep.join((str(venv.path / "bin"), str(own_bin), str(bin_dir)))
            app = copy_app(source, self.state.apps / replica_id)
            if image.builder == "railpack":
                (app / ".venv").symlink_to(venv.path, target_is_directory=True)  # Railpack's /app/.venv
            # Unbuffered even from a Dockerfile image, or log lines would reach the emulator late.
            env = {"PYTHONUNBUFFERED": "1", **self._trust, **image.env, **self._local(variables)}
            if service.volume:
                env = map_mount_path(env, service.volume, mount(self.state_dir, service.name, service.volume, app))
            env.update(HOME=str(self._home(replica_id, path)), PATH=path)
            # Paths into the copied build context (a Dockerfile's CMD) point into this replica's copy.
            argv = tuple(word.replace(str(source), str(app), 1) if word.startswith(str(source)) else word
                         for word in image.argv)
            plans[instance] = self._plan(service, instance, variables, env, kind="app", argv=argv,
                                         cwd=app, builder=image.builder, build_log=build_log)
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

    def _differences(self, image) -> list[str]:
        """One line per way the local image must differ from Railway's."""
        lines = []
        host = platform.python_version()
        if image.python and host.split(".")[:2] != image.python.split(".")[:2]:
            lines.append(f"⚠ Railway's image runs Python {image.python}; locally the host's Python {host} runs "
                         "this service")
        missing = [p for p in image.apt if not p.startswith("lib") and p not in PACKAGE_TOOLS
                   and shutil.which(p, path=self.host_path) is None]
        if missing:
            lines.append(f"⚠ apt packages {', '.join(missing)}: not on this host, so not in the local image")
        return lines

    def _builtin_plan(self, service: Service, instance: str, variables: dict[str, str]) -> ServicePlan:
        env = self._local(variables)
        cwd, user = self.repo_dir, None
        if service.source == "replay":
            env["PYTHONUNBUFFERED"] = "1"
            folder = self.repo_dir / env.get("REPLAY_DIR", "cassettes")
            argv = (sys.executable, "-m", "emulator.runtime.replay", str(folder), str(self.ports[instance]))
        if service.source == "postgres":
            cwd = volume_dir(self.state_dir, service.name)
            cwd.mkdir(parents=True, exist_ok=True)
            env = {key: value.replace(POSTGRES_VOLUME, str(cwd)) for key, value in env.items()}
            argv, user = postgres_command(env, cwd, self.ports[instance])
        return self._plan(service, instance, variables, env, kind=service.source, argv=argv, cwd=cwd, user=user)

    def _plan(self, service: Service, instance: str, variables: dict[str, str], env: dict[str, str],
              build_log: tuple[str, ...] = (), **fields) -> ServicePlan:
        return ServicePlan(
            build_log=(*self.warnings.get(service.name, ()), *build_log),
            name=instance,
            env=env,
            port=self.ports[instance],
            public_domain=self.domains.get(service.name),
            healthcheck_path=service.healthcheck_path,
            healthcheck_timeout=_seconds(service, variables, "RAILWAY_HEALTHCHECK_TIMEOUT_SEC",
                                         service.healthcheck_timeout),
            restart_policy=service.restart_policy,
            max_retries=service.restart_max_retries,
            replicas=service.replicas,
            draining_seconds=_seconds(service, variables, "RAILWAY_DEPLOYMENT_DRAINING_SECONDS", 0.0),
            secrets=secret_values(env),
            depends_on=tuple(sorted({other for value in service.variables.values()
                                     for other in referenced_services(value)} - {service.name})),
            **fields,
        )

    def _variables(self, service: Service, index: int) -> dict[str, str]:
        """The service's resolved variables as replica `index` sees them (Railway's values, local ports)."""
        namespaces = {"shared": self.stack.shared}
        for name, other in self.stack.services.items():
            namespaces[name] = self._namespace(other, index if name == service.name else 0)
        warnings: list[str] = []
        variables = resolve(namespaces, service.name, self.secret, warnings)
        by_name = {name: self.endpoints[slug(name)] for name in self.stack.services}
        # As the user set them: locally a public domain is loopback too.
        self.warnings[service.name] = [*warnings, *loopback_warnings(service.name, service.variables, by_name)]
        if service.source != "postgres":
            variables.setdefault("PORT", str(self.ports.get(self.instances[service.name][index], 0)))
        return variables

    def _namespace(self, service: Service, index: int) -> dict[str, str]:
        instance = self.instances[service.name][index]
        variables = railway_variables(
            self.stack.project, self.stack.environment, service.name, deployment_id=self.deployments[service.name],
            replica_id=self.replica_ids[instance], public_domain=self.domains.get(service.name),
        )
        port = str(self.ports.get(instance, 0))
        if service.source == "postgres":
            # PGPORT is Postgres's "port variable": anything reading it must reach the local server.
            variables.update(POSTGRES_TEMPLATE, PGPORT=port, RAILWAY_VOLUME_NAME=f"{slug(service.name)}-volume",
                             RAILWAY_VOLUME_MOUNT_PATH=POSTGRES_VOLUME)
        elif service.source == "replay":
            variables["PORT"] = port  # the injected PORT is added after resolving, out of references' reach
        if service.volume:
            variables.update(volume_variables(service.name, service.volume))
        return {**variables, **service.variables}

    def _local(self, variables: Mapping[str, str]) -> dict[str, str]:
        return {key: localize(value, self.endpoints, self.stack.private_network) for key, value in variables.items()}

    @functools.cached_property
    def _trust(self) -> dict[str, str]:
        """https:// to a public domain works inside the stack, as it does on Railway."""
        if not self.domains:
            return {}
        return {"SSL_CERT_FILE": str(trust_bundle(self.state.tls))}

    def _local_ports(self, given: dict[str, int]) -> dict[str, int]:
        ports = {}
        for name, service in self.stack.services.items():
            user_port = service.variables.get("PORT")
            if user_port is None or service.source == "postgres":
                continue
            if not user_port.isdigit() or not 0 < int(user_port) < 65536:
                self.failed[name] = BuildError(f"{name}: PORT = {user_port!r} must be a port number like 4200")
            elif service.replicas > 1:
                self.failed[name] = BuildError(f"{name}: with PORT set, replicas would share one local port; "
                                               "remove PORT or set replicas = 1")
            else:
                ports[name] = int(user_port)
        missing = [instance for names in self.instances.values() for instance in names
                   if instance not in ports and instance not in given]
        return {**given, **ports, **dict(zip(missing, _free_ports(len(missing))))}

    def _railway_port(self, service: Service) -> int:
        if service.source == "postgres":
            return POSTGRES_PORT
        user_port = service.variables.get("PORT", "")
        return int(user_port) if user_port.isdigit() else RAILWAY_PORT

    def _runtime_bin(self, tools: frozenset[str]) -> Path:
        """A bin directory of the host's executables minus what the image lacks; shared by identical images."""
        lacking = [tool for tool in OPTIONAL_TOOLS if tool not in tools]
        hidden = NEVER_ON_PATH + tuple(pattern for tool in lacking for pattern in TOOL_EXECUTABLES[tool])
        # The host's tools, not a virtualenv's (the developer's own .venv on PATH would lend every image its
        # packages' commands).
        dirs = [d for d in self.host_path.split(os.pathsep) if os.path.isabs(d) and os.path.isdir(d)
                and not os.path.isfile(os.path.join(d, os.pardir, "pyvenv.cfg"))]
        # Keyed by content, so a running deployment's directory is never rewritten under it.
        fingerprint = [sorted(tools), dirs, [os.stat(d).st_mtime_ns for d in dirs]]
        key = hashlib.sha256(json.dumps(fingerprint).encode()).hexdigest()[:16]
        root = self.state.runtimes
        target = root / key
        if not target.is_dir():
            root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=root, prefix=".staging-"))
            _link_executables(dirs, staging / "bin", hidden)
            try:
                staging.rename(target)
            except OSError:  # another planner made it meanwhile
                shutil.rmtree(staging)
        return target / "bin"

    def _home(self, replica_id: str, path: str) -> Path:
        home = self.state.homes / replica_id
        home.mkdir(parents=True, exist_ok=True)
        for profile in (".profile", ".bash_profile"):
            (home / profile).write_text(f"export PATH={shlex.quote(path)}\n")
        return home


def postgres_server(env: Mapping[str, str], volume: Path, port: int) -> PostgresServer:
    """The PostgreSQL of a postgres plan: its data where PGDATA points (into the service's volume)."""
    password = env.get("POSTGRES_PASSWORD") or env.get("PGPASSWORD")
    if not password:
        raise BuildError("a postgres service needs POSTGRES_PASSWORD in its variables")
    return PostgresServer(Path(env.get("PGDATA") or volume / "pgdata"), port=port, password=password)


def postgres_command(env: Mapping[str, str], volume: Path, port: int) -> tuple[tuple[str, ...], str | None]:
    """The postmaster itself in the foreground, so it is the deployment's process and its lines the deploy log;
    and the user it runs as."""
    argv, user = postgres_server(env, volume, port).foreground_command()
    return tuple(argv), user


def _instance_names(service: Service) -> list[str]:
    if service.replicas == 1:
        return [service.name]
    return [f"{service.name}.{n}" for n in range(1, service.replicas + 1)]


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


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):  # held open together so no port is handed out twice
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _seconds(service: Service, variables: Mapping[str, str], name: str, default: float) -> float:
    if name not in variables:
        return default
    try:
        return float(variables[name])
    except ValueError:
        raise BuildError(f"{service.name}: {name} = {variables[name]!r} must be a number of seconds") from None
