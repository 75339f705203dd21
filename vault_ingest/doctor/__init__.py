"""`vault-ingest doctor`: check a deployment on Railway and name the fix for each thing that is wrong.

From anywhere it asks the Prefect API (`live`); inside a Railway service it also checks that service
(`local`). `run_checks` returns a `Report` (`report`); `vault_ingest.cli` prints it. `slots` finds and releases
wedged concurrency slots (`vault-ingest release-slots`).
"""

from vault_ingest.doctor.checks import DEFAULT_POOL, run_checks
from vault_ingest.doctor.report import Check, Report, Status

__all__ = ["DEFAULT_POOL", "Check", "Report", "Status", "run_checks"]
