"""Model objects for writer tests, built directly: each test states only the fields it is about."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from vault_ingest.hyperliquid.models import PERIODS, PortfolioWindow, Relationship, VaultDetails, VaultSummary

T0 = datetime(2025, 12, 30, 12, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


def address(n: int) -> str:
    return f"0x{n:040x}"


def summary(n: int, **changes) -> VaultSummary:
    base = VaultSummary(
        address=address(n),
        name=f"Vault {n}",
        leader=address(10_000 + n),
        tvl=Decimal(1000 * n) + Decimal("0.5"),
        is_closed=False,
        relationship=Relationship("normal"),
        created_at=datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(days=n),
        apr=Decimal("0.12"),
        pnl={"day": Decimal("1.5"), "week": Decimal("-2.25"), "month": Decimal(10), "allTime": Decimal("100.125")},
    )
    return replace(base, **changes)


def window(end: datetime, account_values: list[str], pnls: list[str], volume: str = "1000") -> PortfolioWindow:
    """Points two hours apart ending at `end`, account value and PnL at the same timestamps."""
    times = [end - timedelta(hours=2 * (len(account_values) - 1 - i)) for i in range(len(account_values))]
    return PortfolioWindow(
        account_value=tuple(zip(times, map(Decimal, account_values))),
        pnl=tuple(zip(times, map(Decimal, pnls))),
        volume=Decimal(volume),
    )


def portfolio(end: datetime = T0) -> dict[str, PortfolioWindow]:
    """All eight periods with the same three points: a 10% gain, then a 5% loss."""
    return {p: window(end, ["100", "110", "104.5"], ["0.0", "10", "4.5"]) for p in PERIODS}


def details(n: int, **changes) -> VaultDetails:
    base = VaultDetails(
        address=address(n),
        name=f"Vault {n}",
        leader=address(10_000 + n),
        description=f"the strategy of vault {n}",
        is_closed=False,
        relationship=Relationship("normal"),
        allow_deposits=True,
        apr=Decimal("0.12"),
        leader_fraction=Decimal("0.05"),
        leader_commission=Decimal("0.1"),
        max_distributable=Decimal("1234.5"),
        max_withdrawable=Decimal("1000.25"),
        followers_listed=42,
        portfolio=portfolio(),
    )
    return replace(base, **changes)
