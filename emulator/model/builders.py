"""What Railway's builders make of the repo: the start command, how the image runs it, what the image holds.

Each builder has its own precedence for the start command (railway.md §1, §2, §7.2):

- Railpack (its code, `emulator.model.railpack_config`): custom start command > railpack.json
  `deploy.startCommand` > RAILPACK_START_CMD > Procfile (web > worker > the first other entry) > the Python
  provider's main.py/app.py/... default. The prose docs put the variable first; the code merges the file last.
- Nixpacks: custom start command > NIXPACKS_START_CMD > nixpacks.toml `[start] cmd` > Procfile (web >
  worker > alphabetical; `release` is a build phase, never picked) > the Python provider's default.
- Dockerfile: a custom start command (exec form, no shell) > ENTRYPOINT/CMD.

Railpack logs "Found web command in Procfile" whenever the Procfile has `web`, even when a custom start
command overrides it, because its Procfile provider always runs. The images differ in what they hold:
Railpack's runtime (debian slim) has no git unless its deploy apt packages name it; the Nixpacks image has
git and curl from its base; a Dockerfile image has what its base and its apt-get lines give it.
How each installs the app's dependencies is `emulator.model.installs`; `emulator.runtime.image` builds it.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from emulator.model import installs, railpack_config
from emulator.model.installs import Install
from emulator.model.plan import BuildError
from emulator.model.procfile import Procfile, read_procfile
from emulator.model.stack import Service

OPTIONAL_TOOLS = ("git", "curl", "wget", "ssh")  # the tools whose presence depends on the image
PACKAGE_TOOLS = {"git": "git", "curl": "curl", "wget": "wget", "openssh-client": "ssh", "ssh": "ssh"}
NIXPACKS_TOOLS = frozenset({"git", "curl"})  # from its base image's apt-get line
# Both builders bake these into a Python image (railpack python.go GetPythonEnvVars; nixpacks python.rs).
PYTHON_ENV = {
    "PYTHONFAULTHANDLER": "1",
    "PYTHONUNBUFFERED": "1",
    "PYTHONHASHSEED": "random",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PIP_DEFAULT_TIMEOUT": "100",
}
NO_START_RAILPACK = "No start command detected. Specify a start command: https://railpack.com/config/file#deploy"
NO_START_NIXPACKS = ("No start command could be found. Set a Custom Start Command, NIXPACKS_START_CMD, "
                     "`[start] cmd` in nixpacks.toml or a Procfile `web:` entry")

_PYTHON_MARKERS = ("main.py", "requirements.txt", "pyproject.toml", "Pipfile")
_RAILPACK_MAIN_FILES = ("main.py", "app.py", "start.py", "bot.py", "hello.py", "server.py")  # python.go
RAILPACK_PYTHON = "3.13"  # python.go DEFAULT_PYTHON_VERSION
NIXPACKS_PYTHON = "3.11"  # Nix's python3 (nixpacks docs, providers/python.md)
# Official images built on buildpack-deps (the full, non-slim tags) carry its scm tools.
_FULL_IMAGES = ("python", "node", "ruby", "golang", "buildpack-deps")


@dataclass(frozen=True)
class Build:
    builder: str  # "railpack" | "nixpacks" | "dockerfile"
    argv: tuple[str, ...]  # how the image's entrypoint runs the start command
    log: tuple[str, ...]  # the builder's plan lines, before the install
    tools: frozenset[str]  # the OPTIONAL_TOOLS the runtime image has
    env: dict[str, str] = field(default_factory=dict)  # variables baked into the image
    install: Install = installs.NOTHING  # how the image's dependencies are installed
    start: tuple[str, ...] = ()  # the log's last lines: the start command
    apt: tuple[str, ...] = ()  # the runtime image's apt packages
    python: str | None = None  # the Python version Railway's image would run, when it runs Python
    root: bool = True  # whether the start command runs as root (Railpack's and Nixpacks' images do)


def build(service: Service, repo_dir: Path, variables: Mapping[str, str]) -> Build:
    """Plan the image for a repo service; `variables` are its resolved service variables, which Railway
    also hands to the build. Raises BuildError with the builder's message."""
    repo_dir = Path(repo_dir)
    dockerfile = _dockerfile(service, repo_dir, variables)
    if dockerfile:
        return _dockerfile_build(service, repo_dir, *dockerfile)
    procfile = read_procfile(repo_dir)
    if service.builder == "nixpacks":
        return _nixpacks(service, repo_dir, variables, procfile)
    return _railpack(service, repo_dir, variables, procfile)


def _railpack(service: Service, repo_dir: Path, variables: Mapping[str, str], procfile: Procfile | None) -> Build:
    merged = railpack_config.resolve(repo_dir, variables)
    config = merged.config
    log = ["Railpack (emulated)"]
    if merged.config_file:
        log.append(f"↳ Using config file `{merged.config_file}`")
    if config.install_cmd or config.build_cmd:
        raise BuildError("RAILPACK_INSTALL_CMD / RAILPACK_BUILD_CMD are not modelled by the emulator (it runs the "
                         "Python provider's own install only); remove them to deploy locally")
    # python.go Detect: a main file, requirements.txt, pyproject.toml or Pipfile.
    python = _detects_python(repo_dir) or any((repo_dir / name).is_file() for name in _RAILPACK_MAIN_FILES)
    install = installs.NOTHING
    if python:
        log.append("↳ Detected Python")
        install = installs.railpack(repo_dir)
    kind, procfile_command = _procfile_pick(procfile, nixpacks=False)
    if kind:
        log.append(f"↳ Found {kind} command in Procfile")
    log.extend(_lint_lines(procfile))
    default = _railpack_python_start(repo_dir) if python else None
    # provider default < Procfile < the merged deploy.startCommand (railpack.json > RAILPACK_START_CMD), and
    # Railway's Custom Start Command over the image's.
    command = _first(service.start_command, config.start_cmd, procfile_command, default)
    if not command:
        raise BuildError(NO_START_RAILPACK)
    # Railpack says nothing when railpack.json overrides a variable; the emulator does.
    log.extend(f"⚠ {variable} is ignored: `{merged.config_file}` sets that list too, and Railpack merges the "
               "file over the variables (so the file's list wins)" for variable in merged.ignored)
    if config.deploy_apt_packages is not None and "..." not in config.deploy_apt_packages:
        # context.go applyDeployAptPackages; the Python provider adds libpq5 (psycopg without [binary]),
        # libcairo2, poppler-utils or Playwright's libraries, never git.
        log.append("↳ Add `...` to `deploy.aptPackages` to retain Railpack packages")
    # The Python provider's own deploy packages (libpq5 and the like) hold none of the OPTIONAL_TOOLS.
    apt = railpack_config.spread(config.deploy_apt_packages, [])
    if any(apt):
        log.append(f"install apt packages: {' '.join(sorted(set(p for p in apt if p)))}")  # the build step's name
    tools = frozenset(PACKAGE_TOOLS[name] for name in apt if name in PACKAGE_TOOLS)
    version = _requested_python(repo_dir, variables, "RAILPACK_PYTHON_VERSION", RAILPACK_PYTHON) if python else None
    return Build("railpack", ("/bin/bash", "-c", command), tuple(log), tools,
                 {**(dict(PYTHON_ENV) if python else {}), **config.deploy_variables}, install=install,
                 start=("Deploy", f"$ {command}"), apt=tuple(p for p in apt if p), python=version)


def _nixpacks(service: Service, repo_dir: Path, variables: Mapping[str, str], procfile: Procfile | None) -> Build:
    config = {}
    if (repo_dir / "nixpacks.toml").is_file():
        try:
            config = tomllib.loads((repo_dir / "nixpacks.toml").read_text())
        except tomllib.TOMLDecodeError as exc:
            raise BuildError(f"Error: Reading nixpacks.toml: {exc}") from None
    if not isinstance(config.get("start", {}), dict):
        raise BuildError("Error: Reading nixpacks.toml: `start` must be a table, e.g. [start] cmd = \"...\"")
    python = _detects_python(repo_dir)
    _, procfile_command = _procfile_pick(procfile, nixpacks=True)
    command = _first(service.start_command, variables.get("NIXPACKS_START_CMD"),
                     (config.get("start") or {}).get("cmd"), procfile_command,
                     _nixpacks_default(repo_dir) if python else None)
    if not command:
        raise BuildError(NO_START_NIXPACKS)
    log = ("Nixpacks (emulated)", *_lint_lines(procfile))
    version = _requested_python(repo_dir, variables, "NIXPACKS_PYTHON_VERSION", NIXPACKS_PYTHON) if python else None
    # ENTRYPOINT ["/bin/bash", "-l", "-c"]: a login shell, so the profile sets PATH before the command.
    return Build("nixpacks", ("/bin/bash", "-l", "-c", command), log, NIXPACKS_TOOLS,
                 dict(PYTHON_ENV) if python else {},
                 install=installs.nixpacks(repo_dir) if python else installs.NOTHING,
                 start=(f"║ start      │ {command}",), python=version)


def _dockerfile(service: Service, repo_dir: Path, variables: Mapping[str, str]) -> tuple[str, bool] | None:
    """(path relative to the repo, whether it was auto-detected), or None for a builder without one."""
    path = service.dockerfile_path or variables.get("RAILWAY_DOCKERFILE_PATH")
    if path:
        return path, False
    # "Railway will always build with a Dockerfile if it finds one": exactly `Dockerfile` at the root.
    if service.builder == "dockerfile" or "Dockerfile" in os.listdir(repo_dir):
        return "Dockerfile", True
    return None


def _dockerfile_build(service: Service, repo_dir: Path, path: str, detected: bool) -> Build:
    file = repo_dir / path
    if not file.is_file():
        raise BuildError(f"Dockerfile `{path}` does not exist; fix the Dockerfile path or add the file")
    image = parse_dockerfile(file.read_text())
    if service.start_command:
        # Railway runs a custom start command in exec form, replacing ENTRYPOINT: no shell, no $PORT.
        argv = tuple(shlex.split(service.start_command))
    else:
        argv = image.argv()
    if not argv:
        raise BuildError(f"`{path}` has no CMD or ENTRYPOINT and the service has no start command; add one")
    found = "Using detected Dockerfile!" if detected else f"Using Dockerfile `{path}`"
    # Locally the app directory stands for the directory the build context was copied into.
    checkout = image.checkout or image.workdir
    local = tuple(_in_checkout(word, checkout, repo_dir) for word in argv)
    return Build("dockerfile", local, (found,), frozenset(image.tools), dict(image.env),
                 install=installs.dockerfile(image.runs), start=("Deploy", f"$ {shlex.join(argv)}"),
                 python=image.python, root=(image.user or "root").partition(":")[0] in ("root", "0"))


def _in_checkout(word: str, checkout: str | None, repo_dir: Path) -> str:
    if checkout and checkout != "/" and (word == checkout or word.startswith(checkout + "/")):
        return str(repo_dir) + word[len(checkout):]
    return word


@dataclass
class DockerImage:
    """The final stage of a Dockerfile, as far as the emulator needs it."""

    tools: set[str] = field(default_factory=set)
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: tuple[list[str], bool] | None = None  # (words, exec form?)
    cmd: tuple[list[str], bool] | None = None
    workdir: str | None = None
    checkout: str | None = None  # where the first COPY/ADD into a directory put the build context
    runs: list[str] = field(default_factory=list)  # RUN lines, the base stage's first
    python: str | None = None  # from a python:<version> base image
    user: str | None = None  # the last USER, e.g. "worker" or "10001:10001"; None: root

    def argv(self) -> tuple[str, ...]:
        if self.entrypoint:
            words, exec_form = self.entrypoint
            if not exec_form:  # shell-form ENTRYPOINT ignores CMD
                return ("/bin/sh", "-c", words[0])
            return (*words, *_as_argv(self.cmd))
        return _as_argv(self.cmd)


def parse_dockerfile(text: str) -> DockerImage:
    stages: dict[str, DockerImage] = {}
    image, cmd_set = None, False
    for keyword, args in _instructions(text):
        if keyword == "FROM":
            words = [word for word in args.split() if not word.startswith("--")]
            if not words:
                raise BuildError("Dockerfile: FROM requires the name of an image")
            cmd_set = False
            parent = stages.get(words[0].lower())
            image = DockerImage(set(parent.tools), dict(parent.env), parent.entrypoint, parent.cmd, parent.workdir,
                                parent.checkout, list(parent.runs), parent.python, parent.user) if parent else \
                DockerImage(set(_base_tools(words[0])), python=_base_python(words[0]))
            if len(words) >= 3 and words[1].lower() == "as":
                stages[words[2].lower()] = image
        elif image is None:  # ARG before the first FROM
            continue
        elif keyword == "RUN":
            image.tools |= _installed_tools(args)
            image.runs.append(args)
        elif keyword == "ENV":
            image.env.update(_env_pairs(args))
        elif keyword == "ENTRYPOINT":
            image.entrypoint = _command_form(args)
            if not cmd_set:  # BuildKit drops a CMD inherited from the base once ENTRYPOINT changes
                image.cmd = None
        elif keyword == "CMD":
            image.cmd, cmd_set = _command_form(args), True
        elif keyword == "USER":
            image.user = args.split()[0] if args.split() else None
        elif keyword == "WORKDIR":
            image.workdir = posixpath.join(image.workdir or "/", args)
        elif keyword in ("COPY", "ADD") and image.checkout is None and "--from" not in args:
            *sources, target = [word for word in _split(args) if not word.startswith("--")] or [""]
            if sources and (target in (".", "./") or target.endswith("/")):
                image.checkout = posixpath.normpath(posixpath.join(image.workdir or "/", target))
    return image or DockerImage()


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) with continuation lines joined and comment lines dropped, as Docker does."""
    out, pending = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def _base_tools(image: str) -> set[str]:
    name, _, tag = image.lower().split("@")[0].partition(":")
    repo, tag = name.rsplit("/", 1)[-1], tag or "latest"
    if repo == "buildpack-deps" and tag.endswith("curl"):
        return {"curl", "wget"}
    if repo in _FULL_IMAGES and "slim" not in tag and "alpine" not in tag:
        return set(OPTIONAL_TOOLS)
    if repo == "alpine" or "alpine" in tag:
        return {"wget"}  # busybox
    return set()


def _base_python(image: str) -> str | None:
    name, _, tag = image.lower().split("@")[0].partition(":")
    if name.rsplit("/", 1)[-1] != "python":
        return None
    version = re.match(r"\d+(?:\.\d+)?", tag or "")
    return version[0] if version else "3"


def _installed_tools(script: str) -> set[str]:
    tools = set()
    for segment in re.split(r"&&|\|\||;|\|", script):
        words = [word for word in _split(segment) if word != "sudo"]
        for manager, verb in (("apt-get", "install"), ("apt", "install"), ("apk", "add")):
            if manager in words and verb in words[words.index(manager):]:
                packages = words[words.index(verb, words.index(manager)) + 1:]
                tools |= {PACKAGE_TOOLS[p.split("=")[0]] for p in packages if p.split("=")[0] in PACKAGE_TOOLS}
    return tools


def _env_pairs(args: str) -> dict[str, str]:
    words = _split(args)
    if words and "=" not in words[0]:  # legacy `ENV KEY value with spaces`
        key, _, value = args.partition(" ")
        return {key: value.strip()}
    return dict(word.split("=", 1) for word in words if "=" in word)


def _command_form(args: str) -> tuple[list[str], bool]:
    if args.startswith("["):
        try:
            return [str(word) for word in json.loads(args)], True
        except ValueError:
            pass  # Docker treats a malformed JSON array as shell form
    return [args], False


def _as_argv(command: tuple[list[str], bool] | None) -> tuple[str, ...]:
    if command is None:
        return ()
    words, exec_form = command
    return tuple(words) if exec_form else ("/bin/sh", "-c", words[0])


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _procfile_pick(procfile: Procfile | None, *, nixpacks: bool) -> tuple[str | None, str | None]:
    if procfile is None:
        return None, None
    candidates = {name: command for name, command in procfile.processes.items() if command}
    if nixpacks:
        candidates.pop("release", None)
    for preferred in ("web", "worker"):
        if preferred in candidates:
            return preferred, candidates[preferred]
    # Nixpacks sorts. Railpack iterates a Go map (random) in the version railway.md pins and uses file
    # order in later source; the emulator takes file order, which is deterministic.
    others = sorted(candidates) if nixpacks else list(candidates)
    return (others[0], candidates[others[0]]) if others else (None, None)


def _lint_lines(procfile: Procfile | None) -> tuple[str, ...]:
    return tuple(f"⚠ {note}" for note in procfile.lint) if procfile else ()


def _nixpacks_default(repo_dir: Path) -> str | None:
    # Nixpacks' Python provider starts a pyproject project as a module named after it, else main.py.
    if (repo_dir / "pyproject.toml").is_file():
        try:
            name = tomllib.loads((repo_dir / "pyproject.toml").read_text()).get("project", {}).get("name")
        except tomllib.TOMLDecodeError:
            name = None
        if name:
            return f"python -m {name}"
    return "python main.py" if (repo_dir / "main.py").is_file() else None


def _railpack_python_start(repo_dir: Path) -> str | None:
    """python.go GetStartCommand, Django aside: a framework's server when its dependency is declared, else
    `python <main file>`; each later rule overrides an earlier one, as there."""
    main = next((name for name in _RAILPACK_MAIN_FILES if (repo_dir / name).is_file()), None)
    if main is None:
        return None
    # usesDep: a case-insensitive substring of any requirements.txt, pyproject.toml or Pipfile.
    declared = " ".join(path.read_text(errors="replace").lower() for pattern in
                        ("requirements.txt", "pyproject.toml", "Pipfile") for path in repo_dir.rglob(pattern))
    command = f"python {main}"
    for framework, server, start in (
            ("python-fasthtml", "uvicorn", "uvicorn main:app --host 0.0.0.0 --port ${PORT:-8000}"),
            ("fastapi", "uvicorn", "uvicorn main:app --host 0.0.0.0 --port ${PORT:-8000}"),
            ("flask", "gunicorn", "gunicorn --bind 0.0.0.0:${PORT:-8000} main:app")):
        if framework in declared and server in declared:
            command = start
    return command


def _requested_python(repo_dir: Path, variables: Mapping[str, str], variable: str, default: str) -> str:
    """The version the builder's image would run: its variable, .python-version, runtime.txt, its default."""
    if variables.get(variable, "").strip():
        return variables[variable].strip()
    for name in (".python-version", "runtime.txt"):
        if (repo_dir / name).is_file():
            found = re.search(r"\d+\.\d+(?:\.\d+)?", (repo_dir / name).read_text())
            if found:
                return found[0]
    return default


def _detects_python(repo_dir: Path) -> bool:
    return any((repo_dir / marker).exists() for marker in _PYTHON_MARKERS)


def _first(*candidates: str | None) -> str | None:
    return next((candidate for candidate in candidates if candidate and candidate.strip()), None)
