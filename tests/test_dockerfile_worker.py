"""Dockerfile.worker: read as Docker reads it everywhere; built and run where a Docker engine exists."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser
from tests.support.prefect_server import railway_web_service, wait_until

ROOT = Path(__file__).resolve().parents[1]
# From bytes: given a path, dockerfile-parse only reads files named exactly "Dockerfile".
DOCKERFILE = DockerfileParser(fileobj=io.BytesIO((ROOT / "Dockerfile.worker").read_bytes()))
INSTRUCTIONS = DOCKERFILE.structure


def instructions(kind: str) -> list[str]:
    return [i["value"] for i in INSTRUCTIONS if i["instruction"] == kind]


def docker_engine_problem() -> str | None:
    """Why no image can be built here, or None when a Docker engine answers."""
    if shutil.which("docker") is None:
        return "no Docker engine: the docker CLI is not installed"
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["docker info failed"])[-1]
        return f"no Docker engine (`docker info`: {reason})"
    return None


def test_base_is_slim_python():
    assert DOCKERFILE.baseimage.startswith("python:") and DOCKERFILE.baseimage.endswith("-slim")


def test_git_and_certificates_are_installed():
    installs = [run for run in instructions("RUN") if "apt-get install" in run]
    assert installs and {"git", "ca-certificates"} <= set(installs[0].split())


def test_the_project_is_installed_from_the_lock_by_the_locked_uv():
    assert "uv sync --locked --no-dev --no-editable" in instructions("RUN")
    assert any(copy.split()[:2] == ["pyproject.toml", "uv.lock"] for copy in instructions("COPY"))
    locked_uv = re.search(r'^name = "uv"\nversion = "([^"]+)"', (ROOT / "uv.lock").read_text(), re.M)[1]
    assert f"--from=ghcr.io/astral-sh/uv:{locked_uv} /uv /usr/local/bin/uv" in instructions("COPY")


def test_runs_as_a_non_root_user():
    users = instructions("USER")
    assert users and users[-1] not in ("root", "0")
    last_user = max(i["startline"] for i in INSTRUCTIONS if i["instruction"] == "USER")
    assert all(i["startline"] < last_user for i in INSTRUCTIONS if i["instruction"] == "RUN")


def test_start_worker_is_execed():
    cmd = json.loads(instructions("CMD")[-1])  # exec form: a JSON list, so no shell sits between
    assert cmd == ["bash", "/app/start_worker.sh"]
    assert any("start_worker.sh" in copy for copy in instructions("COPY"))
    last_line = (ROOT / "start_worker.sh").read_text().strip().splitlines()[-1]
    assert last_line.startswith("exec prefect worker start")


# --- the image itself ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image():
    problem = docker_engine_problem()
    if problem:
        pytest.skip(problem)
    tag = f"vault-ingest-worker-test:{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "build", "-f", "Dockerfile.worker", "-t", tag, "."], cwd=ROOT, check=True, timeout=900)
    yield tag
    subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True)


def test_image_has_git_and_no_root(image):
    out = subprocess.run(["docker", "run", "--rm", image, "sh", "-c", "git --version && id -u"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "git" and out[-1] != "0"


def test_container_worker_makes_the_pool_ready_and_stops_on_sigterm(image, request):
    server = railway_web_service(request).server
    pool = f"docker-{uuid.uuid4().hex[:8]}"
    name = f"vault-ingest-worker-{pool}"
    # Host networking: the server listens on the host's loopback only.
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "--network", "host", "-e", f"PREFECT_API_URL={server.api_url}",
         "-e", f"PREFECT_API_AUTH_STRING={server.auth_string}", "-e", f"PREFECT_WORK_POOL={pool}", image],
        check=True, capture_output=True,
    )
    try:
        with server.http() as http:
            wait_until(lambda: http.get(f"/api/work_pools/{pool}").json().get("status") == "READY",
                       timeout=90, what=f"work pool {pool} READY from the container")
        stopped = subprocess.run(["docker", "stop", "-t", "30", name], capture_output=True, timeout=60)
        assert stopped.returncode == 0
        state = subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}}", name],
                               capture_output=True, text=True).stdout.strip()
        assert state != "137"  # 137 = SIGKILL: the worker ignored SIGTERM
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
