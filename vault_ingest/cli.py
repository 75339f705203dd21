"""`vault-ingest`: a thin command line over the library. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from decimal import Decimal, InvalidOperation

from vault_ingest.errors import ConfigError, VaultIngestError
from vault_ingest.worker import add_arguments as add_worker_arguments


def _cmd_serve(args: argparse.Namespace) -> int:
    from vault_ingest import serve

    return serve.main(args.extra)


def _cmd_worker(args: argparse.Namespace) -> int:
    from vault_ingest import worker

    return worker.main(args)


def _cmd_deploy(args: argparse.Namespace) -> int:
    import os

    from vault_ingest import deploy

    options = deploy.DeployOptions(
        work_pool=args.work_pool, source=args.source, ref=args.ref,
        unresponsive_seconds=deploy.unresponsive_seconds(os.environ),
    )
    if args.dry_run:
        print(json.dumps([spec.to_dict() for spec in deploy.specs_for(options)], indent=2))
        return 0
    for line in deploy.deploy(options).lines():
        print(line)
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    import os

    from vault_ingest.doctor import DEFAULT_POOL, run_checks

    env = os.environ
    report = run_checks(
        args.api_url or env.get("PREFECT_API_URL", ""),
        pool=args.pool or env.get("PREFECT_WORK_POOL") or DEFAULT_POOL,
        auth=args.auth or env.get("PREFECT_API_AUTH_STRING") or None,
        inside_service=args.inside,
    )
    print(report.to_json() if args.json else report.text())
    return 0 if report.ok else 1


def _cmd_release_slots(args: argparse.Namespace) -> int:
    import os

    from vault_ingest.doctor.client import PrefectAPI
    from vault_ingest.doctor.slots import read_deployment, release

    api_url = args.api_url or os.environ.get("PREFECT_API_URL", "")
    if not api_url:
        raise ConfigError("no API URL: pass --api-url https://<web domain>/api, or export PREFECT_API_URL")
    with PrefectAPI(api_url, args.auth or os.environ.get("PREFECT_API_AUTH_STRING") or None) as api:
        result = release(api, read_deployment(api, args.deployment), args.deployment, apply=args.apply)
    print(result.before.describe())
    if not result.actions:
        print("nothing to release: every taken slot is held by a live run")
        return 0
    for action in result.actions:
        print(("done: " if result.applied else "would ") + action)
    if not result.applied:
        print("dry run: nothing changed; rerun with --apply to do it")
    return 0


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from vault_ingest.config import Settings
    from vault_ingest.runtime import migrated_engine

    engine, revision = migrated_engine(Settings.from_env().database_url)
    engine.dispose()
    print(f"app database at revision {revision}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from vault_ingest import ingest
    from vault_ingest.config import Settings
    from vault_ingest.progress import TerminalProgress
    from vault_ingest.runtime import open_run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    log = logging.getLogger("vault_ingest")

    async def go() -> ingest.RunSummary:
        settings = Settings.from_env()
        async with open_run(settings) as (engine, client):
            if args.flow == "sync-vaults":
                return await ingest.sync_vault_list(engine, client, log, max_bad_fraction=settings.max_bad_fraction)
            return await ingest.sync_vault_details(
                engine, client, log, min_tvl=args.min_tvl, max_vaults=args.max_vaults,
                progress=TerminalProgress("vault details"), max_bad_fraction=settings.max_bad_fraction,
            )

    summary = asyncio.run(go())
    print(json.dumps(summary.counts()))
    return 0


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vault-ingest", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve_p = sub.add_parser("serve", help="start the Prefect server as Railway's web service")
    serve_p.add_argument("extra", nargs=argparse.REMAINDER, help="passed on to `prefect server start`")
    serve_p.set_defaults(func=_cmd_serve)

    worker_p = sub.add_parser("worker", help="start Prefect's process worker as Railway's worker service; on SIGTERM "
                                             "it takes no more runs and stops once its runs are done")
    add_worker_arguments(worker_p)
    worker_p.set_defaults(func=_cmd_worker)

    deploy_p = sub.add_parser("deploy", help="deploy the flows to a Prefect process work pool, code cloned from git")
    deploy_p.add_argument("--work-pool", required=True, help="process work pool, created if missing")
    deploy_p.add_argument("--source", help="git URL the worker clones (default: the current checkout's origin)")
    deploy_p.add_argument("--ref", help="branch or tag to deploy (default: the repository's default branch)")
    deploy_p.add_argument("--dry-run", action="store_true", help="print the deployments as JSON, contact nothing")
    deploy_p.set_defaults(func=_cmd_deploy)

    doctor_p = sub.add_parser("doctor", help="check the deployed server, pool, worker and runs; print each fix")
    doctor_p.add_argument("--api-url", help="the server's API, https://<web domain>/api (default: $PREFECT_API_URL)")
    doctor_p.add_argument("--pool", help="work pool (default: $PREFECT_WORK_POOL, else hyperliquid-vault-ingestion)")
    doctor_p.add_argument("--auth", help="user:password (default: $PREFECT_API_AUTH_STRING, which keeps it out of "
                                         "shell history)")
    doctor_p.add_argument("--json", action="store_true", help="print the checks as JSON")
    where = doctor_p.add_mutually_exclusive_group()
    where.add_argument("--inside", dest="inside", action="store_true", default=None,
                       help="also check this service's git and database URLs (default: if RAILWAY_SERVICE_NAME)")
    where.add_argument("--outside", dest="inside", action="store_false", default=None, help="only the API checks")
    doctor_p.set_defaults(func=_cmd_doctor)

    release_p = sub.add_parser(
        "release-slots", help="free a deployment's concurrency slot held by a run whose worker is gone (dry run "
                              "unless --apply)")
    release_p.add_argument("deployment", help="flow/deployment, e.g. sync-vaults/hourly")
    release_p.add_argument("--apply", action="store_true", help="do it; without it, only say what would be done")
    release_p.add_argument("--api-url", help="the server's API, https://<web domain>/api (default: $PREFECT_API_URL)")
    release_p.add_argument("--auth", help="user:password (default: $PREFECT_API_AUTH_STRING)")
    release_p.set_defaults(func=_cmd_release_slots)

    db_p = sub.add_parser("db", help="the app database").add_subparsers(dest="db_command", required=True)
    db_p.add_parser("upgrade", help="migrate the app database (DATABASE_URL) to the latest schema").set_defaults(
        func=_cmd_db_upgrade
    )

    run_p = sub.add_parser("run", help="run a flow in this process, without a Prefect server")
    flows = run_p.add_subparsers(dest="flow", required=True)
    flows.add_parser("sync-vaults", help="the vault list into `vaults`").set_defaults(func=_cmd_run)
    details = flows.add_parser("sync-vault-details", help="vaultDetails of open vaults into metrics and history")
    details.add_argument("--min-tvl", type=_decimal, default=None, help="only vaults with at least this TVL (USD)")
    details.add_argument("--max-vaults", type=int, default=None, help="at most this many vaults, highest TVL first")
    details.set_defaults(func=_cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VaultIngestError as exc:
        print(f"vault-ingest: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
