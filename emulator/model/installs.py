"""How each builder installs a Python app: which files it reads and which commands it runs.

- Railpack, `core/providers/python/python.go` (railwayapp/railpack b5e805800e6787a4744cd944a357e29b848d38f3):
  `requirements.txt` first (`python -m venv /app/.venv`, `pip install -r requirements.txt`); else
  `pyproject.toml` + `uv.lock` (`uv sync --locked --no-dev --no-install-project` with only the install
  files, then `uv sync --locked --no-dev --no-editable` with the source); else poetry.lock, pdm.lock,
  Pipfile; else nothing is installed (a `pyproject.toml` alone gets no install step). No extras, ever.
  The install step copies only requirements.txt, pyproject.toml, Pipfile, poetry.lock, uv.lock, pdm.lock,
  unless they reference local paths (`installNeedsAllFiles`).
- Nixpacks, `src/providers/python.rs` (railwayapp/nixpacks f51d7fd5872e6937a98870b5339ff3ce641499e3):
  `requirements.txt` (pip) first; else with pyproject.toml: poetry.lock, pdm.lock, uv.lock
  (`uv sync --no-dev --frozen`: a stale lock is installed as it is, and the project editable), else
  `pip install .`; all into /opt/venv.
- Dockerfile: whatever its RUN lines run; the `uv sync ...` and `pip install ...` among them are what
  the emulator repeats.

Locally every install runs with the project's locked uv against the host's Python (`uv pip install` stands
in for pip: same requirement files, uv's resolver and cache). Poetry, PDM and Pipenv are not modelled: such
a repo fails the build with a message that says so.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

from emulator.model.plan import BuildError

WHOLE_SOURCE = "."  # an input meaning: every file of the snapshot
_UNMODELLED = {"poetry.lock": "Poetry", "pdm.lock": "PDM", "Pipfile": "Pipenv"}


@dataclass(frozen=True)
class Install:
    """Two layers, as Docker caches them: the dependencies (`commands`, which read only `inputs`), then the
    project itself from the whole source (`project_commands`), so an edit to the code rebuilds only that."""

    manager: str  # "uv" | "pip" | "none"
    log: tuple[str, ...]  # the builder's own lines: "↳ Using uv", "$ uv sync --locked ..."
    commands: tuple[tuple[str, ...], ...]  # what runs locally: ("uv", "sync", ...), ("uv", "pip", "install", ...)
    inputs: tuple[str, ...]  # the files the dependencies depend on, or WHOLE_SOURCE
    project_commands: tuple[tuple[str, ...], ...] = ()


NOTHING = Install("none", (), (), ())


def railpack(source: Path) -> Install:
    has = _has(source)
    if has("requirements.txt"):
        return _pip(source, "requirements.txt", "↳ Using pip")
    if has("pyproject.toml") and has("uv.lock"):
        deps, project = "uv sync --locked --no-dev --no-install-project", "uv sync --locked --no-dev --no-editable"
        return Install("uv", ("↳ Using uv", f"$ {deps}", f"$ {project}"), (tuple(deps.split()),),
                       (WHOLE_SOURCE,) if _needs_all(source) else ("pyproject.toml", "uv.lock"),
                       () if _virtual(source) else (tuple(project.split()),))
    for marker in ("poetry.lock", "pdm.lock"):
        if has("pyproject.toml") and has(marker):
            raise _unmodelled(marker)
    if has("Pipfile"):
        raise _unmodelled("Pipfile")
    return NOTHING


def nixpacks(source: Path) -> Install:
    has = _has(source)
    if has("requirements.txt"):
        return _pip(source, "requirements.txt", "install: pip install -r requirements.txt")
    if has("pyproject.toml"):
        for marker in ("poetry.lock", "pdm.lock"):
            if has(marker):
                raise _unmodelled(marker)
        if has("uv.lock"):
            # One command there; here split in two layers with the same result.
            return Install("uv", ("install: uv sync --no-dev --frozen",),
                           (("uv", "sync", "--no-dev", "--frozen", "--no-install-project"),),
                           (WHOLE_SOURCE,) if _needs_all(source) else ("pyproject.toml", "uv.lock"),
                           () if _virtual(source) else (("uv", "sync", "--no-dev", "--frozen"),))
        return Install("pip", ("install: pip install .",), (("uv", "pip", "install", "."),), (WHOLE_SOURCE,))
    if has("Pipfile"):
        raise _unmodelled("Pipfile")
    return NOTHING


def dockerfile(run_lines: list[str]) -> Install:
    """The `uv sync` and `pip install` commands among a Dockerfile's RUN lines, in order. A lone `uv sync`
    is split into its two layers (dependencies from the lock, then the project)."""
    commands, log = [], []
    for line in run_lines:
        for segment in re.split(r"&&|\|\||;", line):
            words = _split(segment)
            if words[:2] == ["uv", "sync"]:
                commands.append(tuple(words))
            elif "pip" in words[:3] and "install" in words:
                at = words.index("install")
                commands.append(("uv", "pip", "install", *words[at + 1:]))
            else:
                continue
            log.append(f"$ {shlex.join(words)}")
    if not commands:
        return NOTHING
    if len(commands) == 1 and commands[0][:2] == ("uv", "sync") and "--no-install-project" not in commands[0]:
        return Install("uv", tuple(log), ((*commands[0], "--no-install-project"),), ("pyproject.toml", "uv.lock"),
                       (commands[0],))
    manager = "uv" if commands[0][:2] == ("uv", "sync") else "pip"
    return Install(manager, tuple(log), tuple(commands), (WHOLE_SOURCE,))


def _pip(source: Path, requirements: str, line: str) -> Install:
    text = (source / requirements).read_text(errors="replace")
    # Railpack copies the whole source only for file:// references; `-r other.txt` then fails as it does there.
    inputs = (WHOLE_SOURCE,) if "file://" in text else (requirements,)
    return Install("pip", (line, f"$ pip install -r {requirements}"),
                   (("uv", "pip", "install", "-r", requirements),), inputs)


def _virtual(source: Path) -> bool:
    """A uv project that is not itself installed (no build system, or tool.uv.package = false)."""
    try:
        doc = tomllib.loads((source / "pyproject.toml").read_text())
    except (tomllib.TOMLDecodeError, OSError):
        return False  # uv will say what is wrong with it
    package = doc.get("tool", {}).get("uv", {}).get("package")
    return package is False or (package is None and "build-system" not in doc)


def _needs_all(source: Path) -> bool:
    text = (source / "pyproject.toml").read_text(errors="replace")
    return "file://" in text or "path = " in text or "workspace" in text


def _unmodelled(marker: str) -> BuildError:
    return BuildError(f"{marker}: {_UNMODELLED[marker]} projects are built by Railway but not by the emulator; "
                      "deploy with a uv.lock or requirements.txt to run this service locally")


def _has(source: Path):
    return lambda name: (source / name).is_file()


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()
