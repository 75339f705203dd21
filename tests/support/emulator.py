"""What tests of the emulator share: nothing a failed test started may outlive its module."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path


def kill_service_groups(state: Path) -> None:
    """SIGKILL every service process group `runtime.json` in `state` records; call after `emulator down`,
    for whatever a failed test or a stuck stop left behind."""
    runtime = state / "runtime.json"
    if not runtime.exists():
        return
    for entry in json.loads(runtime.read_text())["services"].values():
        if entry.get("pgid"):
            try:
                os.killpg(entry["pgid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def deploy_step(pool: str, entrypoint: str, name: str, *, before_deploy: str = "") -> str:
    """A step's `run`: the work pool (the worker may have made it already), then `flow.from_source(...).deploy()`
    from the emulator's snapshot, as a user's own deploy script would; `before_deploy` runs in the client's
    block first."""
    return f'''python - <<'PY'
import os
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from prefect.runner.storage import GitRepository
from prefect.workers.process import ProcessWorker

with get_client(sync_client=True) as client:
    try:
        client.create_work_pool(WorkPoolCreate(name="{pool}", type="process",
                                               base_job_template=ProcessWorker.get_default_base_job_template()))
    except ObjectAlreadyExists:
        pass
{before_deploy}
source = GitRepository(url=os.environ["EMULATOR_SNAPSHOT_URL"], branch=os.environ["EMULATOR_SNAPSHOT_BRANCH"])
flow.from_source(source, "{entrypoint}").deploy(name="{name}", work_pool_name="{pool}")
PY'''
