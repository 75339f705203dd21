"""`vault-ingest`: a thin command line over the library. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import sys

from vault_ingest.errors import VaultIngestError


def _cmd_serve(args: argparse.Namespace) -> int:
    from vault_ingest import serve

    return serve.main(args.extra)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vault-ingest", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve_p = sub.add_parser("serve", help="start the Prefect server as Railway's web service")
    serve_p.add_argument("extra", nargs=argparse.REMAINDER, help="passed on to `prefect server start`")
    serve_p.set_defaults(func=_cmd_serve)
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
