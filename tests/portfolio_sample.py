"""The real portfolio sample (HLP Strategy B, recorded 2025-08-22) and a later fetch of it, built as the real API rolls.

`fetch_later` builds the answer the API would give an hour after the recording (the rules are those read from the
sample itself, hyperliquid.md "Portfolio windows over time"):
- the old request-time point ("now", the last point of every window) is gone: it was never a regular sample;
- a new regular point, 50 minutes after the old "now", joins every window sampled that finely (day and week: their
  spacing is about 2 hours); month (daily spacing) and all-time (weekly) get none within the hour;
- a new "now" point ends every window, at the new request time;
- day and week roll: their oldest point falls out and their PnL restarts from the new first point (the baseline
  moves); month and all-time keep their first point, so their baselines stay;
- the perp windows change exactly as their plain twins (the vault trades perps only).
Values of the new points: 10,000 deposited and 20,000 gained by the regular point, 5,000 more gained by "now".
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "cassettes" / "samples" / "info_portfolio_vault_0x31ca83_hlp_child.json"
ADDRESS = "0x31ca8395cf837de08b24da3f660e77761dfb974b"
NOW = 1755863121304  # the response's Date header, and the last timestamp of every window
HOUR_MS = 3_600_000


def portfolio() -> list:
    return json.loads(SAMPLE.read_text())


def fetch_later(raw: list, after_ms: int = HOUR_MS) -> list:
    raw = copy.deepcopy(raw)
    now = max(w["accountValueHistory"][-1][0] for _, w in raw)
    regular, new_now = now + 50 * 60_000, now + after_ms
    for period, w in raw:
        av, pnl = w["accountValueHistory"], w["pnlHistory"]
        last_av, last_pnl = Decimal(av.pop()[1]), Decimal(pnl.pop()[1])  # the old "now" goes
        if period in ("day", "week", "perpDay", "perpWeek"):
            av.append([regular, str(last_av + 30000)])
            pnl.append([regular, str(last_pnl + 20000)])
            del av[0], pnl[0]
            base = Decimal(pnl[0][1])
            w["pnlHistory"] = pnl = [[t, str(Decimal(v) - base)] for t, v in pnl]
            av.append([new_now, str(last_av + 35000)])
            pnl.append([new_now, str(last_pnl - base + 25000)])
        else:
            av.append([new_now, str(last_av + 35000)])
            pnl.append([new_now, str(last_pnl + 25000)])
    return raw


def details_body(raw_portfolio: list, address: str = ADDRESS) -> dict:
    """A vaultDetails answer around the portfolio (the other fields as in the official docs' HLP example)."""
    return {"name": "HLP Strategy B", "vaultAddress": address, "leader": "0xdfc24b077bc1425ad1dea75bcb6f8158e10df303",
            "description": "", "portfolio": raw_portfolio, "apr": 0.00483595479523202, "followerState": None,
            "leaderFraction": 0.0, "leaderCommission": 0, "followers": [], "maxDistributable": 0.0,
            "maxWithdrawable": 0.0, "isClosed": False, "relationship": {"type": "child"}, "allowDeposits": False,
            "alwaysCloseOnWithdraw": False}
