"""`make bench`: every benchmark in one run, each as a ratio against a baseline measured beside it.

`python -m benchmarks P3cold` (or P1, P2, P3) runs only those; latest.json keeps the others' last figures.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks import p1_list_ingest, p2_budget, p3_cold, p3_emulate, p6_queries, p_leases
from emulator.runtime.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent


NAMES = ("P1", "P6", "Leases", "P2", "P3", "P3cold")


def main(only: list[str]) -> None:
    unknown = sorted(set(only) - set(NAMES))
    if unknown:
        raise SystemExit(f"no benchmark {unknown[0]!r}; the benchmarks: {', '.join(NAMES)}")

    def wanted(name: str) -> bool:
        return not only or name in only

    out = ROOT / "benchmarks" / "results"
    latest = out / "latest.json"
    results = json.loads(latest.read_text()) if only and latest.is_file() else {}
    if wanted("P1") or wanted("P6") or wanted("Leases"):
        with tempfile.TemporaryDirectory(prefix="vault-bench-") as tmp:
            server = None
            admin_url = os.environ.get("DATABASE_URL")
            if not admin_url:
                server = PostgresServer(Path(tmp) / "pg").start()
                admin_url = server.url()
            try:
                if wanted("P1"):
                    results["P1 list ingest"] = p1_list_ingest.run(admin_url, Path(tmp))
                    print("P1", json.dumps(results["P1 list ingest"]), flush=True)
                if wanted("P6"):
                    results["P6 dashboard queries"] = p6_queries.run(admin_url)
                    print("P6", json.dumps(results["P6 dashboard queries"]), flush=True)
                if wanted("Leases"):
                    results["Lease storage"] = p_leases.run(admin_url, Path(tmp))
                    print("Leases", json.dumps(results["Lease storage"]), flush=True)
            finally:
                if server:
                    server.stop()
    if wanted("P2"):
        results["P2 weight budget"] = p2_budget.run(ROOT / "cassettes")
        print("P2", json.dumps(results["P2 weight budget"]), flush=True)
    if wanted("P3"):
        results["P3 make emulate"] = p3_emulate.run()
        print("P3", json.dumps(results["P3 make emulate"]), flush=True)
    if wanted("P3cold"):
        results["P3 cold clone"] = p3_cold.run()
        print("P3cold", json.dumps(results["P3 cold clone"]), flush=True)
    out.mkdir(exist_ok=True)
    latest.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
