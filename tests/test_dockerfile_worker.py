"""Dockerfile.worker: read as Docker reads it everywhere; built and run where a Docker engine exists."""

from __future__ import annotations

import io
import json
import os
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
    assert last_line.startswith("exec vault-ingest worker")


# --- the image itself, through pytest-docker (tests/docker-compose.worker.yml) ----------------------------


@pytest.fixture(scope="module")
def docker_compose_file():
    return str(ROOT / "tests" / "docker-compose.worker.yml")


@pytest.fixture(scope="module")
def docker_compose_project_name():
    return f"vault-ingest-worker-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def worker_container(request, docker_compose_project_name):
    """The worker image built and started against the session's web service; its pool and compose command."""
    problem = docker_engine_problem()
    if problem:
        pytest.skip(problem)
    server = railway_web_service(request).server
    pool = f"docker-{uuid.uuid4().hex[:8]}"
    variables = {"PREFECT_API_URL": server.api_url, "PREFECT_API_AUTH_STRING": server.auth_string,
                 "PREFECT_WORK_POOL": pool}
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)  # compose reads them when pytest-docker runs `up --build --wait`
    try:
        request.getfixturevalue("docker_services")
        compose = ["docker", "compose", "-f", str(ROOT / "tests" / "docker-compose.worker.yml"),
                   "-p", docker_compose_project_name]
        yield server, pool, compose
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


def test_image_has_git_and_no_root(worker_container):
    _, _, compose = worker_container
    out = subprocess.run([*compose, "exec", "-T", "worker", "sh", "-c", "git --version && id -u"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "git" and out[-1] != "0"


def test_container_worker_makes_the_pool_ready_and_stops_on_sigterm(worker_container):
    server, pool, compose = worker_container
    with server.http() as http:
        wait_until(lambda: http.get(f"/api/work_pools/{pool}").json().get("status") == "READY",
                   timeout=90, what=f"work pool {pool} READY from the container")
    container = subprocess.run([*compose, "ps", "-aq", "worker"], capture_output=True, text=True,
                               check=True).stdout.strip()
    stopped = subprocess.run([*compose, "stop", "-t", "30", "worker"], capture_output=True, timeout=60)
    assert stopped.returncode == 0
    code = subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}}", container],
                          capture_output=True, text=True).stdout.strip()
    assert code != "137"  # 137 = SIGKILL: the worker ignored SIGTERM
