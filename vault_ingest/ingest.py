"""The two ingestion jobs as plain async functions: the flows and the CLI both call these.

Keeping them free of Prefect lets `vault-ingest run ...` work with no server, and keeps the flows
a thin layer that adds logging to the UI and the run's artifact.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Callable

from sqlalchemy import Engine

from vault_ingest.config import DEFAULT_MAX_BAD_FRACTION
from vault_ingest.db.reads import latest_list_snapshot, vaults_for_details
from vault_ingest.db.staging import WriteCounts
from vault_ingest.db.writer import write_vault_details, write_vault_list
from vault_ingest.errors import (
    DataQualityError, HTTPStatusError, HyperliquidError, MalformedResponseError, TransportError,
    VaultRecordError,
)
from vault_ingest.hyperliquid.client import HyperliquidClient
from vault_ingest.hyperliquid.models import VaultDetails

Progress = Callable[[int, int], None]  # (done, total)

# Details of a few hundred vaults hold ~10^5 history points: write in batches so memory stays flat
# and a crash late in a long run keeps what earlier batches landed. Each batch is one transaction.
DETAILS_BATCH = 200
# The weight budget, not the connection count, sets the pace; a few in flight hide the latency.
DETAILS_CONCURRENCY = 4
# A list snapshot with fewer than this share of the previous one's vaults is not written over it: a list
# that shrinks by half within an hour is a broken answer, not half the vaults closing.
LIST_MIN_SHARE = 0.5
FIRST_PROBLEMS = 10  # the problems a failed run names; the rest are in its log


@dataclass
class RunSummary:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    not_found: int = 0
    problems: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if k != "problems"}

    @property
    def bad(self) -> int:
        return self.skipped + self.failed + self.not_found

    def check(self, total: int, max_bad_fraction: float, what: str) -> None:
        """Raise DataQualityError when more than `max_bad_fraction` of `total` vaults were bad."""
        if total and self.bad > max_bad_fraction * total:
            first = "; ".join(self.problems[:3])
            raise DataQualityError(
                f"{what}: {self.bad} of {total} vaults were skipped, failed or not found ({self.skipped} skipped, "
                f"{self.failed} failed, {self.not_found} not found), more than the allowed "
                f"{max_bad_fraction:.0%} (INGEST_MAX_BAD_FRACTION); first: {first}", self)

    def add_writes(self, counts) -> None:
        self.new += counts.new
        self.updated += counts.updated
        self.unchanged += counts.unchanged


async def sync_vault_list(
    engine: Engine,
    client: HyperliquidClient,
    log: logging.Logger | logging.LoggerAdapter,
    *,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
) -> RunSummary:
    """Stats list -> `vaults` and list metrics, as one snapshot.

    Nothing is written, and the run fails with DataQualityError, when too many entries were skipped or when the
    list holds fewer than LIST_MIN_SHARE of the previous snapshot's vaults: a bad answer never replaces a good one.
    """
    summary, counts = await _write_list(engine, client, log, max_bad_fraction)
    summary.add_writes(counts)
    log.info("vaults: %d new, %d updated, %d unchanged", counts.new, counts.updated, counts.unchanged)
    return summary


async def _write_list(engine: Engine, client: HyperliquidClient, log,
                      max_bad_fraction: float) -> tuple[RunSummary, WriteCounts]:
    """The list is parsed as it is written (write_vault_list takes the ListParse, and gives it the stored entries
    it reads under its lock: entries the same as stored are not parsed again, and none can be stale): the checks
    run when the parse is done, inside the write's transaction, and one that fails rolls the write back."""
    previous = await asyncio.to_thread(latest_list_snapshot, engine)
    parse, observed_at = await client.vault_list()
    summary = RunSummary()

    def checked() -> int:
        summary.skipped = len(parse.errors)
        summary.problems.extend(str(error) for error in parse.errors)
        summary.check(parse.listed + summary.skipped, max_bad_fraction, "vault list not written")
        if previous and previous["observed_at"] < observed_at and parse.listed < LIST_MIN_SHARE * previous["vaults"]:
            raise DataQualityError(
                f"vault list not written: it holds {parse.listed} vaults against {previous['vaults']} in the "
                f"snapshot of {previous['observed_at'].isoformat()}; a list that shrinks below "
                f"{LIST_MIN_SHARE:.0%} of the last one is taken as a broken answer", summary)
        return summary.skipped

    try:
        counts = await asyncio.to_thread(
            partial(write_vault_list, unchanged=parse.unchanged, skipped=checked), engine, parse, observed_at)
    finally:
        for error in parse.errors:
            log.warning("skipped %s", error)
        log.info("vault list: %d vaults parsed (%d the same as stored), %d skipped, observed at %s",
                 parse.listed, len(parse.unchanged), len(parse.errors), observed_at.isoformat())
    return summary, counts


async def sync_vault_details(
    engine: Engine,
    client: HyperliquidClient,
    log: logging.Logger | logging.LoggerAdapter,
    *,
    min_tvl: Decimal | None = None,
    max_vaults: int | None = None,
    progress: Progress | None = None,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
) -> RunSummary:
    """vaultDetails for open vaults, highest TVL first, within the weight budget.

    What was fetched is written batch by batch; the run then fails with DataQualityError when more than
    `max_bad_fraction` of the vaults were skipped, failed or not found.
    """
    addresses = await asyncio.to_thread(vaults_for_details, engine, min_tvl, max_vaults)
    log.info("vault details: %d open vaults selected (min_tvl=%s, max_vaults=%s)", len(addresses), min_tvl, max_vaults)
    summary = RunSummary()
    done = 0
    for start in range(0, len(addresses), DETAILS_BATCH):
        batch = addresses[start:start + DETAILS_BATCH]
        details, not_found = await _fetch_batch(client, batch, summary, log)
        counts = await asyncio.to_thread(
            write_vault_details, engine, details, not_found, datetime.now(timezone.utc).replace(microsecond=0)
        )
        summary.add_writes(counts)
        summary.not_found += len(not_found)
        done += len(batch)
        if progress:
            progress(done, len(addresses))
    log.info("vault details: %s", summary.counts())
    if addresses and summary.failed == len(addresses):
        # Nothing got through: the API or the network is down, and the run must say so, not pass.
        raise HyperliquidError(f"all {len(addresses)} vaultDetails requests failed; first: {summary.problems[0]}")
    summary.check(len(addresses), max_bad_fraction, "vault details")
    return summary


async def _fetch_batch(client, batch, summary: RunSummary, log) -> tuple[list[VaultDetails], list[str]]:
    gate = asyncio.Semaphore(DETAILS_CONCURRENCY)

    async def one(address: str):
        async with gate:
            try:
                return address, await client.vault_details(address)
            except VaultRecordError as exc:
                summary.skipped += 1
                log.warning("skipped %s", exc)
                summary.problems.append(str(exc))
            except (HTTPStatusError, TransportError, MalformedResponseError) as exc:
                summary.failed += 1
                log.error("vault %s failed: %s", address, exc)
                summary.problems.append(f"vault {address}: {exc}")
            return address, False

    details, not_found = [], []
    for address, result in await asyncio.gather(*(one(a) for a in batch)):
        if result is None:
            log.info("vault %s does not exist (vaultDetails answered null)", address)
            summary.problems.append(f"vault {address}: not found (vaultDetails answered null)")
            not_found.append(address)
        elif result is not False:
            details.append(result)
    return details, not_found
