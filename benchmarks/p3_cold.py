"""P3 cold: a fresh clone to its first Completed sync-vaults run, installs included, against the same by hand.

Emulator: `make emulate` in a fresh `git clone` (the venv made, with the uv on PATH when it is the locked
version, else pip installs that uv; `uv sync --locked --extra test`, then `python -m emulator up`: the
image's venv, Postgres, the migrations, the deploy step), timed from spawn to its log line of the first
Completed run.

By hand, in the same run: another fresh clone, `uv sync --locked` (the project's own dependencies), then
`prefect server start` (SQLite), `prefect worker start`, `vault-ingest deploy` and one sync-vaults run to
Completed, as in P3 (`p3_emulate._baseline`: its app PostgreSQL and Hyperliquid replay start before the
clock, as Railway's and Hyperliquid's would be there already).

Each side twice: first with an empty cache (UV_CACHE_DIR, PIP_CACHE_DIR and the emulator's image cache
EMULATOR_CACHE_DIR in a temp dir: every wheel comes from PyPI), then with the cache the first left, in a
new clone. Target: warm <= 1.3x by hand.

Beside the wall time, the CPU seconds of every process each side started and waited for (teardown
included), steadier than wall time on a shared machine. The by-hand side's app PostgreSQL runs detached,
so its CPU is not counted; the emulator's Postgres is.
"""

from __future__ import annotations

import os
import resource
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from benchmarks.p3_emulate import _baseline, _emulate
from emulator.runtime.image import uv_binary

ROOT = Path(__file__).resolve().parent.parent
# What the clones must not inherit from the environment that runs the benchmark.
_DROP = ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "UV_CACHE_DIR", "PIP_CACHE_DIR", "EMULATOR_CACHE_DIR",
         "PYTHONPATH")
_UP = "python -m emulator up"  # make's echo of the command it runs once the install is done


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="vault-bench-p3cold-") as tmp:
        tmp = Path(tmp)
        figures = {}
        for cache in ("empty", "warm"):  # the second pass finds what the first left in each side's cache
            with _cpu(figures, f"by_hand_{cache}_cpu_s"):
                figures[f"by_hand_{cache}_s"], figures[f"by_hand_{cache}_install_s"] = _by_hand(tmp, cache)
            with _cpu(figures, f"emulate_{cache}_cpu_s"):
                figures[f"emulate_{cache}_s"], figures[f"emulate_{cache}_install_s"] = _make_emulate(tmp, cache)
    result = {name: round(seconds, 1) for name, seconds in figures.items()}
    for cache in ("empty", "warm"):
        result[f"ratio_{cache}"] = round(figures[f"emulate_{cache}_s"] / figures[f"by_hand_{cache}_s"], 2)
        result[f"ratio_{cache}_cpu"] = round(figures[f"emulate_{cache}_cpu_s"] / figures[f"by_hand_{cache}_cpu_s"], 2)
    return result


@contextmanager
def _cpu(figures: dict, name: str):
    """Into figures[name]: the CPU seconds of the children reaped inside the block (and theirs)."""
    def used() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime
    before = used()
    yield
    figures[name] = used() - before


def _env(caches: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _DROP}
    env.update(UV_CACHE_DIR=str(caches / "uv"), PIP_CACHE_DIR=str(caches / "pip"),
               EMULATOR_CACHE_DIR=str(caches / "emulator"))
    return env


def _clone(dest: Path) -> Path:
    """A fresh clone of this repository's committed HEAD, as a developer gets it."""
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(dest)], check=True)
    return dest


def _make_emulate(tmp: Path, cache: str) -> tuple[float, float]:
    """Seconds to the first Completed run, and of them the install's (until make runs the emulator)."""
    clone = _clone(tmp / f"emulate-{cache}")
    marks = {_UP: None}
    took = _emulate(None, argv=["make", "emulate"], cwd=clone, env=_env(tmp / "caches-emulate"), marks=marks)
    return took, marks[_UP]


def _by_hand(tmp: Path, cache: str) -> tuple[float, float]:
    clone = _clone(tmp / f"by-hand-{cache}")
    env = _env(tmp / "caches-by-hand")
    installed = []

    def install() -> None:
        start = time.perf_counter()
        subprocess.run([uv_binary(), "sync", "--locked", "--quiet"], cwd=clone, env=env, check=True,
                       stdin=subprocess.DEVNULL)
        installed.append(time.perf_counter() - start)

    took = _baseline(tmp / f"by-hand-{cache}-work", None, repo=clone, bin_dir=clone / ".venv" / "bin",
                     install=install)
    return took, installed[0]
