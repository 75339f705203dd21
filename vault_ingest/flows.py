"""The Prefect flows that the worker runs. Thin: the work is in `ingest`, the UI gets logs and an artifact."""

from __future__ import annotations

from decimal import Decimal

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact

from vault_ingest import ingest
from vault_ingest.config import Settings
from vault_ingest.db.writer import top_vaults
from vault_ingest.runtime import open_run

TOP_N = 10


async def _publish(key: str, title: str, summary: ingest.RunSummary, engine) -> None:
    counts = " · ".join(f"**{name}** {value}" for name, value in summary.counts().items())
    rows = [
        {"name": v["name"], "address": v["address"], "tvl": str(v["tvl"]), "apr": str(v["apr"])}
        for v in top_vaults(engine, TOP_N)
    ]
    await acreate_table_artifact(key=key, table=rows, description=f"### {title}\n{counts}\n\nTop {TOP_N} vaults by TVL:")


@flow(name="sync-vaults", log_prints=True)
async def sync_vaults() -> dict[str, int]:
    """Every vault in Hyperliquid's stats list into `vaults`, with its list metrics."""
    async with open_run(Settings.from_env()) as (engine, client):
        summary = await ingest.sync_vault_list(engine, client, get_run_logger())
        await _publish("sync-vaults", "Vault list synced", summary, engine)
    return summary.counts()


@flow(name="sync-vault-details", log_prints=True)
async def sync_vault_details(min_tvl: Decimal | None = None, max_vaults: int | None = None) -> dict[str, int]:
    """vaultDetails for open vaults (TVL >= min_tvl, highest first, at most max_vaults): metrics and history."""
    log = get_run_logger()
    async with open_run(Settings.from_env()) as (engine, client):
        summary = await ingest.sync_vault_details(
            engine, client, log, min_tvl=min_tvl, max_vaults=max_vaults,
            progress=lambda done, total: log.info("details: %d/%d vaults", done, total),
        )
        await _publish("sync-vault-details", "Vault details synced", summary, engine)
    return summary.counts()
