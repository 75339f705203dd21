"""Lease storage: what one flow run's lease costs in each storage a Railway `web` could use.

A deployment run takes one lease when it enters Pending, the server renews it at Running and the engine every
225 s, and it is revoked when the run ends; the repossessor asks for expired leases every 15 s. One cycle here
is create, read, renew, list holders, revoke, and one expired-lease scan, against Prefect's `memory` and
`filesystem` storages (Prefect 3.9.1) and `vault_ingest.leases` on the same PostgreSQL as P1, in one run.
Reported: milliseconds per cycle and the ratio to memory.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg

CYCLES = 200


async def _cycles(store, cycles: int) -> float:
    from prefect.server.concurrency.lease_storage import ConcurrencyLeaseHolder, ConcurrencyLimitLeaseMetadata

    limit = uuid.uuid4()
    started = time.perf_counter()
    for _ in range(cycles):
        holder = ConcurrencyLeaseHolder(type="flow_run", id=uuid.uuid4())
        lease = await store.create_lease([limit], timedelta(seconds=300),
                                         ConcurrencyLimitLeaseMetadata(slots=1, holder=holder))
        await store.read_lease(lease.id)
        await store.renew_lease(lease.id, timedelta(seconds=300))
        await store.list_holders_for_limit(limit)
        await store.revoke_lease(lease.id)
        await store.read_expired_lease_ids()
    return (time.perf_counter() - started) / cycles * 1000


def run(admin_url: str, tmp: Path, cycles: int = CYCLES) -> dict:
    from prefect.server.concurrency.lease_storage import filesystem, memory
    from prefect.server.database.dependencies import MODELS_DEPENDENCIES
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, temporary_settings

    from vault_ingest import leases

    name = f"bench_leases_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rpartition("/")[0].replace("postgresql://", "postgresql+asyncpg://", 1) + f"/{name}"
    MODELS_DEPENDENCIES.update(dict.fromkeys(MODELS_DEPENDENCIES))
    try:
        with temporary_settings(updates={PREFECT_API_DATABASE_CONNECTION_URL: url}):
            async def measure() -> dict[str, float]:
                stores = {
                    "memory": memory.ConcurrencyLeaseStorage(),
                    "filesystem": filesystem.ConcurrencyLeaseStorage(storage_path=tmp / "leases"),
                    "postgres": leases.ConcurrencyLeaseStorage(),
                }
                await _cycles(stores["postgres"], 5)  # creates the table, warms the pool
                return {kind: await _cycles(store, cycles) for kind, store in stores.items()}

            ms = asyncio.run(measure())
    finally:
        MODELS_DEPENDENCIES.update(dict.fromkeys(MODELS_DEPENDENCIES))
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return {
        "cycles": cycles,
        "ms_per_cycle": {kind: round(value, 3) for kind, value in ms.items()},
        "ratio_to_memory": {kind: round(value / ms["memory"], 1) for kind, value in ms.items()},
    }
