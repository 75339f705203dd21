"""The stack file: the Railway project as a user configures it in the dashboard, plus named variants.

`railway.stack.toml` holds the settings Railway keeps per service (source, builder, custom start command,
variables, healthcheck, restart policy, replicas, public domain). Variants overlay the base so that one
file describes the production setup and each way users get it wrong; the file's header documents the
format. Loading validates everything up front, so a typo fails here, naming its path, and not as a
confusing deploy later.
"""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from emulator.errors import StackError
from emulator.model.variables import PRIVATE_NETWORKS
from emulator.model.watch_paths import compile_watch_paths

SOURCES = ("repo", "postgres", "replay")
BUILDERS = ("railpack", "nixpacks", "dockerfile")
RESTART_POLICIES = ("ON_FAILURE", "ALWAYS", "NEVER")

_SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOP_KEYS = ("project", "shared", "services", "prefect", "urls", "steps", "variants")
_PROJECT_KEYS = ("name", "environment", "private_network")
_VARIANT_KEYS = ("description", "remove", "project", "shared", "services", "prefect", "urls", "steps")
_PREFECT_KEYS = ("server", "work_pool")
_STEP_KEYS = ("name", "service", "variables", "run", "flow_run", "sql", "http", "timeout")
STEP_ACTIONS = ("run", "flow_run", "sql", "http")
_SERVICE_KEYS = (
    "source", "builder", "dockerfile_path", "start_command", "variables", "healthcheck_path",
    "healthcheck_timeout", "restart_policy", "restart_max_retries", "replicas", "public_domain", "volume",
    "without_files", "files", "watch_paths",
)
# Only a service built from the repo has these (Postgres has its own volume).
_BUILD_KEYS = ("builder", "dockerfile_path", "start_command", "volume", "without_files", "files", "watch_paths")


@dataclass(frozen=True)
class Service:
    name: str
    source: str = "repo"
    builder: str = "railpack"
    dockerfile_path: str | None = None
    start_command: str | None = None  # the dashboard's Custom Start Command; None = let the builder detect
    variables: Mapping[str, str] = field(default_factory=dict)
    healthcheck_path: str | None = None
    healthcheck_timeout: float = 300.0
    restart_policy: str = "ON_FAILURE"
    restart_max_retries: int = 10
    replicas: int = 1
    public_domain: bool = False
    volume: str | None = None  # the volume's mount path, e.g. "/data"; Railway allows one per service
    without_files: tuple[str, ...] = ()  # files left out of the service's snapshot (a repo without them)
    files: Mapping[str, str] = field(default_factory=dict)  # path -> text replacing it in the snapshot
    watch_paths: tuple[str, ...] = ()  # gitignore-style; a change none of them matches does not redeploy


@dataclass(frozen=True)
class Step:
    """What the developer does once the services are Active, and what tells that it worked.

    It runs like `railway run`: on the developer's machine, with `service`'s variables (none without one)
    and `variables` on top, references resolved. Exactly one action, done when its condition holds:
    `run` (a shell command) exits 0; `flow_run` ("flow/deployment") gets a flow run that reaches
    Completed; `sql` (against DATABASE_URL) returns a first value > 0; `http` (a URL) answers 200.
    """

    name: str
    action: str  # one of STEP_ACTIONS
    target: str  # the command, deployment, query or URL
    service: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 300.0


@dataclass(frozen=True)
class Prefect:
    """Which service is the Prefect server (its API at /api on its port and public domain) and the work
    pool `status` reports (references allowed)."""

    server: str
    work_pool: str | None = None


@dataclass(frozen=True)
class Stack:
    project: str
    environment: str
    shared: Mapping[str, str]
    services: Mapping[str, Service]
    variant: str | None = None
    prefect: Prefect | None = None
    urls: Mapping[str, str] = field(default_factory=dict)  # label -> URL (references allowed), printed by `up`
    steps: tuple[Step, ...] = ()
    private_network: str = PRIVATE_NETWORKS[0]  # the environment's: "dual-stack" (new) | "ipv6-only" (legacy)


def list_variants(path: Path) -> dict[str, str]:
    """Variant name -> its description."""
    path = Path(path)
    variants = _read(path).get("variants", {})
    return {name: body.get("description", "") if isinstance(body, dict) else "" for name, body in variants.items()}


def load_stack(path: Path, variant: str | None = None,
               variables: Mapping[str, Mapping[str, str]] | None = None) -> Stack:
    """The stack in `path` with `variant` applied, then `variables` ({service or "shared": {NAME: value}})
    set on top, as `railway variables --set` would."""
    path = Path(path)
    doc = _read(path)
    _check_keys(path, doc, _TOP_KEYS, "")
    variants = doc.get("variants", {})
    _expect(path, "variants", variants, dict)
    base = {key: value for key, value in doc.items() if key != "variants"}
    if variant is not None:
        if variant not in variants:
            known = ", ".join(sorted(variants)) or "none"
            raise StackError(f"{path.name}: no variant named {variant!r}; variants: {known}")
        base = _apply_variant(path, base, variant, variants[variant])
    for target, values in (variables or {}).items():
        services = base.get("services", {})
        if target != "shared" and not isinstance(services.get(target), dict):
            raise StackError(f"{path.name}: cannot set variables on {target!r}: there is no such service "
                             f"(services: {', '.join(services)}; or \"shared\")")
        table = base.setdefault("shared", {}) if target == "shared" else services[target].setdefault("variables", {})
        table.update(values)
    return _stack(path, base, variant)


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise StackError(f"{path}: no such stack file; create it or pass --stack PATH") from None
    except tomllib.TOMLDecodeError as exc:
        raise StackError(f"{path.name}: not valid TOML: {exc}") from None


def _apply_variant(path: Path, base: dict, name: str, overlay: Any) -> dict:
    where = f"variants.{name}"
    _expect(path, where, overlay, dict)
    _check_keys(path, overlay, _VARIANT_KEYS, where)
    merged = copy.deepcopy(base)
    removals = overlay.get("remove", [])
    _expect(path, f"{where}.remove", removals, list)
    # Removal first, so a variant can drop a table and define it afresh in the same overlay.
    for dotted in removals:
        _remove(path, merged, dotted, f"{where}.remove")
    body = {key: value for key, value in overlay.items() if key not in ("description", "remove")}
    return _merge(merged, body)


def _remove(path: Path, doc: dict, dotted: Any, where: str) -> None:
    _expect(path, where, dotted, str)
    *parents, last = dotted.split(".")
    node = doc
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict) or last not in node:
        raise StackError(f"{path.name}: {where}: {dotted!r} is not in the base stack; fix the path")
    del node[last]


def _merge(base: dict, overlay: dict) -> dict:
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _stack(path: Path, doc: dict, variant: str | None) -> Stack:
    project = doc.get("project", {})
    _expect(path, "project", project, dict)
    _check_keys(path, project, _PROJECT_KEYS, "project")
    if "name" not in project:
        raise StackError(f'{path.name}: project.name is missing; add name = "<project>" under [project]')
    services = doc.get("services", {})
    _expect(path, "services", services, dict)
    steps = doc.get("steps", [])
    _expect(path, "steps", steps, list)
    stack = Stack(
        project=_typed(path, "project.name", project["name"], str),
        environment=_typed(path, "project.environment", project.get("environment", "production"), str),
        shared=_variables(path, "shared", doc.get("shared", {})),
        services={name: _service(path, name, body) for name, body in services.items()},
        variant=variant,
        private_network=_choice(path, "project.private_network", project.get("private_network", PRIVATE_NETWORKS[0]),
                                PRIVATE_NETWORKS, str.lower),
        prefect=_prefect(path, doc["prefect"]) if "prefect" in doc else None,
        urls=_urls(path, doc.get("urls", {})),
        steps=tuple(_step(path, index, body) for index, body in enumerate(steps)),
    )
    names = [step.name for step in stack.steps]
    for name in names:
        if names.count(name) > 1:
            raise StackError(f"{path.name}: two steps are named {name!r}; give each step its own name")
    return stack


def _prefect(path: Path, body: Any) -> Prefect:
    _expect(path, "prefect", body, dict)
    _check_keys(path, body, _PREFECT_KEYS, "prefect")
    if "server" not in body:
        raise StackError(f'{path.name}: prefect.server is missing; name the service that runs the Prefect server, '
                         'e.g. server = "web"')
    # A variant may remove the server (or the pool's service); `up` and `status` then have nothing to ask.
    return Prefect(server=_typed(path, "prefect.server", body["server"], str),
                   work_pool=_optional(path, "prefect.work_pool", body.get("work_pool")))


def _urls(path: Path, table: Any) -> dict[str, str]:
    _expect(path, "urls", table, dict)
    for label, url in table.items():
        _expect(path, f"urls.{label}", url, str)
    return dict(table)


def _step(path: Path, index: int, body: Any) -> Step:
    where = f"steps[{index}]"
    _expect(path, where, body, dict)
    _check_keys(path, body, _STEP_KEYS, where)
    name = _typed(path, f"{where}.name", body.get("name", str(index + 1)), str)
    actions = [key for key in STEP_ACTIONS if key in body]
    if len(actions) != 1:
        raise StackError(f"{path.name}: {where} ({name}) needs exactly one of {', '.join(STEP_ACTIONS)}; it has "
                         f"{', '.join(actions) or 'none'}")
    target = _typed(path, f"{where}.{actions[0]}", body[actions[0]], str)
    if actions[0] == "flow_run" and target.count("/") != 1:
        raise StackError(f'{path.name}: {where}.flow_run = {target!r}: write "<flow name>/<deployment name>", '
                         'e.g. "sync-vaults/hourly"')
    return Step(
        name=name,
        action=actions[0],
        target=target,
        service=_optional(path, f"{where}.service", body.get("service")),
        variables=_variables(path, f"{where}.variables", body.get("variables", {})),
        timeout=_number(path, f"{where}.timeout", body.get("timeout", 300), 1),
    )


def _service(path: Path, name: str, body: Any) -> Service:
    where = f"services.{name}"
    if not _SERVICE_NAME.match(name) or name == "shared":
        raise StackError(
            f"{path.name}: {where}: a service name is letters, digits, '-' and '_' and not 'shared' "
            "(it is the namespace in ${{" + name + ".VAR}} references)"
        )
    _expect(path, where, body, dict)
    _check_keys(path, body, _SERVICE_KEYS, where)
    source = _choice(path, f"{where}.source", body.get("source", "repo"), SOURCES, str.lower)
    if source != "repo":
        for key in _BUILD_KEYS:
            if key in body:
                raise StackError(
                    f"{path.name}: {where}.{key}: a {source} service is not built from the repo; remove it"
                )
    builder = _choice(path, f"{where}.builder", body.get("builder", "railpack"), BUILDERS, str.lower)
    dockerfile_path = _optional(path, f"{where}.dockerfile_path", body.get("dockerfile_path"))
    if dockerfile_path is not None and builder != "dockerfile":
        raise StackError(f'{path.name}: {where}.dockerfile_path needs builder = "dockerfile"')
    start_command = _optional(path, f"{where}.start_command", body.get("start_command"))
    if start_command is not None and not start_command.strip():
        raise StackError(f"{path.name}: {where}.start_command is empty; remove the key to let the builder detect one")
    healthcheck_path = _optional(path, f"{where}.healthcheck_path", body.get("healthcheck_path"))
    if healthcheck_path is not None and not healthcheck_path.startswith("/"):
        raise StackError(f"{path.name}: {where}.healthcheck_path must start with '/', e.g. \"/api/health\"")
    volume = _optional(path, f"{where}.volume", body.get("volume"))
    if volume is not None and (not volume.startswith("/") or volume.rstrip("/") == ""):
        raise StackError(f'{path.name}: {where}.volume = {volume!r} must be an absolute mount path other than /, '
                         'e.g. "/data"')
    replicas = _integer(path, f"{where}.replicas", body.get("replicas", 1), 1)
    if volume is not None and replicas > 1:
        raise StackError(f"{path.name}: {where}: a service with a volume cannot have replicas (as on Railway); "
                         "remove the volume or set replicas = 1")
    without_files = body.get("without_files", [])
    _expect(path, f"{where}.without_files", without_files, list)
    for file in without_files:
        if not isinstance(file, str) or not file or file.startswith("/") or ".." in file.split("/"):
            raise StackError(f"{path.name}: {where}.without_files: {file!r} must be a path inside the repository, "
                             'e.g. "railpack.json"')
    files = body.get("files", {})
    _expect(path, f"{where}.files", files, dict)
    for file, text in files.items():
        if not file or file.startswith("/") or ".." in file.split("/") or not isinstance(text, str):
            raise StackError(f"{path.name}: {where}.files: {file!r} must be a path inside the repository with "
                             "the file's text as a string, e.g. files = {\"railpack.json\" = '{}'}")
    watch_paths = body.get("watch_paths", [])
    _expect(path, f"{where}.watch_paths", watch_paths, list)
    compile_watch_paths(watch_paths, f"{path.name}: {where}.watch_paths")
    return Service(
        name=name,
        source=source,
        builder=builder,
        dockerfile_path=dockerfile_path,
        start_command=start_command,
        variables=_variables(path, f"{where}.variables", body.get("variables", {})),
        healthcheck_path=healthcheck_path,
        healthcheck_timeout=_number(path, f"{where}.healthcheck_timeout", body.get("healthcheck_timeout", 300), 1),
        restart_policy=_choice(path, f"{where}.restart_policy", body.get("restart_policy", "ON_FAILURE"),
                               RESTART_POLICIES, str.upper),
        restart_max_retries=_integer(path, f"{where}.restart_max_retries", body.get("restart_max_retries", 10), 0),
        replicas=replicas,
        public_domain=_typed(path, f"{where}.public_domain", body.get("public_domain", False), bool),
        volume=volume.rstrip("/") if volume else None,
        without_files=tuple(without_files),
        files=dict(files),
        watch_paths=tuple(watch_paths),
    )


def _variables(path: Path, where: str, table: Any) -> dict[str, str]:
    _expect(path, where, table, dict)
    out = {}
    for key, value in table.items():
        if not _VARIABLE_NAME.match(key):
            raise StackError(
                f"{path.name}: {where}.{key}: a variable name is letters, digits and '_', not starting with a digit"
            )
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            # Railway stores every variable as text; TOML true would otherwise arrive as Python's "True".
            example = str(value).lower() if isinstance(value, bool) else "..."
            raise StackError(f'{path.name}: {where}.{key}: write the value as a string, e.g. {key} = "{example}"')
        out[key] = str(value)
    return out


def _choice(path: Path, where: str, value: Any, allowed: tuple[str, ...], normalise) -> str:
    # Railway's own config files accept these enums in either case.
    if isinstance(value, str) and normalise(value) in allowed:
        return normalise(value)
    raise StackError(f"{path.name}: {where} = {value!r} is not one of: {', '.join(allowed)}")


def _integer(path: Path, where: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise StackError(f"{path.name}: {where} = {value!r} must be a whole number >= {minimum}")
    return value


def _number(path: Path, where: str, value: Any, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise StackError(f"{path.name}: {where} = {value!r} must be a number of seconds >= {minimum}")
    return float(value)


def _optional(path: Path, where: str, value: Any) -> str | None:
    return None if value is None else _typed(path, where, value, str)


def _typed(path: Path, where: str, value: Any, kind: type):
    _expect(path, where, value, kind)
    return value


def _expect(path: Path, where: str, value: Any, kind: type) -> None:
    names = {dict: "a table", list: "a list", str: "a string", bool: "true or false"}
    if not isinstance(value, kind):
        raise StackError(f"{path.name}: {where} must be {names[kind]}, not {value!r}")


def _check_keys(path: Path, table: dict, known: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in known:
            at = f"{where}.{key}" if where else key
            raise StackError(f"{path.name}: {at}: unknown key; known keys: {', '.join(known)}")
