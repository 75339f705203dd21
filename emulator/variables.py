"""Railway's variables: what Railway injects, `${{...}}` references, and how local processes reach each other.

References resolve the way Railway resolves them, recursively and with a failed deploy for anything
unresolvable: `${{Service.VAR}}` (service names are case-sensitive), `${{shared.VAR}}`, `${{VAR}}` for the
same service, spaces allowed inside the braces, plus the templates' `${{secret(n, "alphabet")}}`.

Locally there is no private network, so a resolved value is rewritten before a process sees it, as
`railway dev` does: `<slug>.railway.internal:<port>` becomes `127.0.0.1:<the service's local port>`
and a bare `<slug>.railway.internal` becomes `127.0.0.1`. Public URLs are left alone: unlike
`railway dev` without its Caddy, the local edge answers https:// on the domain's port (plain http:// gets Railway's 301 to https://).
"""

from __future__ import annotations

import re
import secrets
import string
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, NoReturn

from emulator.plan import BuildError
from emulator.state import StateDir

REFERENCE = re.compile(r"\$\{\{(.*?)\}\}")
_TARGET = re.compile(r"^\s*(?:([A-Za-z0-9_-]+)\.)?([A-Za-z_][A-Za-z0-9_]*)\s*$")
_SECRET_CALL = re.compile(r'^\s*secret\(\s*(\d*)\s*(?:,\s*"([^"]*)"\s*)?\)\s*$')
_INTERNAL = re.compile(r"(?<![A-Za-z0-9.-])([a-z0-9-]+)\.railway\.internal(?::(\d+))?")
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|AUTH_STRING|(?:^|_)KEY(?:$|_)")
_URL_PASSWORD = re.compile(r"://[^/@:\s]*:([^/@\s]+)@")
_ID_NAMESPACE = uuid.UUID("6f1c1f8e-4a57-4c1e-9d0b-7a61e2c5b0aa")

RAILWAY_PORT = 8080  # Railway's injected PORT: undocumented, but what public repos report
POSTGRES_PORT = 5432
POSTGRES_VOLUME = "/var/lib/postgresql/data"  # where Railway's Postgres template mounts its volume

# Railway's Postgres template, as its service variables read (railway.md §4.2); DATABASE_PUBLIC_URL
# appears only with Public Access (a TCP proxy), which the emulator does not offer.
POSTGRES_TEMPLATE = {
    "DATABASE_URL": "postgresql://${{PGUSER}}:${{POSTGRES_PASSWORD}}@${{RAILWAY_PRIVATE_DOMAIN}}:5432/${{PGDATABASE}}",
    "PGHOST": "${{RAILWAY_PRIVATE_DOMAIN}}",
    "PGPORT": "5432",
    "PGUSER": "${{POSTGRES_USER}}",
    "PGPASSWORD": "${{POSTGRES_PASSWORD}}",
    "PGDATABASE": "${{POSTGRES_DB}}",
    "POSTGRES_DB": "railway",
    "POSTGRES_USER": "postgres",
    "POSTGRES_PASSWORD": '${{secret(32, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")}}',
    "PGDATA": f"{POSTGRES_VOLUME}/pgdata",
    "SSL_CERT_DAYS": "820",
    "RAILWAY_DEPLOYMENT_DRAINING_SECONDS": "60",
}

SecretSource = Callable[[str, str, int, str], str]  # (namespace, variable, length, alphabet) -> value


@dataclass(frozen=True)
class Endpoint:
    """Where a service listens: its port on Railway and the local port standing in for it."""

    railway_port: int
    local_port: int


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def stable_id(*parts: str) -> str:
    """A UUID that is the same on every run for the same names, like a Railway project/service id."""
    return str(uuid.uuid5(_ID_NAMESPACE, "/".join(parts)))


def railway_variables(project: str, environment: str, service: str, *, deployment_id: str, replica_id: str,
                      public_domain: str | None = None) -> dict[str, str]:
    """What Railway injects into every service (without PORT, which depends on the service's kind)."""
    env = {
        "RAILWAY_PROJECT_NAME": project,
        "RAILWAY_PROJECT_ID": stable_id(project),
        "RAILWAY_ENVIRONMENT_NAME": environment,
        "RAILWAY_ENVIRONMENT_ID": stable_id(project, "environment", environment),
        "RAILWAY_ENVIRONMENT": environment,  # legacy name, still in Railway's Dockerfile example
        "RAILWAY_SERVICE_NAME": service,
        "RAILWAY_SERVICE_ID": stable_id(project, "service", service),
        "RAILWAY_DEPLOYMENT_ID": deployment_id,
        "RAILWAY_REPLICA_ID": replica_id,
        "RAILWAY_PRIVATE_DOMAIN": f"{slug(service)}.railway.internal",
    }
    if public_domain:
        env["RAILWAY_PUBLIC_DOMAIN"] = public_domain
    return env


def resolve(namespaces: Mapping[str, Mapping[str, str]], service: str, secret: SecretSource) -> dict[str, str]:
    """Every variable of `service` with its references substituted; `namespaces` holds each service's
    variables and "shared". Raises BuildError naming the service, the variable and the reference."""
    resolver = _Resolver(namespaces, secret, service)
    return {name: resolver.value(service, name, ()) for name in namespaces[service]}


class _Resolver:
    def __init__(self, namespaces: Mapping[str, Mapping[str, str]], secret: SecretSource, service: str):
        self.namespaces, self.secret, self.service = namespaces, secret, service
        self.done: dict[tuple[str, str], str] = {}
        self.active: list[tuple[str, str]] = []

    def value(self, namespace: str, name: str, chain: tuple[str, ...]) -> str:
        key = (namespace, name)
        if key in self.done:
            return self.done[key]
        if key in self.active:
            cycle = " -> ".join(f"{ns}.{var}" for ns, var in [*self.active[self.active.index(key):], key])
            self._fail(chain, f"the references form a cycle ({cycle})")
        self.active.append(key)
        raw = self.namespaces[namespace][name]
        result = REFERENCE.sub(lambda match: self._substitute(namespace, name, match, chain), raw)
        self.active.pop()
        self.done[key] = result
        return result

    def _substitute(self, namespace: str, name: str, match: re.Match, chain: tuple[str, ...]) -> str:
        chain = (*chain, name, match[0]) if not chain else (*chain, match[0])
        call = _SECRET_CALL.match(match[1])
        if call:
            alphabet = call[2] if call[2] is not None else string.ascii_letters + string.digits
            return self.secret(namespace, name, int(call[1] or 32), alphabet)
        target = _TARGET.match(match[1])
        if not target:
            self._fail(chain, "that is not a reference; write ${{Service.VAR}}, ${{shared.VAR}} or ${{VAR}}")
        other, var = target[1] or namespace, target[2]
        if other not in self.namespaces:
            services = sorted(ns for ns in self.namespaces if ns != "shared")
            near = [ns for ns in services if ns.lower() == other.lower()]
            if near:
                self._fail(chain, f"there is no service named {other}; service names are case-sensitive, "
                                  f"did you mean {near[0]}?")
            self._fail(chain, f"there is no service named {other} (services: {', '.join(services)})")
        if var not in self.namespaces[other]:
            hint = "only a service with a public domain has it" if var == "RAILWAY_PUBLIC_DOMAIN" \
                else "define it there or fix the reference"
            self._fail(chain, f"{other} has no variable {var}; {hint}")
        return self.value(other, var, chain)

    def _fail(self, chain: tuple[str, ...], problem: str) -> NoReturn:
        variable, *references = chain
        path = ", which references ".join(references)
        raise BuildError(f"{self.service}: variable {variable} references {path}: {problem}")


def referenced_services(value: str) -> set[str]:
    """The services `value` references by name (not itself through ${{VAR}}, nor shared)."""
    targets = (_TARGET.match(match[1]) for match in REFERENCE.finditer(value))
    return {target[1] for target in targets if target and target[1] and target[1] != "shared"}


def localize(value: str, endpoints: Mapping[str, Endpoint]) -> str:
    """Rewrite a resolved value for a local process: private domains to their loopback ports."""

    def to_loopback(match: re.Match) -> str:
        endpoint = endpoints.get(match[1])
        if endpoint is None:  # not a service of this stack: the name fails to resolve, as on Railway
            return match[0]
        if match[2] is None:
            return "127.0.0.1"
        port = int(match[2])
        return f"127.0.0.1:{endpoint.local_port if port in (endpoint.railway_port, endpoint.local_port) else port}"

    return _INTERNAL.sub(to_loopback, value)


def secret_values(env: Mapping[str, str]) -> frozenset[str]:
    """Values to mask in logs: variables named like secrets and the password part of URLs."""
    found = {value for name, value in env.items() if _SECRET_NAME.search(name)}
    for value in env.values():
        found.update(_URL_PASSWORD.findall(value))
    # A very short value would mask unrelated text in every line.
    return frozenset(value for value in found if len(value) >= 4)


def secret_store(state_dir: Path) -> SecretSource:
    """`secret()` values kept under `state_dir`, so a password stays the same across runs, and changes
    only when the state (and with it the Postgres volume) is wiped."""

    def secret(namespace: str, variable: str, length: int, alphabet: str) -> str:
        path = StateDir(state_dir).secrets / f"{namespace}.{variable}"
        if path.is_file():
            return path.read_text()
        path.parent.mkdir(parents=True, exist_ok=True)
        value = "".join(secrets.choice(alphabet) for _ in range(length))
        path.write_text(value)
        path.chmod(0o600)
        return value

    return secret
