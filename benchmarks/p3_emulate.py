"""P3: `make emulate` with a warm venv until the first Completed sync-vaults run, against a bare Prefect.

Emulator: `python -m emulator up` in a fresh state dir (a clone's first `make emulate`: new Postgres
volume, Prefect's migrations) and then again on that state (the second `make emulate`), each timed from
spawn to its log line of the first Completed run.

Baseline, in the same run: `prefect server start` (SQLite in a fresh PREFECT_HOME) until /api/health
answers, then `vault-ingest deploy` of the same flows from the same git snapshot beside `prefect worker
start`, then one sync-vaults run to Completed. Its app PostgreSQL and Hyperliquid replay start before the
clock, so it holds only Prefect's own work; the emulator's figure also holds its Postgres, replay, edge,
builds and healthcheck. Both keep Prefect's default worker settings (a 10 s poll). Target: <= 1.3x.

Idle, once each first run is done: the share of one core that every process of the stack uses over 30 s
(the emulator's: its supervisor and edge, Postgres, the Prefect server on it, worker, replay; the baseline's:
the server on SQLite, the worker, the app's PostgreSQL). Target: <= 1.3x.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from emulator.runtime.postgres import PostgresServer, free_port
from emulator.runtime.replay import ReplayServer
from emulator.runtime.snapshot import snapshot

ROOT = Path(__file__).resolve().parent.parent
POOL = "bench-pool"
_TIMEOUT = 300.0
_IDLE_SETTLE_S, _IDLE_S = 5.0, 30.0


def run(repeats: int = 1) -> dict:
    with tempfile.TemporaryDirectory(prefix="vault-bench-p3-") as tmp:
        tmp = Path(tmp)
        cold, warm, bare, idle = [], [], [], {"emulate": [], "baseline": []}
        for n in range(repeats):
            state = tmp / f"state-{n}"
            cold.append(_emulate(state, idle["emulate"]))
            warm.append(_emulate(state))
            bare.append(_baseline(tmp / f"baseline-{n}", idle["baseline"]))
    best = {"cold": min(cold), "warm": min(warm), "baseline": min(bare)}
    quiet = {name: min(found) for name, found in idle.items()}
    return {
        "emulate_first_s": round(best["cold"], 1),
        "emulate_again_s": round(best["warm"], 1),
        "baseline_s": round(best["baseline"], 1),
        "ratio_first": round(best["cold"] / best["baseline"], 2),
        "ratio_again": round(best["warm"] / best["baseline"], 2),
        "idle_emulate_core_pct": round(quiet["emulate"], 1),
        "idle_baseline_core_pct": round(quiet["baseline"], 1),
        "ratio_idle": round(quiet["emulate"] / quiet["baseline"], 2),
        "repeats": repeats,
    }


def _emulate(state: Path | None, idle: list[float] | None = None, argv: list[str] | None = None, cwd: Path = ROOT,
             env: dict[str, str] | None = None, marks: dict[str, float | None] | None = None) -> float:
    """Seconds to the first Completed run; with `idle`, then the stack's idle share of a core added to it.
    `argv` (default: `python -m emulator --state-dir STATE up`) runs in `cwd` as its own process group;
    each key of `marks` gets the seconds to the first output line that holds it."""
    start = time.perf_counter()
    argv = argv or [sys.executable, "-m", "emulator", "--state-dir", str(state), "up"]
    proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**(env or os.environ), "NO_COLOR": "1"},
                            start_new_session=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            for text, at in (marks or {}).items():
                if at is None and text in line:
                    marks[text] = time.perf_counter() - start
            if "step vaults: done" in line:  # the stack file's last step: the first run's rows are there
                took = time.perf_counter() - start
                if idle is not None:
                    threading.Thread(target=proc.stdout.read, daemon=True).start()  # a full pipe would block it
                    idle.append(_idle_core_pct([proc.pid]))
                return took
            if "problem:" in line or time.perf_counter() - start > _TIMEOUT:
                break
        raise RuntimeError(f"P3: `{' '.join(argv)}` did not complete its first run:\n" + "".join(seen[-40:]))
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as a developer ends `make emulate`
        proc.communicate(timeout=120)


def _baseline(workdir: Path, idle: list[float] | None, repo: Path = ROOT, bin_dir: Path | None = None,
              install=None) -> float:
    """Seconds from `install()` (if any: it is timed too) to the by-hand stack's first Completed run, with the
    Prefect and vault-ingest of `bin_dir` (default: this interpreter's)."""
    workdir.mkdir(parents=True)
    source = snapshot(repo, workdir / "source.git")
    app = PostgresServer(workdir / "app-pg").start()
    replay = ReplayServer(ROOT / "cassettes").start()
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PREFECT_", "RAILWAY_")) and key not in ("PORT", "DATABASE_URL")}
    env.update(PREFECT_HOME=str(workdir / "prefect-home"), PREFECT_API_URL=api, DO_NOT_TRACK="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DATABASE_URL=app.create_database("railway"),
               HYPERLIQUID_API_URL=replay.url, HYPERLIQUID_STATS_URL=f"{replay.url}/Mainnet/vaults")
    bin_dir = bin_dir or Path(sys.executable).parent
    prefect = str(bin_dir / "prefect")
    processes = []

    def spawn(*argv: str) -> subprocess.Popen:
        with open(workdir / f"{argv[1]}.log", "wb") as log:
            proc = subprocess.Popen([prefect, *argv], env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(proc)
        return proc

    try:
        start = time.perf_counter()
        if install is not None:
            install()
        spawn("server", "start", "--host", "127.0.0.1", "--port", str(port))
        _until(lambda: _healthy(api), "the bare Prefect server's health")
        spawn("worker", "start", "--pool", POOL, "--type", "process")
        subprocess.run([str(bin_dir / "python"), "-m", "vault_ingest.cli", "deploy", "--work-pool", POOL, "--source",
                        source.url, "--ref", source.branch], env=env, cwd=workdir, check=True, capture_output=True)
        with httpx.Client(base_url=api, timeout=30) as http:
            deployment = http.get("/deployments/name/sync-vaults/hourly").json()["id"]
            flow_run = http.post(f"/deployments/{deployment}/create_flow_run", json={}).json()["id"]
            _until(lambda: http.get(f"/flow_runs/{flow_run}").json()["state"]["type"] == "COMPLETED",
                   "the baseline's sync-vaults run")
        took = time.perf_counter() - start
        if idle is not None:
            postmaster = int((app.data_dir / "postmaster.pid").read_text().split()[0])
            idle.append(_idle_core_pct([proc.pid for proc in processes] + [postmaster]))
        return took
    finally:
        for proc in reversed(processes):
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        replay.shutdown()
        replay.server_close()
        app.stop()


def _idle_core_pct(roots: list[int]) -> float:
    """The share of one core that `roots` and their descendants use over _IDLE_S, after _IDLE_SETTLE_S."""
    time.sleep(_IDLE_SETTLE_S)
    before = _cpu_seconds(roots)
    time.sleep(_IDLE_S)
    after = _cpu_seconds(roots)
    return 100 * sum(after[pid] - used for pid, used in before.items() if pid in after) / _IDLE_S


def _cpu_seconds(roots: list[int]) -> dict[int, float]:
    found = {}
    for root in roots:
        try:
            leader = psutil.Process(root)
            tree = [leader, *leader.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in tree:
            try:
                times = proc.cpu_times()
                found[proc.pid] = times.user + times.system
            except psutil.NoSuchProcess:
                pass
    return found


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _until(check, what: str) -> None:
    deadline = time.monotonic() + _TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"P3: timed out waiting for {what}")
        time.sleep(0.2)
