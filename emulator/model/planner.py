"""From the stack to one ServicePlan per replica: what each local process runs, with what, in which paths.

Pure: it starts no process and writes no file (`secret` values come from the caller's store; free ports
are found by binding and closing a socket). What Railway's Building step does, the snapshot, the builder's
detection from the snapshot's files, the image build, each replica's app directory and HOME, the runtime
carries out (`emulator.runtime.build`), finishing each repo plan with `built`.

Railway services are independent, so a service whose variables or build fail gets a BuildError and the
others are planned anyway. The local stand-ins for what a container would give a process:

- Ports: every replica listens on its own free local port, exposed as PORT, and
  `<slug>.railway.internal:<port>` is rewritten to it. As on Railway, that injected PORT is not a variable:
  `${{svc.PORT}}` resolves only where the user set PORT (or on the Hyperliquid stand-in, which plays a
  service with PORT set), and renders empty elsewhere (emulator/model/variables.py). A user-set PORT is honoured
  as is (it must be free locally, and rules out replicas).
- The image: each repo service is built from a snapshot of the repo (`emulator.runtime.image`): its working
  directory is a fresh copy of the snapshot per replica and deploy (Railpack's /app), and PATH is the
  image's own venv bin followed by a directory of symlinks to the host's executables (never a
  virtualenv's), minus the optional tools the image lacks and minus every package manager, so nothing a
  service runs can install onto the host. Between the two, the deployment's own bin directory holds an
  apt-get stand-in (`emulator.runtime.apt`) whose installs land there and go with the deployment.
- HOME: one per replica and deploy, as each container starts with a fresh filesystem. The build gives it a
  .profile and .bash_profile that re-export PATH because Nixpacks' `bash -l` reads /etc/profile, which
  resets PATH on
  Debian; in the real image, root's ~/.profile puts the Nix profile back the same way.
- Volumes (`emulator.model.volumes`): Postgres's and a service's declared one are directories under the
  state dir, which survive redeploys.
- TLS: with any public domain, SSL_CERT_FILE names the public CA roots plus the edge's certificate, so
  `https://<public domain>` works from inside the stack as Railway's publicly signed domains do.

Plans are keyed by instance name: the service name, or `<service>.<n>` when it has several replicas.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import platform
import random
import shutil
import socket
import sys
import uuid
from pathlib import Path
from typing import Mapping

from emulator.model.builders import OPTIONAL_TOOLS, PACKAGE_TOOLS, Build
from emulator.model.plan import BuildError, ImageBuild, ServicePlan, edge_domain
from emulator.model.stack import Service, Stack
from emulator.model.variables import (
    POSTGRES_PORT, POSTGRES_TEMPLATE, POSTGRES_VOLUME, RAILWAY_PORT, Endpoint, SecretSource, localize,
    loopback_warnings, railway_variables, referenced_services, resolve, secret_values, slug,
)
from emulator.model.volumes import map_mount_path, volume_dir, volume_variables
from emulator.state import StateDir

TOOL_EXECUTABLES = {
    "git": ("git", "git-*"), "curl": ("curl",), "wget": ("wget",), "ssh": ("ssh", "ssh-*", "scp", "sftp"),
}
NEVER_ON_PATH = ("apt", "apt-*", "aptitude", "dpkg", "dpkg-*", "apk", "yum", "dnf", "microdnf", "zypper",
                 "pacman", "brew", "snap", "sudo", "su")
_RESERVED = ("PATH", "HOME")  # the emulator's model of the image; a user value would undo it


def plan_stack(stack: Stack, repo_dir: Path, state_dir: Path, ports: Mapping[str, int] | None = None,
               edge_domains: Mapping[str, str] | None = None, host_path: str | None = None, *,
               secret: SecretSource) -> dict[str, ServicePlan | BuildError]:
    """Plan every service; a repo service's plans carry the `ImageBuild` the runtime still has to do.
    `ports` (by instance name) and `edge_domains` (by service name, "127.0.0.1:<port>") pin what the runtime
    already holds; anything missing is picked free here. `host_path` defaults to $PATH."""
    return _Planner(stack, Path(repo_dir).resolve(), Path(state_dir).resolve(), dict(ports or {}),
                    dict(edge_domains or {}),
                    host_path if host_path is not None else os.environ.get("PATH", ""), secret).plan()


def built(plan: ServicePlan, image: Build, source: Path, venv_bin: Path, own_bin: Path, runtime_bin: Path,
          build_log: tuple[str, ...]) -> ServicePlan:
    """`plan` once its image is built: the image's start command and environment, its venv first on PATH, then
    the deployment's own bin directory (its apt-get stand-in's), then the host's tools the image has.
    `source` is the exported snapshot the image was built from; the replica runs a copy of it (`plan.cwd`)."""
    spec, app = plan.build, Path(plan.cwd)
    path = os.pathsep.join((str(venv_bin), str(own_bin), str(runtime_bin)))
    # The image's variables under the service's own: a variable set on the service overrides the image's.
    env = {**plan.env, **{key: value for key, value in image.env.items() if key not in spec.variables}}
    if spec.service.volume and spec.volume:
        env = map_mount_path(env, spec.service.volume, spec.volume)
    env.update(HOME=str(spec.home), PATH=path)
    # Paths into the copied build context (a Dockerfile's CMD) point into this replica's copy.
    argv = tuple(word.replace(str(source), str(app), 1) if word.startswith(str(source)) else word
                 for word in image.argv)
    return dataclasses.replace(plan, argv=argv, env=env, builder=image.builder,
                               build_log=(*plan.build_log, *build_log), build=None)


def runtime_bin(state_dir: Path, tools: frozenset[str], host_path: str) -> tuple[Path, list[str], tuple[str, ...]]:
    """Where the image's bin directory of the host's executables lives (keyed by content, so a running
    deployment's directory is never rewritten under it), the host directories it links from and the
    patterns it leaves out: every package manager and the optional tools the image lacks."""
    lacking = [tool for tool in OPTIONAL_TOOLS if tool not in tools]
    hidden = NEVER_ON_PATH + tuple(pattern for tool in lacking for pattern in TOOL_EXECUTABLES[tool])
    # The host's tools, not a virtualenv's (the developer's own .venv on PATH would lend every image its
    # packages' commands).
    dirs = [d for d in host_path.split(os.pathsep) if os.path.isabs(d) and os.path.isdir(d)
            and not os.path.isfile(os.path.join(d, os.pardir, "pyvenv.cfg"))]
    fingerprint = [sorted(tools), dirs, [os.stat(d).st_mtime_ns for d in dirs]]
    key = hashlib.sha256(json.dumps(fingerprint).encode()).hexdigest()[:16]
    return StateDir(state_dir).runtimes / key / "bin", dirs, hidden


def differences(image: Build, host_path: str) -> list[str]:
    """One build-log line per way the local image must differ from Railway's."""
    lines = []
    host = platform.python_version()
    if image.python and host.split(".")[:2] != image.python.split(".")[:2]:
        lines.append(f"⚠ Railway's image runs Python {image.python}; locally the host's Python {host} runs "
                     "this service")
    missing = [p for p in image.apt if not p.startswith("lib") and p not in PACKAGE_TOOLS
               and shutil.which(p, path=host_path) is None]
    if missing:
        lines.append(f"⚠ apt packages {', '.join(missing)}: not on this host, so not in the local image")
    return lines


class _Planner:
    def __init__(self, stack: Stack, repo_dir: Path, state_dir: Path, ports: dict[str, int],
                 edge_domains: dict[str, str], host_path: str, secret: SecretSource):
        self.stack, self.repo_dir, self.state_dir = stack, repo_dir, state_dir
        self.state = StateDir(state_dir)
        self.host_path = host_path
        self.failed: dict[str, BuildError] = {}
        self.instances = {name: _instance_names(service) for name, service in stack.services.items()}
        public = [name for name, service in stack.services.items() if service.public_domain]
        # Only the edge port carries over: the host is always the edge's, also for a state dir written when
        # the domain was still localhost:<port>.
        kept = {name: int(domain.rpartition(":")[2]) for name, domain in edge_domains.items()}
        # A kept port is free now, but held by nobody until its edge or service starts: no other may take it.
        self.ports = self._local_ports(ports, avoid=set(kept.values()))
        wanted = [name for name in public if name not in kept]
        taken = {*kept.values(), *self.ports.values()}
        ports_for = {**kept, **dict(zip(wanted, _free_ports(len(wanted), avoid=taken)))}
        self.domains = {name: edge_domain(ports_for[name]) for name in public}  # a domain only if asked for
        self.endpoints = {
            slug(name): Endpoint(self._railway_port(service), self.ports.get(self.instances[name][0], 0),
                                 dual_stack=service.source != "repo")
            for name, service in stack.services.items()
        }
        self.warnings: dict[str, list[str]] = {}  # build-log lines about each service's variables
        self.deployments = {name: str(uuid.uuid4()) for name in stack.services}
        self.replica_ids = {instance: str(uuid.uuid4()) for names in self.instances.values() for instance in names}
        self.secret = secret

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
        plans = {}
        for instance, variables in replicas:
            replica_id = self.replica_ids[instance]
            # Unbuffered even from a Dockerfile image, or log lines would reach the emulator late.
            env = {"PYTHONUNBUFFERED": "1", **self._trust, **self._local(variables)}
            volume = volume_dir(self.state_dir, service.name) if service.volume else None
            if volume:
                env = map_mount_path(env, service.volume, volume)
            spec = ImageBuild(service, variables, self.state.homes / replica_id, volume)
            plans[instance] = self._plan(service, instance, variables, env, kind="app", argv=(),
                                         cwd=self.state.apps / replica_id, build=spec)
        return plans

    def _builtin_plan(self, service: Service, instance: str, variables: dict[str, str]) -> ServicePlan:
        env = self._local(variables)
        cwd, user = self.repo_dir, None
        if service.source == "replay":
            env["PYTHONUNBUFFERED"] = "1"
            folder = self.repo_dir / env.get("REPLAY_DIR", "cassettes")
            argv = (sys.executable, "-m", "emulator.runtime.replay", str(folder), str(self.ports[instance]))
        if service.source == "postgres":
            # The postmaster of the pinned PostgreSQL, its data in the volume: the runtime names its binary.
            cwd = volume_dir(self.state_dir, service.name)
            env = {key: value.replace(POSTGRES_VOLUME, str(cwd)) for key, value in env.items()}
            argv = ()
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
        """https:// to a public domain works inside the stack, as it does on Railway (the runtime writes it)."""
        if not self.domains:
            return {}
        return {"SSL_CERT_FILE": str(self.state.trust_bundle)}

    def _local_ports(self, given: dict[str, int], avoid: set[int]) -> dict[str, int]:
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
        taken = {*avoid, *given.values(), *ports.values()}
        return {**given, **ports, **dict(zip(missing, _free_ports(len(missing), avoid=taken)))}

    def _railway_port(self, service: Service) -> int:
        if service.source == "postgres":
            return POSTGRES_PORT
        user_port = service.variables.get("PORT", "")
        return int(user_port) if user_port.isdigit() else RAILWAY_PORT


def _instance_names(service: Service) -> list[str]:
    if service.replicas == 1:
        return [service.name]
    return [f"{service.name}.{n}" for n in range(1, service.replicas + 1)]


def _free_ports(count: int, avoid: set[int] = frozenset()) -> list[int]:
    """Free loopback ports from below the kernel's ephemeral range, none of `avoid`. A port the kernel hands
    out for bind(0) is also one it hands out as the source port of any outgoing connection, so between a
    `down` and the next `up` it could be taken, and the edge's domain (an open browser tab) would change."""
    low = _ephemeral_low()
    sockets = []
    try:
        for port in random.sample(range(10000, low), k=min(low - 10000, 200)) if low > 10200 else []:
            if len(sockets) == count:
                break
            if port in avoid:
                continue
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))  # held open together so no port is handed out twice
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
        while len(sockets) < count:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            if sock.getsockname()[1] in avoid:
                sock.close()  # the kernel's next bind(0) hands out another port
                continue
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 10000  # not Linux: leave it to the kernel


def _seconds(service: Service, variables: Mapping[str, str], name: str, default: float) -> float:
    if name not in variables:
        return default
    try:
        return float(variables[name])
    except ValueError:
        raise BuildError(f"{service.name}: {name} = {variables[name]!r} must be a number of seconds") from None
