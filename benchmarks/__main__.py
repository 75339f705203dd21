"""`make bench`: every benchmark in one run, each as a ratio against a baseline measured beside it."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from benchmarks import p1_list_ingest, p2_budget, p3_emulate, p6_queries, p_leases
from emulator.runtime.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory(prefix="vault-bench-") as tmp:
        server = None
        admin_url = os.environ.get("DATABASE_URL")
        if not admin_url:
            server = PostgresServer(Path(tmp) / "pg").start()
            admin_url = server.url()
        try:
            results["P1 list ingest"] = p1_list_ingest.run(admin_url, Path(tmp))
            print("P1", json.dumps(results["P1 list ingest"]), flush=True)
            results["P6 dashboard queries"] = p6_queries.run(admin_url)
            print("P6", json.dumps(results["P6 dashboard queries"]), flush=True)
            results["Lease storage"] = p_leases.run(admin_url, Path(tmp))
            print("Leases", json.dumps(results["Lease storage"]), flush=True)
        finally:
            if server:
                server.stop()
    results["P2 weight budget"] = p2_budget.run(ROOT / "cassettes")
    print("P2", json.dumps(results["P2 weight budget"]), flush=True)
    results["P3 make emulate"] = p3_emulate.run()
    print("P3", json.dumps(results["P3 make emulate"]), flush=True)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
