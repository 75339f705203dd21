"""The Prefect flows. Placeholder signatures; the bodies land with the ingestion work."""

from __future__ import annotations

from decimal import Decimal

from prefect import flow


@flow(name="sync-vaults", log_prints=True)
async def sync_vaults() -> dict:
    raise NotImplementedError


@flow(name="sync-vault-details", log_prints=True)
async def sync_vault_details(min_tvl: Decimal | None = None, max_vaults: int | None = None) -> dict:
    raise NotImplementedError
