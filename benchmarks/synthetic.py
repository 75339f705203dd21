"""Synthetic Hyperliquid payloads in the real shapes and sizes (hyperliquid.md §3), seeded and repeatable."""

from __future__ import annotations

import json
import random

NAMES = ["Alpha", "Delta Neutral", "ॐ Quantum", "火币策略", "🚀 moon", "HLP-like", "Basis", "Grid", "Trend", "MM"]
BASE_MS = 1_683_243_596_849


def _address(rng: random.Random) -> str:
    return "0x" + "".join(rng.choice("0123456789abcdef") for _ in range(40))


def _decimal(rng: random.Random, scale: float) -> str:
    return f"{rng.uniform(-scale, scale):.{rng.choice((6, 10, 14, 16))}f}"


def vault_list(count: int = 10_000, seed: int = 7) -> list[dict]:
    """About 1.5 KB per entry, like the real list (~15 MB for 10,000 vaults)."""
    rng = random.Random(seed)
    entries = []
    for i in range(count):
        closed = rng.random() < 0.65
        tvl = "0.0" if closed and rng.random() < 0.5 else f"{rng.lognormvariate(6, 3):.10f}"
        pnls = [[w, ["0.0"] + [_decimal(rng, 5e6) for _ in range(n - 1)]]
                for w, n in (("day", 13), ("week", 12), ("month", 13), ("allTime", rng.randint(7, 13)))]
        entries.append({
            "apr": rng.choice((0.0, rng.uniform(-1, 3))),
            "pnls": pnls,
            "summary": {
                "name": f"{rng.choice(NAMES)} {i}",
                "vaultAddress": _address(rng),
                "leader": _address(rng),
                "tvl": tvl,
                "isClosed": closed,
                "relationship": {"type": "normal"},
                "createTimeMillis": BASE_MS + rng.randint(0, 80_000_000_000),
            },
        })
    entries.sort(key=lambda e: e["summary"]["vaultAddress"])
    return entries


def vault_list_body(count: int = 10_000, seed: int = 7) -> bytes:
    return json.dumps(vault_list(count, seed), separators=(",", ":")).encode()


def next_hour(entries: list[dict], hour: int, changed: float = 0.05, seed: int = 11) -> list[dict]:
    """The list an hour later: `changed` of the vaults have a new tvl and a new last day PnL, the rest are the
    same bytes (as closed and idle vaults are in the real list)."""
    rng = random.Random(seed * 1_000_003 + hour)
    result = []
    for entry in entries:
        if rng.random() < changed:
            entry = json.loads(json.dumps(entry))
            entry["summary"]["tvl"] = f"{rng.lognormvariate(6, 3):.10f}"
            entry["pnls"][0][1][-1] = _decimal(rng, 5e6)
        result.append(entry)
    return result


def body(entries: list[dict]) -> bytes:
    return json.dumps(entries, separators=(",", ":")).encode()
