"""The state dir: every path the emulator keeps for one stack, and the one way its JSON files are written.

    runtime.json   what runs now (written by the supervisor; read by status, down, run)
    project.json   how `up` was asked to run (variant, variables, replay) and how far its steps got
    logs/          <service>.build.log, <service>.deploy.log, emulator.log; console.log when detached
    volumes/       Postgres data: survives down/up, `reset` wipes it
    secrets/       generated ${{secret()}} values such as the Postgres password
    source.git     the working-tree snapshot the steps deploy from
    tls/           the edge's self-signed certificate and the trust bundle the services use
    runtimes/      the modelled images' PATH; homes/: each deployment's HOME, removed with it

By default it sits beside the stack file (`.emulator/` for railway.stack.toml, `.emulator-<name>/` for
another stack file), so a stack file kept outside a repository keeps its state outside it too.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

STACK_FILE = "railway.stack.toml"
RUNTIME_FILE = "runtime.json"
PROJECT_FILE = "project.json"


class StateDir:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.logs = self.root / "logs"
        self.console_log = self.logs / "console.log"
        self.volumes = self.root / "volumes"
        self.secrets = self.root / "secrets"
        self.source = self.root / "source.git"
        self.tls = self.root / "tls"
        self.edge_cert = self.tls / "edge.crt"
        self.trust_bundle = self.tls / "trust.pem"  # SSL_CERT_FILE of the services, beside a public domain
        self.runtimes = self.root / "runtimes"
        self.homes = self.root / "homes"  # each replica's HOME
        self.apps = self.root / "apps"  # each replica's app directory (the image's /app)
        self.sources = self.root / "sources"  # the snapshot's files, per tree
        self.runtime_file = self.root / RUNTIME_FILE
        self.project_file = self.root / PROJECT_FILE

    @classmethod
    def beside(cls, stack_file: Path) -> "StateDir":
        stack_file = Path(stack_file).resolve()
        name = ".emulator" if stack_file.name == STACK_FILE else f".emulator-{stack_file.name.split('.')[0]}"
        return cls(stack_file.parent / name)

    def read_runtime(self) -> dict | None:
        return read_json(self.runtime_file)

    def read_project(self) -> dict:
        return read_json(self.project_file) or {}

    def update_project(self, **changes) -> dict:
        """project.json with `changes` merged in, written atomically; the result."""
        project = {**self.read_project(), **changes}
        write_json(self.project_file, project)
        return project

    def wipe(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def write_json(path: Path, data: dict) -> None:
    """Whole or not at all: a reader in another process never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
