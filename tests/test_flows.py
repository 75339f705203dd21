"""The flows under a real Prefect API (the session's shared `web` server): they land data and publish their artifact."""

import asyncio

import psycopg
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from tests.support.prefect_server import railway_web_service
from tests.support.replay import hyperliquid_env, replay_server
from vault_ingest.flows import sync_vault_details, sync_vaults


@pytest.fixture
def prefect_api(request):
    server = railway_web_service(request).server
    with temporary_settings({PREFECT_API_URL: server.api_url, PREFECT_API_AUTH_STRING: server.auth_string}):
        yield


@pytest.fixture
def env(database_url, monkeypatch):
    with replay_server() as server:
        for name, value in {"DATABASE_URL": database_url, **hyperliquid_env(server)}.items():
            monkeypatch.setenv(name, value)
        # one of the cassettes' five detailed vaults answers null: 20 %, over the default threshold of 10 %
        monkeypatch.setenv("INGEST_MAX_BAD_FRACTION", "0.25")
        yield database_url


async def latest_artifact(key):
    async with get_client() as client:
        found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                            sort=ArtifactSort.CREATED_DESC)  # the server is shared by the session
    return found[0] if found else None


def test_sync_vaults_then_details(prefect_api, env):
    listed = asyncio.run(sync_vaults())
    assert listed["new"] > 10 and listed["skipped"] == 0
    artifact = asyncio.run(latest_artifact("sync-vaults"))
    assert artifact is not None and artifact.type == "markdown"
    assert f"**new** {listed['new']}" in artifact.data
    # HLP's real tvl, with its four children inside it rather than beside it
    assert "| Hyperliquidity Provider (HLP) (incl. 4 child vaults) | $343.3M |" in artifact.data
    assert "HLP Strategy" not in artifact.data

    details = asyncio.run(sync_vault_details(max_vaults=5))
    assert details["new"] == 4 and details["not_found"] == 1 and details["failed"] == 0
    with psycopg.connect(env) as conn:
        parents = conn.execute(
            "SELECT DISTINCT parent_address FROM vaults WHERE relationship = 'child' AND parent_address IS NOT NULL"
        ).fetchall()
        assert parents == [("0xdfc24b077bc1425ad1dea75bcb6f8158e10df303",)]
    assert asyncio.run(latest_artifact("sync-vault-details")) is not None


def test_a_run_with_too_many_bad_vaults_ends_failed_with_its_report(prefect_api, env, monkeypatch):
    asyncio.run(sync_vaults())
    monkeypatch.setenv("INGEST_MAX_BAD_FRACTION", "0.1")
    state = asyncio.run(sync_vault_details(max_vaults=5, return_state=True))
    assert state.is_failed()
    artifact = asyncio.run(latest_artifact("sync-vault-details"))
    assert "**Failed:** vault details: 1 of 5 vaults were skipped, failed or not found" in artifact.data
    assert "## Problems (1)" in artifact.data and "not found (vaultDetails answered null)" in artifact.data
