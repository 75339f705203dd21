"""P1: parse + upsert of a 10,000-vault list against a raw COPY of the same rows, and peak RSS.

Each measured side runs in a fresh subprocess so its peak RSS is its own. Target: ratio <= 1.5,
peak RSS <= 250 MB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psycopg

VAULT_COLUMNS = ("address", "name", "leader", "created_at", "is_closed", "relationship", "first_seen", "last_seen")
METRIC_COLUMNS = ("vault_address", "observed_at", "tvl", "apr", "pnl_day", "pnl_week", "pnl_month", "pnl_all_time")


def _fresh(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    from vault_ingest.db.migrate import upgrade
    upgrade(url)
    return url


def measure_ingest(body_path: str, url: str) -> dict:
    """The real path: bytes -> parse_vault_list -> write_vault_list."""
    from datetime import datetime, timezone

    from vault_ingest.db.engine import make_engine
    from vault_ingest.db.writer import write_vault_list
    from vault_ingest.hyperliquid.vault_list import parse_vault_list

    body = Path(body_path).read_bytes()
    engine = make_engine(url)
    with engine.connect():
        pass  # connect before the clock: both sides start connected
    start = time.perf_counter()
    vaults, errors = parse_vault_list(body)
    counts = write_vault_list(engine, vaults, datetime(2026, 1, 1, tzinfo=timezone.utc))
    return {"seconds": time.perf_counter() - start, "new": counts.new, "errors": len(errors)}


def measure_copy(body_path: str, url: str) -> dict:
    """The floor: the same rows, already built, COPYed straight into the same tables."""
    from datetime import datetime, timezone

    from vault_ingest.hyperliquid.vault_list import parse_vault_list

    vaults, _ = parse_vault_list(Path(body_path).read_bytes())
    seen = datetime(2026, 1, 1, tzinfo=timezone.utc)
    vault_rows = [(v.address, v.name, v.leader, v.created_at, v.is_closed, v.relationship.type, seen, seen)
                  for v in vaults]
    metric_rows = [(v.address, seen, v.tvl, v.apr, v.pnl.get("day"), v.pnl.get("week"), v.pnl.get("month"),
                    v.pnl.get("allTime")) for v in vaults]
    with psycopg.connect(url) as conn:
        start = time.perf_counter()
        with conn.cursor() as cur:
            for table, columns, rows in (("vaults", VAULT_COLUMNS, vault_rows),
                                         ("vault_metrics", METRIC_COLUMNS, metric_rows)):
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
        conn.commit()
        return {"seconds": time.perf_counter() - start, "new": len(vault_rows)}


def _child(side: str, body_path: str, url: str) -> dict:
    code = (
        "import json, resource, sys; from benchmarks.p1_list_ingest import measure_" + side + " as m; "
        "r = m(sys.argv[1], sys.argv[2]); "
        "r['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; print(json.dumps(r))"
    )
    out = subprocess.run([sys.executable, "-c", code, body_path, url], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(admin_url: str, workdir: Path, repeats: int = 3) -> dict:
    from benchmarks.synthetic import vault_list_body

    body = vault_list_body(10_000)
    body_path = workdir / "vaults.json"
    body_path.write_bytes(body)
    ingest, copy = [], []
    for i in range(repeats):  # interleaved so drift on the machine hits both sides alike
        ingest.append(_child("ingest", str(body_path), _fresh(admin_url, f"bench_p1_ingest_{i}")))
        copy.append(_child("copy", str(body_path), _fresh(admin_url, f"bench_p1_copy_{i}")))
    best_ingest = min(r["seconds"] for r in ingest)
    best_copy = min(r["seconds"] for r in copy)
    return {
        "vaults": ingest[0]["new"],
        "json_mb": round(len(body) / 1e6, 1),
        "ingest_s": round(best_ingest, 3),
        "copy_s": round(best_copy, 3),
        "ratio": round(best_ingest / best_copy, 2),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in ingest), 1),
    }
