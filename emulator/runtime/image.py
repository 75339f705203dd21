"""Each repo service's image, built the way Railway builds it: its source from a snapshot, its own virtualenv.

Railway builds what the repository holds (committed and uncommitted files, `.gitignore` respected), never
the developer's working tree. Here `emulator.runtime.snapshot` commits that tree into the state dir's bare
repository; `export` writes a commit's files out, once per tree, and each replica of each deployment
gets a fresh copy of them as its app directory (Railpack's `/app`), so nothing a deployment writes there
outlives it.

The virtualenv is what a Docker layer cache would hold: built once per hash of what it depends on (the
builder's install commands, the Python it runs on, the install files' content, and the whole tree when
the install reads it, e.g. a project installed from source) in a cache dir shared by every state dir
(`EMULATOR_CACHE_DIR`, default `~/.cache/railway-emulator`), and used in place, since a virtualenv holds
absolute paths and cannot be moved. Builds take a lock per hash, so stacks starting together build it once;
a half-built one (a killed build) is found by its missing marker and built again. Entries unused for
`STALE_DAYS` are removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from emulator.model.installs import WHOLE_SOURCE, Install
from emulator.model.plan import BuildError

CACHE_ENV = "EMULATOR_CACHE_DIR"
STALE_DAYS = 14
_MARKER = ".built"
_LOG_TAIL = 40  # lines of uv's output kept in a failed build's message
# What the emulator's own environment must not hand to the image's build.
_BUILD_ENV_DROP = ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "UV_PYTHON", "CONDA_PREFIX", "PYTHONPATH", "PYTHONHOME")


@dataclass(frozen=True)
class Venv:
    path: Path
    log: tuple[str, ...]  # what the build log shows: the commands, a cache hit, how long it took


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "railway-emulator"


def host_python() -> str:
    """The interpreter images run on: the emulator's own Python (a venv's base interpreter)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def uv_binary() -> str:
    """The project's locked uv (a dependency of the emulator extra), else one on PATH."""
    try:
        from uv import find_uv_bin
        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found is None:
            raise BuildError("uv is not installed; `make install` installs the project's locked uv") from None
        return found


def export(bare_repo: Path, commit: str, dest: Path, without: tuple[str, ...] = (),
           files: Mapping[str, str] | None = None) -> Path:
    """The files of `commit` in `dest` (made once: an existing `dest` is taken as complete), minus `without`,
    with `files` (path -> text) written over it."""
    if (dest / _MARKER).is_file():
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    staging = dest.with_name(f".{dest.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    archive = subprocess.Popen(["git", "--git-dir", str(bare_repo), "archive", "--format=tar", commit],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
        # Extraction filters came in Python 3.11.4; Debian 12's 3.11.2 lacks them (the archive is git's own).
        tar.extractall(staging, **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))
    if archive.wait() != 0:
        raise BuildError(f"git archive {commit} failed: {archive.stderr.read().decode(errors='replace').strip()}")
    for name in without:
        target = staging / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    for name, text in (files or {}).items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_text(text)
    (staging / _MARKER).write_text(commit)
    try:
        staging.rename(dest)
    except OSError:  # another planner exported it meanwhile
        shutil.rmtree(staging)
    return dest


def copy_app(source: Path, dest: Path) -> Path:
    """A fresh app directory for one replica: the container's filesystem starts as the image's."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest, symlinks=True, ignore=shutil.ignore_patterns(_MARKER))
    return dest


def venv_key(builder: str, install: Install, source: Path, tree: str, python: str) -> str:
    """The hash of what the dependencies layer is built from."""
    inputs = {}
    for name in install.inputs:
        if name == WHOLE_SOURCE:
            inputs[name] = tree
        elif (source / name).is_file():
            inputs[name] = hashlib.sha256((source / name).read_bytes()).hexdigest()
    return _hash({"format": 2, "builder": builder, "commands": install.commands, "inputs": inputs,
                  "python": [python, platform.python_version()]})


def build_venv(builder: str, install: Install, source: Path, tree: str, *, cache: Path | None = None) -> Venv:
    """The image's virtualenv for `install` of `source`, from the cache or built now: the dependencies layer
    (by the hash of the lock files), then, for a project installed from its source, a copy of it with the
    project added (by the hash of the whole tree). Raises BuildError with uv's own message when it fails."""
    python = host_python()
    root = (cache or cache_dir()) / "venvs"
    root.mkdir(parents=True, exist_ok=True)
    key = venv_key(builder, install, source, tree, python)
    deps, output = _layer(root, key, source, lambda venv, src: _install(install.commands, src, venv, python))
    log = [*install.log, *output]
    if not install.project_commands:
        log.append(f"Built image {key}" if output else f"Using cached image {key}: nothing it is built from changed")
        _prune(root, keep=key)
        return Venv(deps, tuple(log))
    project_key = _hash({"dependencies": key, "tree": tree, "commands": install.project_commands})

    def add_project(venv: Path, src: Path) -> list[str]:
        _clone(deps, venv)
        return _install(install.project_commands, src, venv, python)

    venv, project_output = _layer(root, project_key, source, add_project)
    if not output and not project_output:
        log.append(f"Using cached image {project_key}: nothing it is built from changed")
    else:
        log += [f"Dependencies {key}: {'installed' if output else 'cached, the lock is unchanged'}",
                *project_output, f"Built image {project_key}"]
    _prune(root, keep=key)
    return Venv(venv, tuple(log))


def _layer(root: Path, key: str, source: Path, make) -> tuple[Path, list[str]]:
    """The venv of cache entry `key`, made by `make(venv, build_dir)` unless it exists; the build's output
    lines, none for a cache hit."""
    entry = root / key
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second stack waits for the first's build, then hits
        if (entry / _MARKER).is_file():
            os.utime(entry / _MARKER)
            return entry / "venv", []
        if entry.exists():
            shutil.rmtree(entry)  # a build that was killed half-way
        entry.mkdir()
        try:
            # The build runs in a copy kept with the venv: an editable install (Nixpacks' uv sync) points there.
            build_dir = shutil.copytree(source, entry / "src", symlinks=True, ignore=shutil.ignore_patterns(_MARKER))
            output = make(entry / "venv", build_dir)
        except BuildError:
            shutil.rmtree(entry, ignore_errors=True)
            raise
        (entry / _MARKER).write_text(key)
    return entry / "venv", output or ["(nothing to install)"]


def _clone(base: Path, venv: Path) -> None:
    """A copy of the venv `base` at `venv`: files hard-linked (cp -al), the bin/ scripts that name `base`
    rewritten. (Compiled files keep `base`'s paths for tracebacks; `base` stays in the cache.)"""
    result = subprocess.run(["cp", "-al", str(base), str(venv)], capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        shutil.copytree(base, venv, symlinks=True)  # another filesystem, or no cp: a plain copy
    old, new = str(base).encode(), str(venv).encode()
    for script in (venv / "bin").iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        data = script.read_bytes()
        if old in data:
            mode = script.stat().st_mode
            script.unlink()  # a hard link: never write through it into the base layer
            script.write_bytes(data.replace(old, new))
            script.chmod(mode)


def _hash(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:24]


def _install(commands: tuple[tuple[str, ...], ...], source: Path, venv: Path, python: str) -> list[str]:
    uv = uv_binary()
    env = {key: value for key, value in os.environ.items() if key not in _BUILD_ENV_DROP}
    # Railpack's own settings for uv (python.go InstallUv); the Python is the host's, never downloaded.
    env.update(UV_PROJECT_ENVIRONMENT=str(venv), UV_PYTHON=python, UV_PYTHON_DOWNLOADS="never",
               UV_COMPILE_BYTECODE="1", UV_NO_PROGRESS="1", NO_COLOR="1")
    commands = list(commands)
    if not venv.exists() and (not commands or commands[0][:2] != ("uv", "sync")):
        # pip's installs go into a venv made first (`python -m venv`); an app with no install gets an empty
        # one, so `python` is the image's bare interpreter and nothing of the host's is importable.
        commands.insert(0, ("uv", "venv", "--quiet", "--python", python, str(venv)))
    lines = []
    for command in commands:
        argv = [uv, *command[1:]]
        if command[:3] == ("uv", "pip", "install"):
            argv += ["--python", str(venv / "bin" / "python")]
        result = subprocess.run(argv, cwd=source, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        output = (result.stderr + result.stdout).strip().splitlines()
        if result.returncode != 0:
            tail = "\n".join(output[-_LOG_TAIL:])
            raise BuildError(f"$ {' '.join(command)}\n{tail}\nBuild failed: `{' '.join(command)}` exited with "
                             f"code {result.returncode}")
        lines += [line for line in output if line.startswith(("Installed", "Resolved", "Audited", "Bytecode"))]
    return lines


def _prune(root: Path, keep: str) -> None:
    """Remove entries unused for STALE_DAYS (their marker's mtime is touched at each use)."""
    horizon = time.time() - STALE_DAYS * 86400
    for entry in root.iterdir():
        marker = entry / _MARKER
        if entry.name == keep or not entry.is_dir() or not marker.is_file():
            continue
        if marker.stat().st_mtime < horizon:
            shutil.rmtree(entry, ignore_errors=True)
            (root / f"{entry.name}.lock").unlink(missing_ok=True)
