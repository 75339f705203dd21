"""`vault-ingest doctor`: options and environment into `run_checks`, the report to stdout, the verdict as exit code."""

from __future__ import annotations

import argparse
import os

from vault_ingest.doctor.checks import DEFAULT_POOL, run_checks


def run(args: argparse.Namespace) -> int:
    """args has api_url, pool, auth, json and inside (True, False or None: detect); 0 when nothing failed."""
    env = os.environ
    report = run_checks(
        args.api_url or env.get("PREFECT_API_URL", ""),
        pool=args.pool or env.get("PREFECT_WORK_POOL") or DEFAULT_POOL,
        auth=args.auth or env.get("PREFECT_API_AUTH_STRING") or None,
        inside_service=args.inside,
    )
    print(report.to_json() if args.json else report.text())
    return 0 if report.ok else 1
