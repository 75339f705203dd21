"""Scenario 3: flow runs clone their code with git, so a worker image without git crashes every run (prefect.md §3).

Broken: Railpack's runtime image without git (a repository without railpack.json) running a
plain `prefect worker start`; the same runtime with `start_worker.sh`, which refuses to start. Working: the
Nixpacks builder and `Dockerfile.worker` complete a run with rows; so does Railpack with git in
`deploy.aptPackages`, the shipped worker (test_shipped.py), and a git-less Railpack worker whose
start_worker.sh installs git with apt-get at start (WORKER_INSTALL_GIT=1): Railpack's runtime runs the start
command as root with apt, so that works on Railway, for that deployment only (emulator/runtime/apt.py).
"""

from __future__ import annotations

import pytest

from tests.scenarios.conftest import running, up_output
from tests.scenarios.stacks import DEPLOYMENTS, VAULTS, Spec, Stack
from vault_ingest.doctor import Status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

GITLESS = Spec("gitless-worker")
NIXPACKS = Spec("nixpacks-worker")
DOCKERFILE = Spec("dockerfile-worker")
INSTALL = Spec("gitless-worker-apt")
CRASH = "Process exited with status code: 1"


@pytest.fixture(scope="module")
def stacks(scenario_root):
    with running([GITLESS, NIXPACKS, DOCKERFILE, INSTALL], scenario_root) as started:
        yield started


def test_a_railpack_worker_without_git_crashes_every_run_and_writes_nothing(stacks):
    stack = stacks[GITLESS.name]
    assert stack.up_result.returncode == 1, up_output(stack)
    first_run = stack.first_run()
    assert first_run["state"] == "Crashed", up_output(stack)
    with stack.api() as api:
        run = api.get(f"/flow_runs/{first_run['id']}").json()
        assert run["state"]["type"] == "CRASHED" and run["state"]["message"].startswith(CRASH)
        history = api.get("/flow_run_states/", params={"flow_run_id": run["id"]}).json()
        assert "RUNNING" not in [state["type"] for state in history]  # it died in the pull step
    # The cause is only in the worker's own output, not in the flow run's logs (prefect.md §3.2).
    assert "FileNotFoundError: [Errno 2] No such file or directory: 'git'" in stack.log("worker")
    assert stack.count(VAULTS) is None  # the flow never ran, so it never even created its tables

    last_run = stack.doctor().check(f"last-run:{DEPLOYMENTS[0]}")
    assert last_run.status is Status.FAIL and "in its git_clone pull step" in last_run.detail
    assert "No such file or directory: 'git'" in last_run.fix
    git = stack.doctor_inside("worker")["git"]
    assert git["status"] == "fail" and "git is not on PATH" in git["detail"]


def test_start_worker_sh_without_git_stops_at_start_and_says_how_to_add_it(stacks):
    """The shipped start command in the same runtime (the gitless-worker-script variant's worker), as
    `railway run worker -- bash start_worker.sh` runs it: it stops before it starts a worker."""
    stack = stacks[GITLESS.name]
    started = stack.run("worker", "bash", "start_worker.sh", timeout=60)
    output = started.stdout + started.stderr
    assert started.returncode == 1, output
    assert "start_worker.sh: error: git is not installed" in output
    assert "RAILPACK_DEPLOY_APT_PACKAGES=git" in output
    assert "waiting up to" not in output and "Worker '" not in output  # it never got to the server or a worker


@pytest.mark.parametrize("spec, builder_line", [
    (NIXPACKS, "Nixpacks (emulated)"),
    (DOCKERFILE, "Using Dockerfile `Dockerfile.worker`"),
])
def test_a_worker_image_with_git_completes_a_run_with_rows(stacks, spec, builder_line):
    stack = stacks[spec.name]
    assert stack.up_result.returncode == 0, up_output(stack)
    assert builder_line in stack.log("worker", "build")
    assert_completed_with_rows(stack)


def assert_completed_with_rows(stack: Stack, inside: bool = True) -> None:
    first_run = stack.first_run()
    assert first_run["state"] == "Completed"
    assert first_run["vaults"] and stack.count(VAULTS) == first_run["vaults"]
    if inside:  # `run` is a fresh deployment: it has only what the image has
        assert stack.doctor_inside("worker")["git"]["status"] == "pass"


def test_start_worker_sh_installs_git_at_start_in_a_root_image_and_a_run_completes(stacks):
    stack = stacks[INSTALL.name]
    assert stack.up_result.returncode == 0, up_output(stack)
    assert "git is missing; installing it with apt-get (WORKER_INSTALL_GIT=1)" in stack.log("worker")
    assert_completed_with_rows(stack, inside=False)


def test_an_install_lasts_only_for_that_deployment(stacks):
    """`run` is a fresh deployment of the service each time: what one installed, the next lacks."""
    stack = stacks[GITLESS.name]
    installed = stack.run("worker", "bash", "-c", "apt-get update -qq && apt-get install -y -qq git && git --version")
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout.strip().startswith("git version ")
    assert stack.run("worker", "bash", "-c", "command -v git").returncode == 1


def test_apt_get_is_refused_in_the_non_root_dockerfile_image(stacks):
    refused = stacks[DOCKERFILE.name].run("worker", "apt-get", "install", "-y", "git")
    assert refused.returncode == 100
    assert "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), are you root?" in refused.stderr
