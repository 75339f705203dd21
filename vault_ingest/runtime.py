"""What a run needs, built from Settings: the app database (migrated) and a Hyperliquid client."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from sqlalchemy import Engine

from vault_ingest.config import Settings
from vault_ingest.db.engine import make_engine
from vault_ingest.db.migrate import upgrade
from vault_ingest.hyperliquid.client import HyperliquidClient
from vault_ingest.hyperliquid.limiter import shared_limiter


@asynccontextmanager
async def open_run(settings: Settings) -> AsyncIterator[tuple[Engine, HyperliquidClient]]:
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine)  # idempotent, so every run can make sure the tables exist
        client = HyperliquidClient(
            settings.api_url, settings.stats_url, limiter=shared_limiter(settings.weight_per_minute)
        )
        async with client:
            yield engine, client
    finally:
        engine.dispose()
