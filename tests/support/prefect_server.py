"""Real Prefect servers for tests, isolated and torn down completely.

`prefect_server` runs one: its own free port on 127.0.0.1, its own PREFECT_HOME (database, profiles, UI
copy) and its own process group, so teardown can SIGTERM and then SIGKILL everything it spawned; started
directly or through the `vault-ingest serve` launcher, with settings for a server that mostly idles.
`railway_web_service` is one such server configured like Railway's `web` service, shared by the session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import psutil
import pytest

from emulator.runtime.postgres import free_port
from emulator.runtime.process import signal_group

T = TypeVar("T")

HOST = "127.0.0.1"
PREFECT = str(Path(sys.executable).with_name("prefect"))

# Telemetry off (its writes cause SQLite "database is locked"), INFO logs so the access log shows request
# paths. The session's server idles for minutes: no scheduler (tests create the runs they follow) and
# Prefect's own foreman loop, as no test here waits for a pool to go NOT_READY; that halves its idle CPU.
FAST_SERVER_SETTINGS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "INFO",
}

# Worker loops short enough that READY shows up within a couple of seconds (prefect.md §4.3).
FAST_WORKER_SETTINGS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_WORKER_HEARTBEAT_SECONDS": "1",
    "PREFECT_WORKER_QUERY_SECONDS": "1",
}


def wait_until(check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.2) -> T:
    """Call `check` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {result!r})")
        time.sleep(interval)


def clean_environ(**overrides: str) -> dict[str, str]:
    """This process's environment without the Prefect, Railway and database settings a developer may have
    exported, so every spawned process sees only what its test gives it."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "RAILWAY_")) and key not in ("PORT", "DATABASE_URL")
    }
    env.update(overrides)
    return env


def stop_process_group(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group `process` leads; SIGKILL what is left of it and of its descendants after
    `grace` seconds. Descendants are noted first: Prefect starts flow runs in sessions of their own."""
    try:
        family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    signal_group(process.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=grace)
    for leftover in alive:
        try:
            leftover.kill()
        except psutil.NoSuchProcess:
            pass
    signal_group(process.pid, signal.SIGKILL)  # members that were not descendants, if any
    process.wait(timeout=10)


@dataclass
class PrefectServer:
    port: int
    home: Path
    log_path: Path
    process: subprocess.Popen
    auth_string: str | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def client_env(self, home: Path, **overrides: str) -> dict[str, str]:
        """Environment for a client process (CLI, worker, deploy script) talking to this server."""
        env = clean_environ(PREFECT_HOME=str(home), PREFECT_API_URL=self.api_url, DO_NOT_TRACK="1")
        if self.auth_string:
            env["PREFECT_API_AUTH_STRING"] = self.auth_string
        env.update(overrides)
        return env

    def http(self) -> httpx.Client:
        """An HTTP client for this server, authenticated when the server wants basic auth."""
        auth = tuple(self.auth_string.split(":", 1)) if self.auth_string else None
        return httpx.Client(base_url=self.url, auth=auth, timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"Prefect server exited with code {self.process.returncode} before becoming healthy; "
                f"its log ({self.log_path}) ends with:\n{self.log()[-3000:]}"
            )
        try:
            return httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False


@contextmanager
def prefect_server(
    workdir: Path,
    *,
    env: Mapping[str, str] | None = None,
    launcher: bool = False,
    timeout: float = 90.0,
    stop_grace: float = 3.0,
) -> Iterator[PrefectServer]:
    """Run a Prefect server until the block exits; yield it once `/api/health` answers.

    `launcher=True` starts it as Railway's `web` service does, through `vault-ingest serve` with `PORT`;
    otherwise `prefect server start` runs directly. `env` is added on top of the fast settings, so a test
    can set `PREFECT_API_DATABASE_CONNECTION_URL`, `PREFECT_SERVER_API_AUTH_STRING`, `RAILWAY_*` and so on.
    Teardown gives the server `stop_grace` seconds after SIGTERM; tests of graceful shutdown raise it.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port(HOST)
    home = workdir / "prefect-home"
    full_env = clean_environ(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_API_HOST=HOST,
        PREFECT_SERVER_API_PORT=str(port),
        **FAST_SERVER_SETTINGS,
    )
    full_env.update(env or {})
    if launcher:
        full_env["PORT"] = str(port)
        command = [sys.executable, "-m", "vault_ingest.cli", "serve"]
    else:
        command = [PREFECT, "server", "start", "--host", HOST, "--port", str(port)]
    log_path = workdir / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, env=full_env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    server = PrefectServer(port, home, log_path, process, full_env.get("PREFECT_SERVER_API_AUTH_STRING"))
    try:
        wait_until(server.healthy, timeout=timeout, what=f"Prefect server health on {server.api_url}")
        yield server
    finally:
        stop_process_group(server.process, stop_grace)  # a test that restarted the server swapped it in


WEB_DOMAIN = "vault-ingest-web.up.railway.app"
WEB_AUTH = "admin:web-service-secret"


@dataclass(frozen=True)
class WebService:
    server: PrefectServer
    database_url: str  # postgresql:// URL of the Prefect database


_WEB_SERVICE = pytest.StashKey[WebService]()


def railway_web_service(request: pytest.FixtureRequest) -> WebService:
    """The `web` service as Railway runs it, started once per test session and shared by every module.

    `vault-ingest serve` gets only what Railway would give it: PORT, RAILWAY_PUBLIC_DOMAIN (WEB_DOMAIN),
    PREFECT_API_DATABASE_CONNECTION_URL as a plain postgresql:// URL naming a database that does not exist
    yet, and PREFECT_SERVER_API_AUTH_STRING (WEB_AUTH). Sharing saves a 10-30 s start per module; tests
    keep to their own work pools.
    """
    config = request.config
    if _WEB_SERVICE not in config.stash:
        stack = ExitStack()
        config.add_cleanup(stack.close)
        admin_url = request.getfixturevalue("postgres_admin_url")
        database_url = admin_url.rsplit("/", 1)[0] + "/prefect"
        env = {
            "RAILWAY_PUBLIC_DOMAIN": WEB_DOMAIN,
            "PREFECT_SERVER_API_AUTH_STRING": WEB_AUTH,
            "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
        }
        workdir = request.getfixturevalue("tmp_path_factory").mktemp("web-service")
        server = stack.enter_context(prefect_server(workdir, env=env, launcher=True))
        config.stash[_WEB_SERVICE] = WebService(server, database_url)
    return config.stash[_WEB_SERVICE]
