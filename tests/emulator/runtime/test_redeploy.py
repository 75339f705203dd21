"""`python -m emulator deploy` against a running `up`, end to end with a stack of the test's own (no Prefect):
a web service behind the edge that says which deployment it is, and a worker that takes a few seconds to
drain on SIGTERM. Railway's rules (railwayapp/docs c2a634f): the new deployment goes Active beside the old
one, the domain switches to it, the old one gets SIGTERM and SIGKILL after RAILWAY_DEPLOYMENT_DRAINING_SECONDS
(default 0, deployments/deployment-teardown.md, variables/reference.md); a failed build or deploy leaves the
old one Active (deployments/reference.md); Watch Paths decide what a push redeploys
(builds/build-configuration.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from emulator.project import Project
from tests.support.emulator import kill_service_groups
from tests.support.prefect_server import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[3]
SERVER = '''import http.server, os, pathlib
VERSION = pathlib.Path("VERSION").read_text().strip()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path != "/health" or VERSION != "unhealthy"
        body = f"{VERSION} {os.environ['RAILWAY_DEPLOYMENT_ID']} {os.getpid()}".encode()
        self.send_response(200 if ok else 500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
'''
# Takes DRAIN_WORK seconds to finish its work once told to stop, as a Prefect worker waits for its runs.
WORKER = '''import os, signal, sys, time
def stop(*_):
    print(f"draining {os.getpid()}", flush=True)
    time.sleep(float(os.environ.get("DRAIN_WORK", "3")))
    print(f"drained {os.getpid()}", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print(f"working {os.getpid()}", flush=True)
while True:
    time.sleep(1)
'''
STACK = '''[project]
name = "redeploy"

[services.web]
source = "repo"
start_command = "exec python server.py"
healthcheck_path = "/health"
healthcheck_timeout = 5
public_domain = true
watch_paths = ["/server.py", "/VERSION"]

[services.worker]
source = "repo"
start_command = "exec python worker.py"
{worker}
'''


@dataclass
class World:
    repo: Path
    state: Path

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "emulator", "--state-dir", str(self.state), *args],
                              cwd=self.repo, capture_output=True, text=True, timeout=timeout)

    def status(self) -> dict:
        """What `status --json` prints, computed here: the tests poll it, and a CLI start costs 0.6 s of CPU."""
        return Project(self.repo / "railway.stack.toml", self.state).status()

    def pid(self, service: str) -> int:
        return self.status()["services"][service]["replicas"][service]["pid"]

    def page(self) -> list[str]:
        url = self.status()["services"]["web"]["url"]
        return httpx.get(url, verify=str(self.state / "tls" / "edge.crt"), timeout=10).text.split()

    def stack(self, worker: str = "") -> None:
        (self.repo / "railway.stack.toml").write_text(STACK.format(worker=worker))

    def working(self) -> int:
        """The pid the current worker deployment's process printed (the status shows its launcher's)."""
        def current() -> int | None:
            pids = [int(line.split()[-1]) for line in self.log("worker").splitlines() if "working " in line]
            return pids[-1] if pids and _alive(pids[-1]) else None

        return wait_until(current, timeout=30, what="a worker at work")

    def log(self, service: str) -> str:
        return (self.state / "logs" / f"{service}.deploy.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def world():
    # Not under pytest's basetemp, whose 0700 reset would lock out users the services may run as.
    with tempfile.TemporaryDirectory(prefix="emulator-redeploy-") as root:
        repo = Path(root) / "repo"
        repo.mkdir()
        made = World(repo, Path(root) / "state")
        made.stack()
        for name, text in {"server.py": SERVER, "worker.py": WORKER, "VERSION": "one\n", "README.md": "hi\n"}.items():
            (repo / name).write_text(text)
        try:
            up = made.run("up", "--no-deploy", "-d", timeout=240)
            assert up.returncode == 0, up.stdout + up.stderr
            yield made
        finally:
            made.run("down", timeout=120)
            kill_service_groups(made.state)


def test_deploy_without_a_running_stack_says_to_run_up(tmp_path):
    (tmp_path / "railway.stack.toml").write_text(STACK.format(worker=""))
    result = subprocess.run([sys.executable, "-m", "emulator", "deploy"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert "no emulator is running" in result.stderr and "python -m emulator up" in result.stderr


def test_the_domain_switches_to_the_new_deployment_and_the_old_one_is_removed(world):
    before = world.page()
    old_pid = world.pid("web")
    (world.repo / "VERSION").write_text("two\n")
    result = world.run("deploy", "web")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "web: the new deployment is Active" in result.stdout
    version, deployment, pid = world.page()
    assert version == "two" and deployment != before[1] and pid != before[2]
    assert world.pid("web") != old_pid
    wait_until(lambda: not _alive(old_pid), timeout=30, what="the old web deployment to be removed")
    assert set(world.status()["services"]) == {"web", "worker"}


def test_a_push_redeploys_only_services_whose_watch_paths_match(world):
    web, worker = world.pid("web"), world.pid("worker")
    (world.repo / "README.md").write_text("changed\n")
    result = world.run("deploy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "web: skipped, none of the 1 changed file(s) match its watch paths (/server.py, /VERSION)" in result.stdout
    # The worker was last deployed before VERSION changed too: every change since counts.
    assert "worker: 2 changed file(s) (no watch paths): README.md, VERSION" in result.stdout
    assert world.pid("web") == web and world.pid("worker") != worker
    again = world.run("deploy")
    assert again.returncode == 0 and "nothing to deploy" in again.stdout


def test_with_railways_default_draining_the_old_deployment_is_killed_mid_drain(world):
    old = world.working()
    result = world.run("deploy", "worker")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SIGKILL after 0s (RAILWAY_DEPLOYMENT_DRAINING_SECONDS, Railway's default)" in result.stdout
    wait_until(lambda: not _alive(old), timeout=30, what="the old worker gone")
    assert f"draining {old}" in world.log("worker") and f"drained {old}" not in world.log("worker")


def test_with_draining_set_the_old_deployment_finishes_its_work(world):
    world.stack('[services.worker.variables]\nRAILWAY_DEPLOYMENT_DRAINING_SECONDS = "30"\n')
    # The deploy that applies the setting drains the deployment that lacked it by Railway's default.
    assert world.run("deploy", "worker").returncode == 0
    old = world.working()
    result = world.run("deploy", "worker")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SIGKILL after 30s (RAILWAY_DEPLOYMENT_DRAINING_SECONDS)" in result.stdout
    wait_until(lambda: f"drained {old}" in world.log("worker"), timeout=30, what="the old worker to drain")
    # It logs before it exits; the supervisor then removes it, long before the SIGKILL 30 s after the SIGTERM.
    wait_until(lambda: world.status()["services"]["worker"]["state"] == "Active", timeout=10,
               what="the drained deployment removed")


def test_a_failed_build_leaves_the_old_deployment_active(world):
    old = world.pid("worker")
    world.stack('[services.worker.variables]\nPORT = "not a port"\n')
    try:
        result = world.run("deploy", "worker")
    finally:
        world.stack()
    assert result.returncode == 1
    assert "worker: the build failed" in result.stdout and "must be a port number" in result.stdout
    assert "failed: worker (the previous deployment stays Active)" in result.stdout
    assert world.pid("worker") == old and world.status()["services"]["worker"]["state"] == "Active"


def test_a_failed_healthcheck_leaves_the_old_deployment_serving(world):
    before = world.page()
    (world.repo / "VERSION").write_text("unhealthy\n")
    try:
        result = world.run("deploy", "web")
    finally:
        (world.repo / "VERSION").write_text("two\n")
    assert result.returncode == 1, result.stdout
    assert "web: the new deployment is Failed, not Active; the previous one keeps serving" in result.stdout
    assert world.page() == before
    assert world.status()["services"]["web"]["state"] == "Active"


def test_a_deploy_goes_on_when_its_client_is_interrupted(world):
    """The running `up` carries the deploy out; the client only watches, so killing it changes nothing."""
    old = world.pid("web")
    (world.repo / "VERSION").write_text("three\n")
    client = subprocess.Popen([sys.executable, "-m", "emulator", "--state-dir", str(world.state), "deploy", "web"],
                              cwd=world.repo, stdout=subprocess.PIPE, text=True)
    assert "snapshot" in client.stdout.readline()
    client.kill()
    client.wait(timeout=30)
    wait_until(lambda: world.page()[0] == "three", timeout=60, what="the new web deployment serving")
    assert world.pid("web") != old
    again = world.run("deploy", "web")  # and the channel still answers
    assert again.returncode == 0, again.stdout + again.stderr


def test_watch_deploys_each_change_until_interrupted(world):
    watcher = subprocess.Popen([sys.executable, "-m", "emulator", "--state-dir", str(world.state), "deploy",
                                "--watch", "--interval", "0.5"], cwd=world.repo, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(watcher.stdout), daemon=True)
    try:
        assert "watching" in watcher.stdout.readline()
        reader.start()
        (world.repo / "VERSION").write_text("four\n")
        wait_until(lambda: world.page()[0] == "four", timeout=60, what="the watched change deployed")
        # The watcher reports the deploy once the supervisor has finished it, which may be after the switch.
        wait_until(lambda: any("web: 1 changed file(s) match its watch paths: VERSION" in line for line in lines),
                   timeout=60, what="the watcher to report the deploy")
    finally:
        watcher.send_signal(signal.SIGINT)
        watcher.wait(timeout=60)
        reader.join(timeout=10)
    assert watcher.returncode == 0


def _alive(pid: int) -> bool:
    import psutil
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
