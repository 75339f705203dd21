"""P2: vaultDetails against a local server that enforces the weight budget on a scaled window.

The replay server counts weight per client in a sliding window and answers 429 past it, as Hyperliquid
does; the client runs with the same budget scaled down (120 weight per 6 s instead of 1200 per 60 s).
Target: at least 95 % of the budget used in every full window, zero 429s.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from emulator.runtime.replay import Budget, ReplayServer
from vault_ingest.hyperliquid.client import HyperliquidClient
from vault_ingest.hyperliquid.limiter import WeightLimiter

BUDGET, WINDOW, WEIGHT = 120, 6.0, 20
ADDRESS = "0x1e37a337ed460039d1b15bd3bc489de789768d5e"


async def _drive(url: str, windows: int, concurrency: int) -> None:
    limiter = WeightLimiter(BUDGET, WINDOW)
    client = HyperliquidClient(url, f"{url}/Mainnet/vaults", limiter=limiter, max_attempts=1)
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await client.vault_details(ADDRESS)

    async with client:
        await asyncio.gather(*(one() for _ in range(BUDGET // WEIGHT * (windows + 1))))


def run(cassettes: Path, windows: int = 5, concurrency: int = 4) -> dict:
    server = ReplayServer(cassettes, budget=Budget(BUDGET, WINDOW)).start()
    try:
        asyncio.run(_drive(server.url, windows, concurrency))
    finally:
        server.shutdown()
        server.server_close()
    start = server.arrivals[0][0]
    per_window = [sum(w for t, w in server.arrivals if start + k * WINDOW <= t < start + (k + 1) * WINDOW)
                  for k in range(windows)]
    return {
        "budget": f"{BUDGET} per {WINDOW:g} s",
        "windows": windows,
        "weight_per_window": per_window,
        "min_used_pct": round(100 * min(per_window) / BUDGET, 1),
        "mean_used_pct": round(100 * sum(per_window) / (BUDGET * windows), 1),
        "throttled_429": server.stats["throttled"],
    }
