"""The emulator on someone else's repository: a throwaway Prefect-on-Railway project written here, not this one.

The repository is what a user starts with (docs/railway.md's upstream): requirements.txt pinning Prefect, a
Procfile with `web` and `worker`, start_worker.sh, a nixpacks.toml that adds git, one flow; its stack file
lives outside it, and so does the state. Nothing of this project is inside it; the deploy is a step of its
stack file. As first configured it reproduces the documented failures: the worker service without a start
command runs `web`, so the pool stays Not Ready; Railpack ignores nixpacks.toml, so a run crashes in
git_clone; the UI without PREFECT_UI_API_URL looks for the API on the browser's machine. The same repository
with the fixes (a start command and PREFECT_UI_API_URL in the stack file, git in a railpack.json) runs its
flow to Completed. Two `up`s in one state dir; the crash reuses the first stack's scheduled run.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.scenarios.browser import chromium, page, shows, visible_lines
from tests.support.emulator import deploy_step, kill_service_groups
from tests.support.prefect_server import clean_environ, stop_process_group, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
POOL = "throwaway-pool"
PREFECT = re.search(r'name = "prefect"\nversion = "([^"]+)"', (ROOT / "uv.lock").read_text())[1]
REPOSITORY = {
    "requirements.txt": f"prefect=={PREFECT}\n",
    # The upstream's `--host 0.0.0.0`, made a variable so that this test's servers listen on loopback only.
    "Procfile": "web: prefect server start --host ${HOST:-0.0.0.0} --port $PORT\nworker: sh start_worker.sh\n",
    "start_worker.sh": f"exec prefect worker start --pool {POOL}\n",
    "nixpacks.toml": '[phases.setup]\naptPkgs = ["...", "git"]\n',
    "flows.py": 'from prefect import flow\n\n\n@flow(log_prints=True)\ndef hello():\n'
                '    print("hello from a throwaway repository")\n    return 42\n',
}
DEPLOY = deploy_step(POOL, "flows.py:hello", "once")
STACK = f'''[project]
name = "throwaway"

[services.web]
public_domain = true
healthcheck_path = "/api/health"

[services.web.variables]
HOST = "127.0.0.1"
PREFECT_SERVER_ANALYTICS_ENABLED = "false"
PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED = "false"

[services.worker.variables]
HOST = "127.0.0.1"
# The public domain: ${{web.PORT}} would render empty (Railway's injected PORT is not a variable).
PREFECT_API_URL = "https://${{{{web.RAILWAY_PUBLIC_DOMAIN}}}}/api"
PREFECT_WORKER_QUERY_SECONDS = "2"
PREFECT_WORKER_PREFETCH_SECONDS = "2"

[prefect]
server = "web"
work_pool = "{POOL}"

[urls]
"Prefect UI" = "https://${{{{web.RAILWAY_PUBLIC_DOMAIN}}}}"

[[steps]]
name = "deploy"
variables = {{ PREFECT_API_URL = "https://${{{{web.RAILWAY_PUBLIC_DOMAIN}}}}/api" }}
run = """{DEPLOY}"""
timeout = 240

[[steps]]
name = "run"
flow_run = "hello/once"
timeout = 300

[variants.fixed]
description = "the worker's Custom Start Command and the UI's API URL; git comes from railpack.json"
services.worker.start_command = "sh start_worker.sh"
services.web.variables.PREFECT_UI_API_URL = "https://${{{{web.RAILWAY_PUBLIC_DOMAIN}}}}/api"
'''


@pytest.fixture(scope="module")
def world():
    # Not under pytest's basetemp, whose 0700 reset would lock out users the services may run as.
    with tempfile.TemporaryDirectory(prefix="emulator-any-repo-") as root:
        root = Path(root)
        repo, stack = root / "repo", root / "elsewhere" / "throwaway.stack.toml"
        repo.mkdir()
        for name, text in REPOSITORY.items():
            (repo / name).write_text(text)
        stack.parent.mkdir()
        stack.write_text(STACK)
        try:
            yield root, repo, stack
        finally:
            emulator(root, repo, stack, "down", timeout=180)
            kill_service_groups(stack.parent / ".emulator-throwaway")


def emulator(root: Path, repo: Path, stack: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`python -m emulator --repo REPO --stack FILE ...`, from a directory that is neither this checkout nor
    the repository; the laptop's Prefect profile in a folder of its own."""
    return subprocess.run([sys.executable, "-m", "emulator", "--repo", str(repo), "--stack", str(stack), *args],
                          cwd=root, capture_output=True, text=True, timeout=timeout,
                          env=clean_environ(NO_COLOR="1", PREFECT_HOME=str(root / "laptop-prefect")))


def status(world) -> dict:
    return json.loads(emulator(*world, "status", "--json").stdout)


def steps(world) -> dict[str, dict]:
    return {step["name"]: step for step in status(world)["steps"]}


def state_dir(world) -> Path:
    return world[2].parent / ".emulator-throwaway"


def log(world, name: str) -> str:
    path = state_dir(world) / "logs" / name
    return path.read_text(errors="replace") if path.exists() else ""


def up(world, *args: str) -> subprocess.CompletedProcess:
    return emulator(*world, "up", "--detach", "--draining-seconds", "5", *args, timeout=600)


@pytest.fixture(scope="module")
def as_first_configured(world):
    result = up(world, "--step-timeout", "run=1")
    return result, result.stdout + result.stderr + log(world, "console.log")[-6000:]


def test_the_worker_without_a_start_command_runs_web_and_the_pool_stays_not_ready(world, as_first_configured):
    result, output = as_first_configured
    assert result.returncode == 1, output
    assert "step run: flow run" in output and "is still, after 1s, Scheduled" in output  # deployed, not taken
    build = log(world, "worker.build.log")
    assert "↳ Found web command in Procfile" in build
    assert "$ prefect server start --host ${HOST:-0.0.0.0} --port $PORT" in build
    now = status(world)
    assert {name: group["state"] for name, group in now["services"].items()} == {"web": "Active", "worker": "Active"}
    assert now["pool"] == {"name": POOL, "status": "NOT_READY", "workers_online": 0}
    assert steps(world)["deploy"]["state"] == "done" and steps(world)["run"]["state"] == "failed"
    # The state is beside the stack file; the repository holds exactly what it held.
    assert now["state_dir"] == str(state_dir(world))
    assert sorted(path.name for path in world[1].iterdir()) == sorted(REPOSITORY)


def test_the_ui_without_ui_api_url_looks_for_the_api_on_the_browsers_machine(world, as_first_configured):
    ui = status(world)["urls"]["Prefect UI"]
    cert = str(state_dir(world) / "tls" / "edge.crt")
    assert httpx.get(f"{ui}/ui-settings", verify=cert).json()["api_url"] == "http://127.0.0.1:4200/api"
    with socket.socket() as probe:  # on a user's machine nothing answers there either
        assert probe.connect_ex(("127.0.0.1", 4200)) != 0, "something listens on 127.0.0.1:4200 on this machine"
    with chromium() as browser, page(browser, f"{ui}/v2/dashboard") as dashboard:
        shows(dashboard, "Unable to connect to Prefect server")


def test_railpack_ignores_nixpacks_toml_so_a_run_crashes_in_git_clone(world, as_first_configured, tmp_path):
    root, repo, stack = world
    assert "nixpacks" not in log(world, "worker.build.log").lower()
    gitless = emulator(*world, "run", "worker", "--", "sh", "-c", "command -v git")
    assert gitless.returncode != 0 and not gitless.stdout.strip(), gitless.stdout  # no git in its runtime
    run = steps(world)["run"]["flow_run"]
    # The worker the service should have run, in its runtime (`railway run worker -- sh start_worker.sh`).
    with (tmp_path / "worker.log").open("wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "emulator", "--repo", str(repo), "--stack", str(stack),
                                   "run", "worker", "--", "sh", "start_worker.sh"], cwd=root, stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                  env=clean_environ(NO_COLOR="1"))
    try:
        api = httpx.Client(base_url=status(world)["api_url"], verify=str(state_dir(world) / "tls" / "edge.crt"))
        ended = wait_until(lambda: (found := api.get(f"/flow_runs/{run['id']}").json())["state"]["type"] in
                           ("COMPLETED", "FAILED", "CRASHED") and found, timeout=180, what="the run to end")
        assert ended["state"]["type"] == "CRASHED", ended["state"]
        history = api.get("/flow_run_states/", params={"flow_run_id": run["id"]}).json()
        assert "RUNNING" not in [state["type"] for state in history]  # it died in the pull step
    finally:
        stop_process_group(worker, grace=10)
    assert "No such file or directory: 'git'" in (tmp_path / "worker.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def fixed(world, as_first_configured):
    assert emulator(*world, "down", timeout=180).returncode == 0
    (world[1] / "railpack.json").write_text('{"deploy": {"aptPackages": ["git"]}}\n')
    result = up(world, "--variant", "fixed")
    return result, result.stdout + result.stderr + log(world, "console.log")[-6000:]


def test_with_the_fixes_in_the_stack_file_and_railpack_json_the_flow_runs_to_completed(world, fixed):
    result, output = fixed
    assert result.returncode == 0, output
    assert "Prefect UI: https://127.0.0.1:" in result.stdout
    assert steps(world)["run"]["flow_run"]["state"] == "Completed"
    assert "↳ Using config file `railpack.json`" in log(world, "worker.build.log")
    assert "$ sh start_worker.sh" in log(world, "worker.build.log")
    now = wait_until(lambda: (found := status(world))["pool"]["status"] == "READY" and found, timeout=60,
                     what="the pool READY")
    assert now["pool"]["workers_online"] == 1
    ui = now["urls"]["Prefect UI"]
    assert httpx.get(f"{ui}/ui-settings", verify=str(state_dir(world) / "tls" / "edge.crt")).json()["api_url"] == \
        f"{ui}/api"
    with chromium() as browser, page(browser, f"{ui}/v2/dashboard") as dashboard:
        shows(dashboard, "Active Work Pools")
        shows(dashboard, POOL)
        assert "Unable to connect to Prefect server" not in visible_lines(dashboard)
