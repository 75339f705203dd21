"""One history series per vault from vaultDetails' `portfolio`, with a meaning that never changes across fetches.

What the real API does (read from ../shared/hyperliquid-samples/info_portfolio_vault_0x31ca83_hlp_child.json,
hyperliquid.md "Portfolio windows over time"):
- each window's `pnlHistory` is cumulative from that window's own first point, so the same timestamp reads a
  different PnL in `day`, `week` and `month`, and again after the window rolls; differences of PnL between two
  points of one window do not depend on the window;
- `allTime` starts at the vault's first point, so its PnL is since inception: the one origin that never moves;
- the last point of every window has the same timestamp, the request time ("now"), not a regular sample;
- the perp windows repeat their plain twins when the vault trades perps only (day/week/month in the sample),
  while `perpAllTime` has its own origin and its own points.

So a series here is: the regular points of every window, PnL moved onto the `allTime` origin through a timestamp
the window shares with `allTime` (its "now" point at least), one point per timestamp (the finest window wins:
windows disagree in the last float digits), and the "now" point apart. `perp` windows that equal their plain twin
add nothing and are left out; the perp series exists only when some perp window differs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from vault_ingest.hyperliquid.models import PortfolioWindow

log = logging.getLogger(__name__)

PLAIN = ("day", "week", "month", "allTime")  # finest first: it wins a timestamp that several windows share
PERP = ("perpDay", "perpWeek", "perpMonth", "perpAllTime")
SERIES = {"all": PLAIN, "perp": PERP}


@dataclass(frozen=True)
class Point:
    ts: datetime
    account_value: Decimal
    pnl: Decimal  # since the series' origin, the first point of its all-time window


@dataclass(frozen=True)
class Series:
    name: str  # "all" or "perp"
    points: tuple[Point, ...]  # regular samples, ascending, one per timestamp
    now: Point | None  # the request-time point: replaced by every fetch, never a regular sample


def _pairs(window: PortfolioWindow) -> dict[datetime, tuple[Decimal, Decimal]]:
    pnl = dict(window.pnl)
    return {ts: (av, pnl[ts]) for ts, av in window.account_value if ts in pnl}


def stitch(portfolio: dict[str, PortfolioWindow], windows: tuple[str, ...], name: str, address: str = "?") -> Series | None:
    """The windows (finest first, the all-time one last) as one series; None without an all-time window."""
    *finer, origin = windows
    if origin not in portfolio or not portfolio[origin].account_value:
        return None
    reference = _pairs(portfolio[origin])
    if not reference:
        return None
    now_ts = max(reference)
    now = Point(now_ts, *reference[now_ts])
    points: dict[datetime, Point] = {}
    for window in (*finer, origin):
        if window not in portfolio:
            continue
        pairs = _pairs(portfolio[window])
        shared = sorted(set(pairs) & set(reference))
        if not shared:
            log.warning("vault %s: %s shares no timestamp with %s, so its PnL has no origin; left out",
                        address, window, origin)
            continue
        anchor = shared[-1]
        offset = reference[anchor][1] - pairs[anchor][1]
        last = max(pairs)
        for ts, (av, pnl) in pairs.items():
            if ts != last and ts != now_ts and ts not in points:  # a window's last point is "now"
                points[ts] = Point(ts, av, pnl + offset)
    return Series(name, tuple(points[ts] for ts in sorted(points)), now)


def vault_series(portfolio: dict[str, PortfolioWindow], address: str = "?") -> list[Series]:
    """The `all` series, and the `perp` one when a perp window says something its plain twin does not."""
    result = []
    plain = stitch(portfolio, PLAIN, "all", address)
    if plain:
        result.append(plain)
    differing = tuple(p for p, twin in zip(PERP, PLAIN) if p in portfolio and portfolio[p] != portfolio.get(twin))
    if differing and PERP[-1] in portfolio:
        # a perp window equal to its twin is left out: its points are the plain ones on the perp origin
        perp = stitch(portfolio, tuple(p for p in PERP if p in differing or p == PERP[-1]), "perp", address)
        if perp:
            result.append(perp)
    return result
