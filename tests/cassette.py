"""Replay the Hyperliquid cassettes in cassettes/ over real httpx: `with use_cassette("vault_details") as cassette:`.

Replay only (a request the cassette lacks fails instead of reaching the network), matched on method, URI and body
because every info request shares one URI, and each recorded answer is played at most once, so a 429 followed by
a 200 for the same request replays in that order.
"""

from __future__ import annotations

from pathlib import Path

import vcr

CASSETTES = Path(__file__).resolve().parents[1] / "cassettes"

_vcr = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    record_mode="none",
    match_on=["method", "uri", "body"],
)


def use_cassette(name: str):
    """A context manager (or decorator) replaying `cassettes/<name>.yaml`; it yields the vcr Cassette."""
    return _vcr.use_cassette(name if name.endswith(".yaml") else f"{name}.yaml", allow_playback_repeats=False)
