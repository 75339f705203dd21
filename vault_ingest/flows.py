"""The Prefect flows that the worker runs. Thin: the work is in `ingest`, the UI gets logs and a report artifact.

A run whose data is too bad (ingest raises DataQualityError) publishes its report, failure first, and then fails,
so the flow run ends in Prefect's Failed state with its counts and first problems in the artifact.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact

from vault_ingest import ingest
from vault_ingest.config import Settings
from vault_ingest.db.reads import latest_list_snapshot, top_vaults
from vault_ingest.errors import DataQualityError
from vault_ingest.report import render
from vault_ingest.runtime import open_run

TOP_N = 10


async def _publish(key: str, title: str, summary: ingest.RunSummary, engine, failure: str | None = None) -> None:
    top, snapshot = await asyncio.gather(asyncio.to_thread(top_vaults, engine, TOP_N),
                                         asyncio.to_thread(latest_list_snapshot, engine))
    report = render(title, summary.counts(), summary.problems, top,
                    total_tvl=snapshot["total_tvl"] if snapshot else None, failure=failure)
    await acreate_markdown_artifact(key=key, markdown=report, description=title)


async def _run(key: str, title: str, engine, job) -> dict[str, int]:
    try:
        summary = await job
    except DataQualityError as exc:
        await _publish(key, title, exc.summary or ingest.RunSummary(), engine, failure=str(exc))
        raise
    await _publish(key, title, summary, engine)
    return summary.counts()


@flow(name="sync-vaults", log_prints=True)
async def sync_vaults() -> dict[str, int]:
    """Every vault in Hyperliquid's stats list into `vaults`, with its list metrics."""
    settings = Settings.from_env()
    async with open_run(settings) as (engine, client):
        job = ingest.sync_vault_list(engine, client, get_run_logger(), max_bad_fraction=settings.max_bad_fraction)
        return await _run("sync-vaults", "Vault list synced", engine, job)


@flow(name="sync-vault-details", log_prints=True)
async def sync_vault_details(min_tvl: Decimal | None = None, max_vaults: int | None = None) -> dict[str, int]:
    """vaultDetails for open vaults (TVL >= min_tvl, highest first, at most max_vaults): metrics and history."""
    log = get_run_logger()
    settings = Settings.from_env()
    async with open_run(settings) as (engine, client):
        job = ingest.sync_vault_details(
            engine, client, log, min_tvl=min_tvl, max_vaults=max_vaults, max_bad_fraction=settings.max_bad_fraction,
            progress=lambda done, total: log.info("details: %d/%d vaults", done, total),
        )
        return await _run("sync-vault-details", "Vault details synced", engine, job)
