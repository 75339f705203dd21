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
