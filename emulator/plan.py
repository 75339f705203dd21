"""What the emulator runs: one resolved plan per service deployment, built from the stack file.

The stack model (stack, variables, builders) produces these; the runtime (supervisor, edge, logs)
consumes them. Nothing else crosses that line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from emulator.errors import BuildError  # noqa: F401 - where the model's users have always found it


@dataclass(frozen=True)
class ServicePlan:
    name: str
    kind: str  # "app" (built from this repo), "postgres", "replay" (the Hyperliquid stand-in)
    argv: tuple[str, ...]  # e.g. ("/bin/bash", "-c", "vault-ingest serve"); empty for built-in kinds
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
