"""Railway's variables: what Railway injects, `${{...}}` references, and how local processes reach each other.

References resolve the way Railway resolves them, recursively: `${{Service.VAR}}` (service names are
case-sensitive), `${{shared.VAR}}`, `${{VAR}}` for the same service, spaces allowed inside the braces, plus
the templates' `${{secret(n, "alphabet")}}`.

A reference Railway cannot resolve (no such variable, no such service) does not fail the deploy: Railway
renders it as an empty string and the service starts with the broken value, so
`http://${{api.RAILWAY_PRIVATE_DOMAIN}}:${{api.PORT}}` becomes `http://api.railway.internal:/` (port 80).
The PORT Railway injects at runtime is not a service variable, so `${{svc.PORT}}` resolves only when the
user set PORT on that service. Sources: Railway's private-networking guide, railwayapp/docs commit
42c9ad2b (2025-03-02, `src/docs/guides/private-networking.md`): "`api.PORT` above refers to a service
variable that must be set manually. It does not automatically resolve to the port the service is listening
on, nor does it resolve to the `PORT` environment variable injected into the service at runtime." Railway's
docs do not say what an unresolved reference renders as; users who hit it on Railway report the empty
string and a running deploy (public repositories' deploy notes: `http://backend.railway.internal:/api` and
"fetch failed", `telegram-monitor.railway.internal:/notify` "because the referenced service-level PORT
variable was empty", "An unresolved ${{shared.NAME}} reference resolves to an empty string"). The emulator
does the same and says so in the build log, naming the reference and the fix. A cycle or a malformed
`${{...}}` cannot be rendered at all and stays a build error (Railway's behaviour there is undocumented).

Locally there is no private network, so a resolved value is rewritten before a process sees it, as
`railway dev` does: `<slug>.railway.internal:<port>` becomes the loopback address and the service's local
port, and a bare `<slug>.railway.internal` the loopback address. Which loopback follows the environment's
private network (railwayapp/docs `content/docs/networking/private-networking/how-it-works.md`, c2a634f):
environments created after 2025-10-16 resolve private names to IPv4 and IPv6 (`dual-stack`: 127.0.0.1),
older ones to IPv6 only (`ipv6-only`: ::1, `[::1]` in a URL), where a server bound to 0.0.0.0 is
unreachable, as it is there. Public URLs are left alone: unlike `railway dev` without its Caddy, the local
edge answers https:// on the domain's port (plain http:// gets Railway's 301 to https://).
"""

from __future__ import annotations

import re
import string
import uuid
from dataclasses import dataclass
from typing import Callable, Mapping, NoReturn

from emulator.model.plan import BuildError

REFERENCE = re.compile(r"\$\{\{(.*?)\}\}")
_TARGET = re.compile(r"^\s*(?:([A-Za-z0-9_-]+)\.)?([A-Za-z_][A-Za-z0-9_]*)\s*$")
_SECRET_CALL = re.compile(r'^\s*secret\(\s*(\d*)\s*(?:,\s*"([^"]*)"\s*)?\)\s*$')
_INTERNAL = re.compile(r"(?<![A-Za-z0-9.-])([a-z0-9-]+)\.railway\.internal(?::(\d+))?")
# A loopback host with a port, in a URL or as host:port: what a local .env uses to reach another process.
_LOOPBACK = re.compile(r"(?<![A-Za-z0-9.-])(localhost|127\.0\.0\.1|\[::1\]|0\.0\.0\.0):(\d+)")
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|AUTH_STRING|(?:^|_)KEY(?:$|_)")
_URL_PASSWORD = re.compile(r"://[^/@:\s]*:([^/@\s]+)@")
_ID_NAMESPACE = uuid.UUID("6f1c1f8e-4a57-4c1e-9d0b-7a61e2c5b0aa")

PRIVATE_NETWORKS = ("dual-stack", "ipv6-only")  # a new environment's first
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
    """Where a service listens: its port on Railway and the local port standing in for it. `dual_stack`:
    the local stand-in listens on IPv4 only while the real service answers on IPv6 too (Postgres's image
    listens on `*`), so an IPv6-only private network must not cut it off."""

    railway_port: int
    local_port: int
    dual_stack: bool = False


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


def resolve(namespaces: Mapping[str, Mapping[str, str]], service: str, secret: SecretSource,
            warnings: list[str] | None = None) -> dict[str, str]:
    """Every variable of `service` with its references substituted; `namespaces` holds each service's
    variables and "shared". Raises BuildError, naming the service, the variable and the reference, for what
    cannot be rendered at all (a cycle, a malformed reference). A reference to something that does not exist
    is one too, unless `warnings` is given: then it becomes "", as Railway renders it, and adds a line to
    `warnings` naming the reference and the fix (the planner's way; the emulator's own steps stay strict)."""
    resolver = _Resolver(namespaces, secret, service, warnings)
    return {name: resolver.value(service, name, ()) for name in namespaces[service]}


class _Resolver:
    def __init__(self, namespaces: Mapping[str, Mapping[str, str]], secret: SecretSource, service: str,
                 warnings: list[str] | None):
        self.namespaces, self.secret, self.service, self.warnings = namespaces, secret, service, warnings
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
                return self._unresolved(chain, f"there is no service named {other}; service names are "
                                               f"case-sensitive, did you mean {near[0]}?")
            return self._unresolved(chain, f"there is no service named {other} (services: {', '.join(services)})")
        if var not in self.namespaces[other]:
            if var == "PORT" and other != "shared":
                fix = "read $PORT at runtime" if target[1] is None \
                    else f"use https://${{{{{other}.RAILWAY_PUBLIC_DOMAIN}}}}"
                hint = (f"the PORT Railway injects at runtime is not a variable you can reference; set PORT on "
                        f"{other} (e.g. PORT = \"8080\") or {fix}")
            elif var == "RAILWAY_PUBLIC_DOMAIN":
                hint = f"only a service with a public domain has it; generate a domain for {other}"
            else:
                hint = "define it there or fix the reference"
            return self._unresolved(chain, f"{other} has no variable {var}; {hint}")
        return self.value(other, var, chain)

    def _unresolved(self, chain: tuple[str, ...], problem: str) -> str:
        if self.warnings is None:
            self._fail(chain, problem)
        self.warnings.append(f"⚠ {self._where(chain)}, which Railway renders as an empty string: {problem}")
        return ""

    def _where(self, chain: tuple[str, ...]) -> str:
        variable, *references = chain
        return f"{self.service}: variable {variable} references " + ", which references ".join(references)

    def _fail(self, chain: tuple[str, ...], problem: str) -> NoReturn:
        raise BuildError(f"{self._where(chain)}: {problem}")


def referenced_services(value: str) -> set[str]:
    """The services `value` references by name (not itself through ${{VAR}}, nor shared)."""
    targets = (_TARGET.match(match[1]) for match in REFERENCE.finditer(value))
    return {target[1] for target in targets if target and target[1] and target[1] != "shared"}


def localize(value: str, endpoints: Mapping[str, Endpoint], private_network: str = "dual-stack") -> str:
    """Rewrite a resolved value for a local process: private domains to their loopback ports, over IPv4 or,
    on an `ipv6-only` private network, over IPv6 only (see the module docstring)."""

    def to_loopback(match: re.Match) -> str:
        endpoint = endpoints.get(match[1])
        if endpoint is None:  # not a service of this stack: the name fails to resolve, as on Railway
            return match[0]
        ipv6 = private_network == "ipv6-only" and not endpoint.dual_stack
        in_url = value[:match.start()].endswith(("://", "@"))
        host = ("[::1]" if match[2] is not None or in_url else "::1") if ipv6 else "127.0.0.1"
        if match[2] is None:
            return host
        port = int(match[2])
        return f"{host}:{endpoint.local_port if port in (endpoint.railway_port, endpoint.local_port) else port}"

    return _INTERNAL.sub(to_loopback, value)


def loopback_warnings(service: str, variables: Mapping[str, str], endpoints: Mapping[str, Endpoint]) -> list[str]:
    """Build-log lines for `service`'s variables (as the user set them, unresolved) that reach another
    service through localhost. On Railway every service is its own container, where localhost is that
    service alone, so such a value always fails there, however well it works on a laptop. `endpoints` is
    keyed by service name; a port that is the service's own is left alone (a process talking to itself)."""
    own = endpoints.get(service)
    own_ports = {own.railway_port, own.local_port} if own else set()
    lines = []
    for name, value in variables.items():
        for match in _LOOPBACK.finditer(value):
            port = int(match[2])
            if port in own_ports:
                continue
            targets = sorted(other for other, endpoint in endpoints.items()
                             if other != service and port in (endpoint.railway_port, endpoint.local_port))
            target = targets[0] if len(targets) == 1 else "<service>"
            lines.append(
                f"⚠ {service}: variable {name} points at {match[0]}, which on Railway is {service}'s own "
                f"container, never another service; use ${{{{{target}.RAILWAY_PRIVATE_DOMAIN}}}} instead of "
                f"{match[1]} (or https://${{{{{target}.RAILWAY_PUBLIC_DOMAIN}}}})")
    return lines


def secret_values(env: Mapping[str, str]) -> frozenset[str]:
    """Values to mask in logs: variables named like secrets and the password part of URLs."""
    found = {value for name, value in env.items() if _SECRET_NAME.search(name)}
    for value in env.values():
        found.update(_URL_PASSWORD.findall(value))
    # A very short value would mask unrelated text in every line.
    return frozenset(value for value in found if len(value) >= 4)
