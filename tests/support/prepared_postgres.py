"""A PostgreSQL data directory whose `prefect` database Prefect's server has already set up, for the emulated
stacks whose tests are not about a first deploy (emulator/runtime/postgres.py, PREPARED_ENV).

Prefect's first start on a new database runs its migrations and registers its block types: more CPU than a start
on a database it set up before (a web redeploy), ~2.5 s on an idle machine (the server's and PostgreSQL's), ~4 s
under the suite's load, and the suite starts about twenty such stacks. Made once per Prefect and PostgreSQL version (and fsync setting) in the
emulator's cache, by the first xdist worker that asks, the others waiting on a lock; then copied like initdb's
output. The stacks that show a first deploy (test_e2e's `up`, test_any_repo's repositories, the bare servers
of tests/support/prefect_server.py) start empty, as on Railway.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import tempfile
from importlib.metadata import version as package_version
from pathlib import Path

from emulator.runtime.postgres import PREPARED_ENV, PostgresServer
from tests.support.prefect_server import prefect_server

DATABASE = "prefect"  # the name railway.stack.toml's web gives Prefect's database


@functools.cache
def prepared_env() -> dict[str, str]:
    """The variable that makes the emulator start a new Postgres volume from the prepared directory."""
    return {PREPARED_ENV: str(prepared_cluster(Path(os.environ["EMULATOR_CACHE_DIR"]) / "postgres"))}


def prepared_cluster(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".prepared-", dir=cache) as scratch:  # renamed within one filesystem
        server = PostgresServer(Path(scratch) / "data", template_cache=cache)
        key = hashlib.sha256("\0".join([server.version(), package_version("prefect"),
                                        str(server.unsafe_fast)]).encode()).hexdigest()[:16]
        target = cache / f"prefect-{key}"
        with open(cache / f".prefect-{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (target / "PG_VERSION").exists():
                _prepare(server, Path(scratch))
                server.data_dir.rename(target)  # whole or not at all: a half-made one is never used
    return target


def _prepare(server: PostgresServer, scratch: Path) -> None:
    server.start()
    try:
        url = server.create_database(DATABASE).replace("postgresql://", "postgresql+asyncpg://", 1)
        with prefect_server(scratch / "prefect", env={"PREFECT_API_DATABASE_CONNECTION_URL": url}, timeout=180):
            pass  # healthy: migrated, block types registered
    finally:
        server.stop()  # its log and Prefect's home stay in the scratch directory, removed with it
