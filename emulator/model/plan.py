"""What the emulator runs: one resolved plan per service deployment, built from the stack file.

The stack model (stack, variables, builders) produces these; the runtime (supervisor, edge, logs)
consumes them. Nothing else crosses that line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from emulator.errors import BuildError  # noqa: F401 - where the model's users have always found it

if TYPE_CHECKING:
    from emulator.model.stack import Service

EDGE_HOST = "127.0.0.1"  # where the edge listens: a public domain is "<EDGE_HOST>:<edge port>"


def edge_domain(port: int) -> str:
    return f"{EDGE_HOST}:{port}"


@dataclass(frozen=True)
class ImageBuild:
    """What Railway's Building step does for one replica of a repo service, left to the runtime
    (`emulator.runtime.build`): snapshot and export the repo, detect the builder from those files, install
    into the image's venv, then give the replica its fresh app directory (the plan's cwd), HOME and apt-get
    stand-in (in HOME)."""

    service: "Service"
    variables: Mapping[str, str]  # its resolved variables, which Railway also hands to the build
    home: Path
    volume: Path | None = None  # the service's volume directory, mounted into the app directory


@dataclass(frozen=True)
class ServicePlan:
    name: str
    kind: str  # "app" (built from the repo), "postgres", "replay" (a recorded-HTTP stand-in)
    argv: tuple[str, ...]  # the whole command, e.g. ("/bin/bash", "-c", "vault-ingest serve")
    env: dict[str, str]  # the complete environment the process gets: resolved variables, PORT, RAILWAY_*, PATH
    cwd: Path
    port: int  # the local port behind $PORT
    builder: str | None = None  # "railpack" | "nixpacks" | "dockerfile"
    build_log: tuple[str, ...] = ()  # e.g. "↳ Detected Python", "↳ Found web command in Procfile", "$ <cmd>"
    public_domain: str | None = None  # RAILWAY_PUBLIC_DOMAIN when the service has a domain
    healthcheck_path: str | None = None
    healthcheck_timeout: float = 300.0
    restart_policy: str = "ON_FAILURE"  # ON_FAILURE | ALWAYS | NEVER
    max_retries: int = 10
    replicas: int = 1
    draining_seconds: float = 0.0
    secrets: frozenset[str] = field(default_factory=frozenset)  # values masked in every log line
    user: str | None = None  # run as this user (PostgreSQL refuses root); None: as the emulator
    depends_on: tuple[str, ...] = ()  # the services its variables reference, which start before it
    build: ImageBuild | None = None  # a repo service's image, still to build: argv and PATH come from it


def start_order(plans: Mapping[str, "ServicePlan | BuildError"]) -> list[list[str]]:
    """The planned instances in batches, each after the services its members reference, as Railway orders a
    batch deploy ("a service that references another service waits for that service to finish deploying",
    railway.md §4.1). Services whose references form a cycle share a batch: Railway deploys them in parallel."""
    instances: dict[str, list[str]] = {}
    needs: dict[str, set[str]] = {}
    for name, plan in plans.items():
        if isinstance(plan, ServicePlan):
            service = plan.env.get("RAILWAY_SERVICE_NAME", name)
            instances.setdefault(service, []).append(name)
            needs.setdefault(service, set()).update(plan.depends_on)
    needs = {service: {other for other in wanted if other in instances and other != service}
             for service, wanted in needs.items()}
    batches, done = [], set()
    while len(done) < len(needs):
        ready = [service for service in needs if service not in done and needs[service] <= done]
        if not ready:  # a cycle: what is left waits on itself, so it all starts together
            ready = [service for service in needs if service not in done]
        batches.append([instance for service in ready for instance in instances[service]])
        done.update(ready)
    return batches
