"""Per-window metrics of a vault's portfolio, each computed within its own window only.

Combining account value and PnL from different windows makes fake flows and spikes (hyperliquid.md
§2.1), so every figure here reads one window's two series and nothing else.

Deposits and withdrawals move account value without being performance, so the return is
time-weighted: each step's return is ΔPnL over the capital at work in the step, the previous account
value plus half the step's net flow (ΔAV − ΔPnL), the Modified Dietz rule, since the API samples too
coarsely to see when in a step money moved. Steps are chained over the window.
The drawdown is the largest fall of that chained index from its running peak.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from vault_ingest.hyperliquid.models import PortfolioWindow

ONE = Decimal(1)


@dataclass(frozen=True)
class WindowMetrics:
    volume: Decimal
    pnl: Decimal | None
    return_: Decimal | None
    max_drawdown: Decimal | None


def window_metrics(window: PortfolioWindow) -> WindowMetrics:
    pnl_by_time = dict(window.pnl)
    pairs = [(t, av, pnl_by_time[t]) for t, av in window.account_value if t in pnl_by_time]
    pnl = window.pnl[-1][1] if window.pnl else None
    if len(pairs) < 2:
        return WindowMetrics(window.volume, pnl, None, None)
    index = peak = ONE
    drawdown = Decimal(0)
    for (_, prev_av, prev_pnl), (_, cur_av, cur_pnl) in zip(pairs, pairs[1:]):
        gain = cur_pnl - prev_pnl
        capital = prev_av + ((cur_av - prev_av) - gain) / 2
        if capital > 0:  # an emptied vault has no return until it is funded again
            index = max(index * (ONE + gain / capital), Decimal(0))
        peak = max(peak, index)
        if peak > 0:
            drawdown = max(drawdown, (peak - index) / peak)
    return WindowMetrics(window.volume, pnl, index - ONE, drawdown)
