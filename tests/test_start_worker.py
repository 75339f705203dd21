"""start_worker.sh as Railway runs it: `bash start_worker.sh` with the service's variables, and nothing else."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest
from tests.support.prefect_server import (
    FAST_WORKER_SETTINGS,
    clean_environ,
    railway_web_service,
    stop_process_group,
    wait_until,
)

from emulator.runtime.edge import Edge, trust_bundle
from emulator.runtime.postgres import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "start_worker.sh"
BASH = shutil.which("bash")
VENV_BIN = Path(sys.executable).parent
FIXES = ("RAILPACK_DEPLOY_APT_PACKAGES=git", "railpack.json", "Dockerfile.worker", "WORKER_INSTALL_GIT=1")


def tool_dir(path: Path, *, git: bool = False, extra: dict[str, str] | None = None) -> Path:
    """A PATH directory with only what the script needs: bash, the venv's python and vault-ingest (and git)."""
    path.mkdir()
    links = {"bash": BASH, "python3": sys.executable, "vault-ingest": str(VENV_BIN / "vault-ingest")}
    if git:
        links["git"] = shutil.which("git")
    for name, target in links.items():
        (path / name).symlink_to(target)
    for name, body in (extra or {}).items():
        (path / name).write_text(body)
        (path / name).chmod(0o755)
    return path


def run_script(path_dir: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BASH, str(SCRIPT)], env=clean_environ(PATH=str(path_dir), **env), cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )


# --- without a server -----------------------------------------------------------------------------------


def test_without_git_it_stops_and_names_each_fix(tmp_path):
    result = run_script(tool_dir(tmp_path / "bin"), PREFECT_API_URL="http://127.0.0.1:9/api")
    assert result.returncode == 1
    assert "start_worker.sh: error: git is not installed" in result.stderr
    for fix in FIXES:
        assert fix in result.stderr


def test_opt_in_install_without_apt_get_says_why(tmp_path):
    result = run_script(tool_dir(tmp_path / "bin"), WORKER_INSTALL_GIT="1")
    assert result.returncode == 1
    assert "WORKER_INSTALL_GIT=1 needs apt-get (run as root), and this image has no apt-get" in result.stderr
    assert "git is not installed" in result.stderr


def test_opt_in_install_uses_apt_get(tmp_path):
    bin_dir = tmp_path / "bin"
    # A stand-in apt-get that "installs" git into the PATH directory, so no network is needed.
    fake_apt = f'#!{BASH}\necho "$*" >> {tmp_path}/apt.log\n' \
        f'[[ "$1" == install ]] && printf "#!{BASH}\\necho git version 2\\n" > {bin_dir}/git && chmod +x {bin_dir}/git\n' \
        'exit 0\n'
    tool_dir(bin_dir, extra={"apt-get": fake_apt, "chmod": f"#!{BASH}\nexec {shutil.which('chmod')} \"$@\"\n"})
    result = run_script(bin_dir, WORKER_INSTALL_GIT="1")
    assert "install -y -qq --no-install-recommends git ca-certificates" in (tmp_path / "apt.log").read_text()
    assert "git is not installed" not in result.stderr
    assert "PREFECT_API_URL is not set" in result.stderr  # it went on to the next check


def test_opt_in_install_as_a_non_root_user_shows_apts_refusal_and_the_fixes(tmp_path):
    """A Dockerfile image with USER: the script leaves the root check to apt-get, whose words reach the log."""
    bin_dir = tmp_path / "bin"
    refusing = f"#!{BASH}\necho 'E: Could not open lock file /var/lib/apt/lists/lock - open (13: Permission denied)' >&2\n" \
        "exit 100\n"
    tool_dir(bin_dir, extra={"apt-get": refusing})
    result = run_script(bin_dir, WORKER_INSTALL_GIT="1")
    assert result.returncode == 1
    assert "(13: Permission denied)" in result.stderr
    assert "installing git with apt-get failed (output above)" in result.stderr
    for fix in FIXES:
        assert fix in result.stderr


def test_missing_api_url_is_refused(tmp_path):
    result = run_script(tool_dir(tmp_path / "bin", git=True))
    assert result.returncode == 1
    assert "PREFECT_API_URL=https://${{web.RAILWAY_PUBLIC_DOMAIN}}/api" in result.stderr


def test_scheme_less_api_url_is_refused(tmp_path):
    result = run_script(tool_dir(tmp_path / "bin", git=True), PREFECT_API_URL="my-app.up.railway.app/api")
    assert result.returncode == 1
    assert "has no http(s):// scheme" in result.stderr


@pytest.mark.parametrize("api", ["http://vault-ingest-web.up.railway.app/api", "http://user@My-App.Example.COM:80/api"])
def test_http_to_a_public_domain_is_refused_with_both_fixes(tmp_path, api):
    result = run_script(tool_dir(tmp_path / "bin", git=True), PREFECT_API_URL=api)
    assert result.returncode == 1
    host = api.split("//")[1].split("/")[0].split("@")[-1].split(":")[0].lower()
    assert f"PREFECT_API_URL uses http:// for the public domain {host}" in result.stderr
    assert "301 to https://" in result.stderr
    assert "PREFECT_API_URL=https://${{web.RAILWAY_PUBLIC_DOMAIN}}/api" in result.stderr
    assert "PREFECT_API_URL=http://${{web.RAILWAY_PRIVATE_DOMAIN}}" in result.stderr
    assert "waiting up to" not in result.stderr  # refused before any request


@pytest.mark.parametrize("host", ["web.railway.internal", "localhost", "127.0.0.1", "[::1]"])
def test_http_to_the_private_domain_or_loopback_is_accepted(tmp_path, host):
    port = 4200 if host == "web.railway.internal" else free_port()
    result = run_script(tool_dir(tmp_path / "bin", git=True), PREFECT_API_URL=f"http://{host}:{port}/api",
                        PREFECT_SERVER_WAIT_SECONDS="1")
    assert result.returncode == 1
    assert "for the public domain" not in result.stderr
    assert "did not answer /health within 1s" in result.stderr  # it went on to wait for the server


def test_unreachable_server_times_out_with_a_clear_message(tmp_path):
    api = f"http://127.0.0.1:{free_port()}/api"
    result = run_script(tool_dir(tmp_path / "bin", git=True), PREFECT_API_URL=api, PREFECT_SERVER_WAIT_SECONDS="1")
    assert result.returncode == 1
    assert f"the Prefect server at {api} did not answer /health within 1s" in result.stderr
    assert "PREFECT_SERVER_WAIT_SECONDS" in result.stderr


def test_every_fix_it_names_exists():
    assert "git" in json.loads((ROOT / "railpack.json").read_text())["deploy"]["aptPackages"]
    nix = tomllib.loads((ROOT / "nixpacks.toml").read_text())["phases"]["setup"]["nixPkgs"]
    assert nix[0] == "..." and "git" in nix  # without "..." the list replaces Python's packages
    assert (ROOT / "Dockerfile.worker").is_file()


# --- against a real server ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(request):
    return railway_web_service(request).server


def test_wrong_credentials_are_named(server, tmp_path):
    result = run_script(
        tool_dir(tmp_path / "bin", git=True), PREFECT_API_URL=server.api_url, PREFECT_API_AUTH_STRING="admin:wrong"
    )
    assert result.returncode == 1
    assert "refused the worker's credentials (HTTP 401)" in result.stderr
    assert "admin:wrong" not in result.stderr


@pytest.fixture(scope="module")
def edge(server, tmp_path_factory):
    """The server behind the local edge, as its public domain: 127.0.0.1:<edge port>, HTTPS only."""
    tls = tmp_path_factory.mktemp("edge") / "tls"
    edge = Edge(0, server.port, tls).start()
    yield edge, trust_bundle(tls)
    edge.stop()


def test_http_through_an_edge_that_redirects_is_refused(server, edge, tmp_path):
    """A loopback address passes the static check, but the emulator's public domain is one: the redirect
    to https:// from the edge (as from Railway's) is what refuses it."""
    edge, bundle = edge
    result = run_script(tool_dir(tmp_path / "bin", git=True), PREFECT_API_URL=f"http://{edge.domain}/api",
                        PREFECT_API_AUTH_STRING=server.auth_string, SSL_CERT_FILE=str(bundle))
    assert result.returncode == 1
    assert "answers plain HTTP with a redirect to https:// (HTTP 301)" in result.stderr
    assert "PREFECT_API_URL=https://${{web.RAILWAY_PUBLIC_DOMAIN}}/api" in result.stderr


def test_https_through_the_edge_passes_the_checks(server, edge, tmp_path):
    edge, bundle = edge
    env = server.client_env(tmp_path / "home", PATH=str(tool_dir(tmp_path / "bin", git=True)),
                            PREFECT_API_URL=f"{edge.url}/api", SSL_CERT_FILE=str(bundle), **FAST_WORKER_SETTINGS)
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen([BASH, str(SCRIPT)], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        wait_until(lambda: "the Prefect server is up" in log_path.read_text() or worker.poll() is not None,
                   timeout=60, what=f"start_worker.sh's checks; log:\n{log_path}")
    finally:
        stop_process_group(worker)
    assert "the Prefect server is up" in log_path.read_text(), log_path.read_text()


def test_worker_starts_and_the_pool_turns_ready(server, tmp_path):
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    env = server.client_env(tmp_path / "home", PATH=str(tool_dir(tmp_path / "bin", git=True)),
                            PREFECT_WORK_POOL=pool, **FAST_WORKER_SETTINGS)
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen([BASH, str(SCRIPT)], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        with server.http() as http:
            def pool_status():
                response = http.get(f"/api/work_pools/{pool}")
                return response.status_code == 200 and response.json()["status"] == "READY"

            wait_until(pool_status, timeout=60, what=f"work pool {pool} READY; worker log:\n{log_path}")
        cmdline = Path(f"/proc/{worker.pid}/cmdline").read_bytes().split(b"\0")
        # bash exec'd `vault-ingest worker` (a Python script: python, its path, its arguments): SIGTERM goes to it
        assert cmdline[1].endswith(b"/vault-ingest") and cmdline[2:4] == [b"worker", b"--pool"]

        # Railway's stop signal, to the main process only: with no flow run to wait for, it stops at once.
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=90) == 0, log_path.read_text()
    finally:
        stop_process_group(worker)
    assert "SIGTERM: taking no more flow runs\n" in log_path.read_text()
    assert "no flow runs left: the worker stops" in log_path.read_text()
    assert "the Prefect server is up" in log_path.read_text()
