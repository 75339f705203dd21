"""P2: vaultDetails under the weight budget, one process and two, against two independent server models.

Hyperliquid documents "an aggregated weight limit of 1200 per minute" per IP, vaultDetails weighing 20
(hyperliquid.md §4; docs rate-limits-and-user-limits), and not how it counts the minute. So two models of
the server judge every request, written here from that sentence alone and sharing no code with our limiters:
a fixed window (weight counted per minute, reset at each minute's start) and a token bucket (capacity 1200,
refilled at 1200 a minute). The replay answers 429 if either refuses, and each model's refusals are counted.

Clients: one process with the in-process limiter; one process with the budget shared through a real Prefect
server (a global concurrency limit with slot decay); two processes sharing it. Each sends vaultDetails, four
at a time as `ingest` does, for a few windows with the default budget, 1080 per window. A control, two
processes each with its own in-process limiter, shows the models refuse what exceeds the limit (its drivers
stop at their first 429).

Time is scaled down: the window is WINDOW seconds instead of 60, with the same weights and limits (1200 per
window, budget 1080): WINDOW = 20 s makes the budget 2.7 vaultDetails a second instead of 0.9. At ten a
second the Prefect path measured the latency of a loaded two-core machine (a read and an increment per
request) rather than the budget; at Hyperliquid's real pace a request has 1.1 s for them.
Target: every full window gets >= 95 % of the configured budget, and no 429s.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from emulator.runtime.postgres import free_port
from emulator.runtime.replay import ReplayServer

ROOT = Path(__file__).resolve().parent.parent
WINDOW = 20.0  # seconds standing in for Hyperliquid's minute
LIMIT = 1200  # the server's weight per window
BUDGET = 1080  # our configured budget per window (config.DEFAULT_WEIGHT_PER_MINUTE)
WEIGHT = 20
ADDRESS = "0x1e37a337ed460039d1b15bd3bc489de789768d5e"
WINDOWS = 2


class FixedWindow:
    """Weight per client within windows aligned to the server's clock, reset at each window's start."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.used: dict[tuple[str, int], int] = {}

    def admit(self, client: str, weight: int, now: float) -> bool:
        key = (client, int(now // self.window))
        if self.used.get(key, 0) + weight > self.limit:
            return False
        self.used[key] = self.used.get(key, 0) + weight
        return True


class TokenBucket:
    """Per client: `limit` tokens at most, refilled continuously at `limit` per `window`."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.rate = limit, limit / window
        self.buckets: dict[str, tuple[float, float]] = {}

    def admit(self, client: str, weight: int, now: float) -> bool:
        tokens, then = self.buckets.get(client, (float(self.limit), now))
        tokens = min(float(self.limit), tokens + (now - then) * self.rate)
        if tokens < weight:
            self.buckets[client] = (tokens, now)
            return False
        self.buckets[client] = (tokens - weight, now)
        return True


class Judges:
    """Both models see every request; either refusing means a 429. Duck-types the replay's Budget."""

    def __init__(self) -> None:
        self.models = {"fixed_window": FixedWindow(LIMIT, WINDOW), "token_bucket": TokenBucket(LIMIT, WINDOW)}
        self.refused = {name: 0 for name in self.models}
        self.clock = time.monotonic
        self._lock = threading.Lock()

    def admit(self, client: str, weight: int) -> bool:
        with self._lock:
            now = self.clock()
            verdicts = {name: model.admit(client, weight, now) for name, model in self.models.items()}
            for name, admitted in verdicts.items():
                self.refused[name] += not admitted
            return all(verdicts.values())


def run(cassettes: Path, windows: int = WINDOWS) -> dict:
    with tempfile.TemporaryDirectory(prefix="vault-bench-p2-") as tmp:
        results = {"one process, in-process limiter": _measure(cassettes, windows, ["local"], None)}
        with _prefect_server(Path(tmp)) as api_url:
            results["one process, Prefect limit"] = _measure(cassettes, windows, ["prefect"], api_url, "p2-one")
            results["two processes, Prefect limit"] = _measure(
                cassettes, windows, ["prefect", "prefect"], api_url, "p2-two")
        # The control: two processes that do not share, each spending the whole budget. The models must refuse.
        results["control: two processes, each its own limiter"] = _measure(
            cassettes, 1, ["local", "local"], None, quiet=True)
    return {"window_s": WINDOW, "server_limit": LIMIT, "budget": BUDGET, **results}


def _measure(cassettes: Path, windows: int, modes: list[str], api_url: str | None, name: str = "",
             quiet: bool = False) -> dict:
    judges = Judges()
    server = ReplayServer(cassettes, budget=judges).start()
    seconds = WINDOW * (windows + 1.5)
    try:
        drivers = [subprocess.Popen([sys.executable, "-m", "benchmarks.p2_budget", server.url, mode, str(seconds),
                                     api_url or "", name], cwd=ROOT, env=_env(api_url), start_new_session=True,
                                    stderr=subprocess.DEVNULL if quiet else None)  # the control's 429 tracebacks
                   for mode in modes]
        for driver in drivers:
            driver.wait(timeout=seconds + 120)
    finally:
        server.shutdown()
        server.server_close()
    failed = [d.returncode for d in drivers if d.returncode]
    arrivals = sorted(server.arrivals)
    start = arrivals[0][0]
    full = max(1, min(windows, int((arrivals[-1][0] - start) // WINDOW)))
    per_window = [sum(w for t, w in arrivals if start + k * WINDOW <= t < start + (k + 1) * WINDOW)
                  for k in range(full)]
    return {
        "weight_per_window": per_window,
        "min_used_pct_of_budget": round(100 * min(per_window) / BUDGET, 1),
        "mean_used_pct_of_budget": round(100 * sum(per_window) / (BUDGET * len(per_window)), 1),
        "throttled_429": server.stats["throttled"],
        "refused_by": judges.refused,
        "driver_failures": failed,
    }


def _env(api_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(DO_NOT_TRACK="1", PREFECT_HOME=tempfile.mkdtemp(prefix="vault-bench-p2-client-"))
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


class _prefect_server:
    """`prefect server start` on loopback with its own PREFECT_HOME, until /api/health answers."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=str(workdir / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   DO_NOT_TRACK="1", PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false")
        self.log = (workdir / "prefect-server.log").open("wb")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1",
             "--port", str(self.port)], env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def __enter__(self) -> str:
        url = f"http://127.0.0.1:{self.port}/api"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Prefect server exited with code {self.process.returncode}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise TimeoutError("the Prefect server did not answer /api/health within 180 s")

    def __exit__(self, *exc_info: object) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        self.log.close()


async def _drive(url: str, mode: str, seconds: float, api_url: str, name: str) -> None:
    """One client process: vaultDetails four at a time until `seconds` are up."""
    from vault_ingest.hyperliquid.client import HyperliquidClient
    from vault_ingest.hyperliquid.limiter import WeightLimiter
    from vault_ingest.hyperliquid.prefect_budget import PrefectWeightLimiter

    if mode == "prefect":
        limiter = PrefectWeightLimiter(BUDGET, WINDOW, name=name)
    else:
        limiter = WeightLimiter(BUDGET, WINDOW)
    deadline = time.monotonic() + seconds
    async with HyperliquidClient(url, f"{url}/Mainnet/vaults", limiter=limiter, max_attempts=1) as client:

        async def worker() -> None:
            while time.monotonic() < deadline:
                await client.vault_details(ADDRESS)

        await asyncio.gather(*(worker() for _ in range(4)))


if __name__ == "__main__" and len(sys.argv) == 6:
    asyncio.run(_drive(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]))
elif __name__ == "__main__":
    print(json.dumps(run(ROOT / "cassettes"), indent=2))
