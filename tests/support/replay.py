"""A replay server on loopback for tests that run flows or the CLI as the worker would."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from emulator.runtime.replay import ReplayServer

CASSETTES = Path(__file__).resolve().parents[2] / "cassettes"


@contextmanager
def replay_server(**kwargs):
    server = ReplayServer(CASSETTES, **kwargs).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def hyperliquid_env(server: ReplayServer) -> dict[str, str]:
    return {"HYPERLIQUID_API_URL": server.url, "HYPERLIQUID_STATS_URL": f"{server.url}/Mainnet/vaults"}
