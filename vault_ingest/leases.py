"""Prefect's concurrency leases kept in the Prefect server's own PostgreSQL database.

A deployment's concurrency slot is two records: the counter `concurrency_limit_v2.active_slots` in the
Prefect database, and a lease that says who holds the slot until when. When the lease expires unrenewed,
Prefect's repossessor gives the slot back (`prefect/server/services/repossessor.py`). Prefect 3.9.1 keeps the
leases in memory by default (`prefect/settings/models/server/concurrency.py`: `lease_storage`), so a
server restart forgets them while the counter stays: a slot whose holder died is never given back, and the
deployment waits in AwaitingConcurrencySlot for good. Stored beside the counter, a lease lives exactly as
long as the slot it guards: through restarts and Railway redeploys, with no volume and no extra service.

Select it with PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=vault_ingest.leases (`vault-ingest serve` does when
the Prefect database is PostgreSQL). It implements the protocol of
`prefect/server/concurrency/lease_storage/__init__.py` (Prefect 3.9.1) with the semantics of Prefect's own
`memory.py` and `filesystem.py` beside it: a lease is active while its expiration is in the future, expired
after; reading, renewing and revoking work on expired leases too; renewing a lease that does not exist
returns False. `tests/test_leases.py` runs one sequence of calls against those two and this one.

One deliberate difference: a revoked lease is kept for a day as a tombstone that reads as holding 0 slots.
Prefect releases a run's slot when the run leaves Pending/Running (`ReleaseFlowConcurrencySlots` in
`prefect/server/orchestration/core_policy.py`), and when the lease it reads is gone it decrements the counter
anyway (`_release_concurrency_lease`'s fallback). So a dead run whose lease the repossessor already revoked,
marked Crashed afterwards, frees the slot of whichever run holds it by then, and a third run can start beside
it. Reading the tombstone, that release frees 0 slots. Renewing a tombstone returns False, as for a lease
that is gone.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import sqlalchemy as sa

from prefect.server.concurrency.lease_storage import (
    ConcurrencyLeaseHolder,
    ConcurrencyLimitLeaseMetadata,
)
from prefect.server.concurrency.lease_storage import ConcurrencyLeaseStorage as _ConcurrencyLeaseStorage
from prefect.server.database import provide_database_interface
from prefect.server.utilities.leasing import ResourceLease

TABLE = "vault_ingest_concurrency_lease"
TOMBSTONE_SECONDS = 24 * 3600  # longer than any run lives between losing its lease and being marked Crashed

# Not in Prefect's Alembic history, which never drops tables it does not know. The advisory lock keeps two
# server processes starting at once from racing on CREATE TABLE IF NOT EXISTS (it is not atomic in PostgreSQL).
_SCHEMA = [
    "SELECT pg_advisory_xact_lock(hashtext('" + TABLE + "'))",
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        id uuid PRIMARY KEY,
        resource_ids uuid[] NOT NULL,
        metadata text,
        expiration timestamptz NOT NULL,
        created_at timestamptz NOT NULL,
        revoked_at timestamptz
    )""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_live_expiration ON {TABLE} (expiration) WHERE revoked_at IS NULL",
]
_ready: set[str] = set()  # database URLs whose table exists, so each server process creates it once


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _dump(metadata: ConcurrencyLimitLeaseMetadata | None) -> str | None:
    if metadata is None:
        return None
    out: dict[str, Any] = {"slots": metadata.slots}
    if metadata.holder is not None:
        out["holder"] = metadata.holder.model_dump(mode="json")
    return json.dumps(out)


def _load(raw: str | None, *, revoked: bool) -> ConcurrencyLimitLeaseMetadata | None:
    if raw is None:
        return ConcurrencyLimitLeaseMetadata(slots=0) if revoked else None
    data = json.loads(raw)
    return ConcurrencyLimitLeaseMetadata(slots=0 if revoked else data["slots"], holder=data.get("holder"))


class ConcurrencyLeaseStorage(_ConcurrencyLeaseStorage):
    """Concurrency leases in the table `vault_ingest_concurrency_lease` of the Prefect database."""

    def __init__(self) -> None:
        self._db = provide_database_interface()

    async def _session(self):
        session = await self._db.session()
        key = str(self._db.database_config.connection_url)
        if key not in _ready:
            if session.bind.dialect.name != "postgresql":
                await session.close()
                raise RuntimeError(
                    "vault_ingest.leases keeps leases in the Prefect database, which must be PostgreSQL; with "
                    "SQLite set PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=prefect.server.concurrency.lease_storage."
                    "filesystem (its files live in PREFECT_HOME beside the database)"
                )
            async with session.begin():
                for statement in _SCHEMA:
                    await session.execute(sa.text(statement))
            _ready.add(key)
        return session

    async def _execute(self, statement: str, **params: Any) -> list[sa.Row]:
        session = await self._session()
        async with session, session.begin():
            result = await session.execute(sa.text(statement), params)
            return list(result.fetchall()) if result.returns_rows else []

    async def create_lease(
        self,
        resource_ids: list[UUID],
        ttl: timedelta,
        metadata: ConcurrencyLimitLeaseMetadata | None = None,
    ) -> ResourceLease[ConcurrencyLimitLeaseMetadata]:
        lease = ResourceLease(resource_ids=resource_ids, metadata=metadata, expiration=_now() + ttl)
        await self._execute(
            f"INSERT INTO {TABLE} (id, resource_ids, metadata, expiration, created_at) "
            "VALUES (:id, CAST(:resource_ids AS uuid[]), :metadata, :expiration, :created_at)",
            id=lease.id, resource_ids=list(resource_ids), metadata=_dump(metadata),
            expiration=lease.expiration, created_at=lease.created_at,
        )
        return lease

    async def read_lease(self, lease_id: UUID) -> ResourceLease[ConcurrencyLimitLeaseMetadata] | None:
        rows = await self._execute(
            f"SELECT resource_ids, metadata, expiration, created_at, revoked_at FROM {TABLE} WHERE id = :id",
            id=lease_id,
        )
        if not rows:
            return None
        resource_ids, metadata, expiration, created_at, revoked_at = rows[0]
        return ResourceLease(
            id=lease_id,
            resource_ids=[UUID(str(rid)) for rid in resource_ids],
            metadata=_load(metadata, revoked=revoked_at is not None),
            expiration=expiration,
            created_at=created_at,
        )

    async def renew_lease(self, lease_id: UUID, ttl: timedelta) -> bool:
        rows = await self._execute(
            f"UPDATE {TABLE} SET expiration = :expiration WHERE id = :id AND revoked_at IS NULL RETURNING id",
            id=lease_id, expiration=_now() + ttl,
        )
        return bool(rows)

    async def revoke_lease(self, lease_id: UUID) -> None:
        await self._execute(
            f"UPDATE {TABLE} SET revoked_at = :now WHERE id = :id AND revoked_at IS NULL", id=lease_id, now=_now()
        )

    async def read_active_lease_ids(self, limit: int = 100, offset: int = 0) -> list[UUID]:
        rows = await self._execute(
            f"SELECT id FROM {TABLE} WHERE revoked_at IS NULL AND expiration > :now "
            "ORDER BY created_at, id LIMIT :limit OFFSET :offset",
            now=_now(), limit=limit, offset=offset,
        )
        return [UUID(str(row[0])) for row in rows]

    async def read_expired_lease_ids(self, limit: int = 100) -> list[UUID]:
        now = _now()
        # The repossessor asks every loop: the place to forget tombstones nobody can still release.
        await self._execute(
            f"DELETE FROM {TABLE} WHERE revoked_at < :horizon", horizon=now - timedelta(seconds=TOMBSTONE_SECONDS)
        )
        rows = await self._execute(
            f"SELECT id FROM {TABLE} WHERE revoked_at IS NULL AND expiration < :now ORDER BY expiration LIMIT :limit",
            now=now, limit=limit,
        )
        return [UUID(str(row[0])) for row in rows]

    async def list_holders_for_limit(self, limit_id: UUID) -> list[tuple[UUID, ConcurrencyLeaseHolder]]:
        rows = await self._execute(
            f"SELECT id, metadata FROM {TABLE} WHERE revoked_at IS NULL AND expiration > :now "
            "AND :limit_id = ANY(resource_ids) ORDER BY created_at, id",
            now=_now(), limit_id=limit_id,
        )
        holders = []
        for lease_id, raw in rows:
            metadata = _load(raw, revoked=False)
            if metadata and metadata.holder:
                holders.append((UUID(str(lease_id)), metadata.holder))
        return holders
