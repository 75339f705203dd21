"""What a run needs, built from Settings: the app database (migrated) and a Hyperliquid client."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from vault_ingest.config import Settings
from vault_ingest.db.engine import make_engine
from vault_ingest.db.migrate import upgrade
from vault_ingest.errors import StorageError
from vault_ingest.hyperliquid.client import HyperliquidClient
from vault_ingest.hyperliquid.limiter import Limiter, shared_limiter
from vault_ingest.hyperliquid.prefect_budget import PrefectWeightLimiter


def migrated_engine(database_url: str | None) -> tuple[Engine, str]:
    """An engine on the app database, migrated to the latest revision (idempotent, so every run does it)."""
    engine = make_engine(database_url)
    try:
        return engine, upgrade(engine)
    except OperationalError as exc:
        engine.dispose()
        where = engine.url.render_as_string(hide_password=True)
        raise StorageError(f"cannot reach the app database {where} (DATABASE_URL): {exc.orig}") from None


def weight_limiter(settings: Settings) -> Limiter:
    """The budget shared through the Prefect server when there is one, else this process's own."""
    if settings.rate_limit == "prefect":
        return PrefectWeightLimiter(settings.weight_per_minute, settings.weight_window, name=settings.rate_limit_name)
    return shared_limiter(settings.weight_per_minute, settings.weight_window)


@asynccontextmanager
async def open_run(settings: Settings) -> AsyncIterator[tuple[Engine, HyperliquidClient]]:
    engine, _ = migrated_engine(settings.database_url)
    try:
        client = HyperliquidClient(
            settings.api_url, settings.stats_url, limiter=weight_limiter(settings),
            breaker_threshold=settings.breaker_threshold,
        )
        async with client:
            yield engine, client
    finally:
        engine.dispose()
