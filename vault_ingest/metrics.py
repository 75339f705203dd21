"""Returns and drawdown of a vault from its account value and PnL, in one window or one stitched series.

Combining account value and PnL from different windows makes fake flows and spikes (hyperliquid.md §2.1), so
every figure reads points whose PnL shares one origin: one portfolio window, or a `history.Series`.

The method, a time-weighted return (TWR), so that deposits and withdrawals are not performance:
- A step runs from one point to the next. Its gain is ΔPnL; its net flow is ΔAV − ΔPnL (money in or out).
- The capital at work in a step is the previous account value plus half the net flow (the Modified Dietz
  rule: the API samples too coarsely to see when in a step money moved). Its return is gain / capital, never
  below −100 %.
- The first point with capital (account value > 0) is the base. A step that starts with no capital has no
  return: a vault's first deposit arrives together with PnL (HLP Strategy B's `allTime` goes from 0 to 28,881
  with a PnL of +18,604 in one step), and nothing says what capital earned it.
- The return index chains the steps: 1 at the base, times (1 + return) each step.
- A wipe-out (the index reaches 0) ends an epoch: its drawdown is 100 %. When capital arrives again (a
  recapitalisation) a new epoch starts at index 1, because the new money did not lose the old; the return
  reported is that of the latest epoch, from its base (`since`).
- The maximum drawdown is the largest fall of the index from its running peak, over every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Iterable

from vault_ingest.hyperliquid.models import PortfolioWindow

ONE = Decimal(1)
ZERO = Decimal(0)


@dataclass(frozen=True)
class Performance:
    return_: Decimal | None  # of the latest epoch, from `since`; None without two points and capital
    max_drawdown: Decimal | None  # 0..1, over every epoch
    since: datetime | None  # the base point of the latest epoch


@dataclass(frozen=True)
class WindowMetrics:
    volume: Decimal
    pnl: Decimal | None
    return_: Decimal | None
    max_drawdown: Decimal | None


def performance(points: Iterable[tuple[datetime, Decimal, Decimal]]) -> Performance:
    """TWR and max drawdown of (time, account value, PnL from one origin) points in time order."""
    index = peak = None  # None until the first point with capital
    since = None
    drawdown = ZERO
    prev = None
    for ts, av, pnl in points:
        if index is None or index == 0:
            if av > 0:  # the base: the first point with capital, or a recapitalisation after a wipe-out
                index = peak = ONE
                since = ts
        elif prev is not None and prev[1] > 0:
            gain = pnl - prev[2]
            capital = prev[1] + ((av - prev[1]) - gain) / 2
            if capital > 0:  # all money out within the step leaves nothing to measure against
                index = index * max(ONE + gain / capital, ZERO)
            peak = max(peak, index)
            drawdown = max(drawdown, (peak - index) / peak)
        prev = (ts, av, pnl)
    if index is None:
        return Performance(None, None, None)
    return Performance(index - ONE, drawdown, since)


def window_metrics(window: PortfolioWindow) -> WindowMetrics:
    """Volume, last PnL, return and drawdown of one portfolio window."""
    pnl_by_time = dict(window.pnl)
    points = [(t, av, pnl_by_time[t]) for t, av in window.account_value if t in pnl_by_time]
    pnl = window.pnl[-1][1] if window.pnl else None
    perf = performance(points) if len(points) >= 2 else Performance(None, None, None)
    return WindowMetrics(window.volume, pnl, perf.return_, perf.max_drawdown)
