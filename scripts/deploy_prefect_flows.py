#!/usr/bin/env python3
"""Deploy this repo's flows to a Prefect process work pool, the code cloned from git by each flow run.

    python scripts/deploy_prefect_flows.py --work-pool NAME [--source GIT_URL] [--ref REF] [--dry-run]

The same as `vault-ingest deploy`; the work is in vault_ingest/deploy.py. Needs PREFECT_API_URL (and
PREFECT_API_AUTH_STRING when the server uses basic auth) unless --dry-run.
"""

import sys
from pathlib import Path

# Runnable from a checkout whose package is not installed in this Python (Prefect still has to be).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vault_ingest.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["deploy", *sys.argv[1:]]))
