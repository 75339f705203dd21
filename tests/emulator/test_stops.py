"""The emulator's stops leave nothing behind, end to end under `python -m emulator up` (issue 10 §5).

A stack of the test's own keeps it cheap: Postgres, the replay, and a trivial repo service behind an edge
that leaves a process in its group and one in a session of its own, as Prefect's runner does.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from emulator.runtime import launcher
from emulator.runtime.process import ACTIVE, CRASHED
from tests.support.emulator import kill_service_groups
from tests.support.prefect_server import wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("Postgres", "app", "hyperliquid")
STACK = """
[project]
name = "stops"

[services.Postgres]
source = "postgres"

[services.app]
source = "repo"
start_command = "setsid sleep 300 & sleep 300 & exec python -m http.server $PORT --bind 127.0.0.1"
healthcheck_path = "/"
public_domain = true

[services.app.variables]
DATABASE_URL = "${{Postgres.DATABASE_URL}}"

[services.hyperliquid]
source = "replay"
"""


@dataclass
class Stack:
    root: Path
    file: Path
    state: Path

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "emulator", "--stack", str(self.file), "--state-dir", str(self.state), *args]

    def up(self) -> list[str]:
        return self.command("up", "--no-deploy", "--draining-seconds", "5")

    def status(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.command("status", *args), capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.fixture
def stack():
    # Not under pytest's basetemp, whose 0700 reset would lock out the user PostgreSQL runs as under root.
    with tempfile.TemporaryDirectory(prefix="emulator-stops-") as root:
        repo = Path(root) / "repo"
        (repo / "cassettes").mkdir(parents=True)
        (repo / "railway.stack.toml").write_text(STACK)
        made = Stack(Path(root), repo / "railway.stack.toml", Path(root) / "state")
        try:
            yield made
        finally:
            subprocess.run(made.command("down"), capture_output=True, timeout=120, cwd=ROOT)
            kill_service_groups(made.state)


def all_active(state: Path) -> dict | None:
    try:
        runtime = json.loads((state / "runtime.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    services = runtime["services"]
    if all(services.get(name, {}).get("state") == ACTIVE and services[name].get("pid") for name in SERVICES):
        return runtime
    return None


def service_processes(runtime: dict) -> list[psutil.Process]:
    """Each service's launcher and everything under it: Postgres's backends, the app's two sleeps."""
    found = []
    for entry in runtime["services"].values():
        leader = psutil.Process(entry["pid"])
        found += [leader, *leader.children(recursive=True)]
    return found


def gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def survivors(processes: list[psutil.Process], timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := [p for p in processes if not gone(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [f"{p.pid} {' '.join(p.cmdline())}" for p in left if not gone(p)]


def test_ctrl_c_of_up_piped_into_tee_stops_every_service(stack):
    """`make emulate 2>&1 | tee emulate.log`, then Ctrl-C: the terminal sends SIGINT to the whole foreground
    group, so tee is gone before the emulator has stopped anything, and every later console line fails."""
    log = stack.root / "emulate.log"
    pipeline = " ".join(stack.up()) + f" 2>&1 | tee {log}"
    shell = subprocess.Popen(["bash", "-c", pipeline], cwd=ROOT, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        runtime = wait_until(lambda: all_active(stack.state), timeout=120, what="every service Active")
        # up's last line before it serves: the console has been written to through tee
        wait_until(lambda: log.exists() and "Ctrl-C or `python -m emulator down`" in log.read_text(), timeout=60,
                   what="up to say it serves until Ctrl-C")
        processes = service_processes(runtime)
        emulator = psutil.Process(runtime["supervisor"]["pid"])
        assert len(processes) > 2 * len(SERVICES)  # launchers, commands, Postgres helpers, the app's sleeps
        os.killpg(shell.pid, signal.SIGINT)
        shell.wait(120)
        assert survivors([emulator, *processes], 30) == []
    finally:
        try:
            os.killpg(shell.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    text = (stack.state / "logs" / "emulator.log").read_text()
    assert "the console stopped taking lines (Broken pipe)" in text  # tee was gone first
    assert text.endswith("all services stopped\n")


def test_kill_9_of_the_emulator_leaves_no_service_running_and_status_says_so(stack):
    emulator = subprocess.Popen(stack.up(), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        runtime = wait_until(lambda: all_active(stack.state), timeout=120, what="every service Active")
        processes = service_processes(runtime)
        edge_port = runtime["services"]["app"]["edge_port"]
        # Under root, Postgres runs as a user of its own: the launcher, still root, must kill it all the same.
        assert os.geteuid() != 0 or any(p.uids().real != 0 for p in processes)
        assert "running (pid" in stack.status().stdout
        emulator.kill()
        emulator.wait(10)
        began = time.monotonic()
        # SIGTERM at once, SIGKILL after the launcher's grace; a few seconds more for a loaded machine.
        assert survivors(processes, launcher.ORPHAN_GRACE + 15) == []
        print(f"every service process gone {time.monotonic() - began:.1f}s after the kill")
    finally:
        if emulator.poll() is None:
            emulator.kill()
            emulator.wait(10)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", edge_port), timeout=2).close()

    status = json.loads(stack.status("--json").stdout)
    assert status["running"] is False and status["stale"] == {"pid": emulator.pid, "left_running": []}
    assert {name: group["state"] for name, group in status["services"].items()} == dict.fromkeys(SERVICES, CRASHED)
    text = stack.status().stdout
    assert f"not running (the emulator, pid {emulator.pid}, ended without stopping: killed?)" in text
    assert ACTIVE not in text
