"""A flow for the emulator's end-to-end test of worker replicas: each execution leaves one file.

`python tests/emulator/exactly_once_flow.py SOURCE POOL` deploys it (PREFECT_API_URL from the environment,
as `python -m emulator run worker -- ...` gives it), its code pulled from SOURCE like the project's flows.
"""

import os
import sys
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run

DEPLOYMENT = "record-execution/burst"


@flow(name="record-execution")
def record_execution(folder: str) -> str:
    replica = os.environ["RAILWAY_REPLICA_ID"]  # inherited from the worker replica that ran it
    (Path(folder) / f"{flow_run.id}.{replica}.{os.getpid()}").touch(exist_ok=False)
    return replica


if __name__ == "__main__":
    from prefect.runner.storage import GitRepository

    source, pool = sys.argv[1:]
    remote = record_execution.from_source(GitRepository(url=source, branch="main"),
                                          entrypoint="tests/emulator/exactly_once_flow.py:record_execution")
    print(remote.to_deployment(name="burst", work_pool_name=pool).apply())
