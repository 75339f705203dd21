"""The Postgres lease storage against Prefect's own: one sequence of calls, the same answers.

Prefect's `memory` and `filesystem` storages are the reference (`prefect/server/concurrency/lease_storage/`,
Prefect 3.9.1); ours runs on a real PostgreSQL through Prefect's own database interface, as in the server.
"""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from datetime import timedelta
from uuid import uuid4

import pytest
from prefect.server.concurrency.lease_storage import (
    ConcurrencyLeaseHolder,
    ConcurrencyLimitLeaseMetadata,
    get_concurrency_lease_storage,
)
from prefect.server.concurrency.lease_storage import filesystem, memory
from prefect.server.database import provide_database_interface
from prefect.server.database.dependencies import MODELS_DEPENDENCIES
from prefect.settings import (
    PREFECT_API_DATABASE_CONNECTION_URL,
    PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE,
    temporary_settings,
)

from vault_ingest import leases

STORES = ["memory", "filesystem", "postgres"]


@contextmanager
def prefect_database(url: str, settings: dict | None = None):
    """Prefect's database interface on `url`. Prefect keeps the first one it builds for the process (one server,
    one database), so each test starts and leaves it unset."""
    MODELS_DEPENDENCIES.update(dict.fromkeys(MODELS_DEPENDENCIES))
    try:
        with temporary_settings(updates={PREFECT_API_DATABASE_CONNECTION_URL: url, **(settings or {})}):
            yield
    finally:
        MODELS_DEPENDENCIES.update(dict.fromkeys(MODELS_DEPENDENCIES))


def asyncpg(database_url: str) -> str:
    return database_url.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture
def store(request, tmp_path):
    kind = request.param
    if kind == "memory":
        instance = memory.ConcurrencyLeaseStorage()  # a singleton: start it empty
        instance.leases.clear()
        instance.expirations.clear()
        yield instance
    elif kind == "filesystem":
        yield filesystem.ConcurrencyLeaseStorage(storage_path=tmp_path / "leases")
    else:
        with prefect_database(asyncpg(request.getfixturevalue("database_url"))):
            yield leases.ConcurrencyLeaseStorage()


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("store", STORES, indirect=True)
def test_the_protocol_answers_as_prefects_own_storages_do(store):
    limit, other_limit, run_id = uuid4(), uuid4(), uuid4()
    holder = ConcurrencyLeaseHolder(type="flow_run", id=run_id)

    async def scenario():
        live = await store.create_lease([limit], timedelta(seconds=60),
                                        ConcurrencyLimitLeaseMetadata(slots=1, holder=holder))
        stale = await store.create_lease([limit, other_limit], timedelta(seconds=-5),
                                         ConcurrencyLimitLeaseMetadata(slots=2))
        read = await store.read_lease(live.id)
        assert (read.id, read.resource_ids, read.metadata, read.expiration, read.created_at) == (
            live.id, [limit], ConcurrencyLimitLeaseMetadata(slots=1, holder=holder), live.expiration, live.created_at)
        assert await store.read_lease(uuid4()) is None
        assert (await store.read_lease(stale.id)).resource_ids == [limit, other_limit]  # expired, still readable

        assert await store.read_active_lease_ids() == [live.id]
        assert await store.read_expired_lease_ids() == [stale.id]
        assert await store.list_holders_for_limit(limit) == [(live.id, holder)]
        assert await store.list_holders_for_limit(other_limit) == []  # the stale lease has no holder

        assert await store.renew_lease(stale.id, timedelta(seconds=60)) is True  # an expired lease renews
        assert await store.read_expired_lease_ids() == []
        assert set(await store.read_active_lease_ids()) == {live.id, stale.id}
        assert await store.read_active_lease_ids(limit=1, offset=1) != await store.read_active_lease_ids(limit=1)
        assert await store.renew_lease(uuid4(), timedelta(seconds=60)) is False

        await store.revoke_lease(live.id)
        await store.revoke_lease(live.id)  # twice is fine
        assert await store.read_active_lease_ids() == [stale.id]
        assert await store.list_holders_for_limit(limit) == []
        assert await store.renew_lease(live.id, timedelta(seconds=60)) is False
        return await store.read_lease(live.id)

    after_revoke = run(scenario())
    if isinstance(store, leases.ConcurrencyLeaseStorage):
        # The one difference: a tombstone that releases nothing, instead of nothing (which releases anyway).
        assert after_revoke.metadata == ConcurrencyLimitLeaseMetadata(slots=0, holder=holder)
    else:
        assert after_revoke is None


def test_prefect_loads_it_by_module_name(database_url):
    with prefect_database(asyncpg(database_url),
                          {PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE: "vault_ingest.leases"}):
        storage = get_concurrency_lease_storage()
        assert isinstance(storage, leases.ConcurrencyLeaseStorage)
        lease = run(storage.create_lease([uuid4()], timedelta(seconds=30)))
        # Another instance (another server process, after a restart) reads what the first wrote.
        assert run(get_concurrency_lease_storage().read_active_lease_ids()) == [lease.id]


def test_a_sqlite_prefect_database_is_refused_with_the_fix(tmp_path):
    with prefect_database(f"sqlite+aiosqlite:///{tmp_path}/p.db"):
        with pytest.raises(RuntimeError, match="lease_storage.filesystem"):
            run(leases.ConcurrencyLeaseStorage().read_active_lease_ids())


def test_tombstones_are_forgotten_after_a_day(database_url, monkeypatch):
    with prefect_database(asyncpg(database_url)):
        store = leases.ConcurrencyLeaseStorage()

        async def scenario():
            lease = await store.create_lease([uuid4()], timedelta(seconds=30))
            await store.revoke_lease(lease.id)
            await store.read_expired_lease_ids()
            kept = await store.read_lease(lease.id)
            monkeypatch.setattr(leases, "TOMBSTONE_SECONDS", -1)
            await store.read_expired_lease_ids()
            return kept, await store.read_lease(lease.id)

        kept, forgotten = run(scenario())
        assert kept is not None and forgotten is None


@pytest.mark.parametrize("kind", ["memory", "postgres"])
def test_a_late_release_of_a_repossessed_lease_frees_no_other_runs_slot(kind, database_url):
    """Prefect's own code paths, on Prefect's own tables: the repossessor revokes dead run A's expired lease
    (`revoke_expired_lease`), run B takes the freed slot, then A is marked Crashed and its lease released
    (`_release_concurrency_lease`, as ReleaseFlowConcurrencySlots calls it). With Prefect's storage the lease is
    gone, so the fallback frees B's slot and a third run could start beside B; the tombstone frees nothing."""
    from prefect.server.models import concurrency_limits_v2 as limits
    from prefect.server.orchestration.core_policy import _release_concurrency_lease
    from prefect.server.schemas.actions import ConcurrencyLimitV2Create
    from prefect.server.services.repossessor import revoke_expired_lease

    module = "prefect.server.concurrency.lease_storage.memory" if kind == "memory" else "vault_ingest.leases"
    with prefect_database(asyncpg(database_url), {PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE: module}):
        db = provide_database_interface()
        store = get_concurrency_lease_storage()  # what _release_concurrency_lease gets too
        if kind == "memory":
            store.leases.clear()
            store.expirations.clear()

        async def take_slot(limit_id, ttl: float):
            async with db.session_context(begin_transaction=True) as session:
                assert await limits.bulk_increment_active_slots(session=session, concurrency_limit_ids=[limit_id],
                                                                slots=1)
            return await store.create_lease([limit_id], timedelta(seconds=ttl), ConcurrencyLimitLeaseMetadata(slots=1))

        async def scenario() -> int:
            await db.create_db()
            async with db.session_context(begin_transaction=True) as session:
                limit = await limits.create_concurrency_limit(
                    session=session, concurrency_limit=ConcurrencyLimitV2Create(name="deployment:x", limit=1))
                limit_id = limit.id
            dead = await take_slot(limit_id, ttl=-1)  # run A, whose worker died: its lease has run out
            await revoke_expired_lease(dead.id, db=db, lease_storage=store)
            await take_slot(limit_id, ttl=300)  # run B
            async with db.session_context(begin_transaction=True) as session:
                await _release_concurrency_lease(session, dead.id, fallback_concurrency_limit_ids=[limit_id])
            async with db.session_context() as session:
                limit = await limits.read_concurrency_limit(session=session, concurrency_limit_id=limit_id)
                return limit.active_slots

        taken = run(scenario())
    assert taken == (0 if kind == "memory" else 1)  # memory: B runs on a slot the count no longer has
