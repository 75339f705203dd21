"""The fault matrix's flow and its deploy: a run that can be held in Pending after its pull steps, or in Running.

The worker clones this file with the repository (`git_clone`, from the emulator's snapshot) and imports it
after the pull steps and before the run proposes Running (prefect/flow_engine.py `load_flow_and_flow_run`,
Prefect 3.9), so a hold at import time is a run caught Pending with its code pulled. Each deployment has a
gate directory, `$HOLD_DIR/<deployment>`: while `hold-pending` is in it the import waits, while `hold-running`
is in it the flow body waits. A run that finishes writes one row to the app database.

`python -m tests.reliability.hold_flow SOURCE BRANCH [--automation-without-pending]`, with the worker's
variables (`python -m emulator run worker -- ...`): the shipped `vault-ingest deploy` (vault_ingest.deploy.apply:
concurrency limit 1, heartbeats, the unresponsive-run automation) of one deployment per moment, and the table.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow

MOMENTS = ("scheduled", "pending", "running")
POOL = "hyperliquid-vault-ingestion"  # the shipped worker's pool (start_worker.sh's default)
UNRESPONSIVE_SECONDS = 45  # deploy's window at its minimum: heartbeats every 30 s
TABLE = "CREATE TABLE IF NOT EXISTS hold_rows (deployment text, flow_run_id uuid, started timestamptz, " \
        "finished timestamptz)"


def _gate() -> Path | None:
    """This flow run's gate directory, when imported by a flow run's engine (None when deploying)."""
    run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if not run_id or not os.environ.get("HOLD_DIR"):
        return None
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        name = client.read_deployment(run.deployment_id).name
    return Path(os.environ["HOLD_DIR"]) / name


def _hold(gate: Path, name: str) -> None:
    while (gate / name).exists():
        time.sleep(0.2)


GATE = _gate()
if GATE is not None:
    (GATE / f"pulled-{os.environ['PREFECT__FLOW_RUN_ID']}").touch()
    _hold(GATE, "hold-pending")


@flow(name="hold")
def hold() -> None:
    import psycopg
    from prefect.runtime import deployment, flow_run

    started = datetime.now(timezone.utc)
    (GATE / f"running-{flow_run.id}").touch()
    _hold(GATE, "hold-running")
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        conn.execute("INSERT INTO hold_rows VALUES (%s, %s, %s, now())", (deployment.name, flow_run.id, started))


def deploy(source: str, branch: str, *, pending_coverage: bool = True) -> None:
    import psycopg
    from prefect.client.orchestration import get_client

    from vault_ingest.deploy import DeploymentSpec, FlowDeployment, apply, unresponsive_automation, \
        UNRESPONSIVE_AUTOMATION

    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute(TABLE)
    specs = [DeploymentSpec(FlowDeployment(
        entrypoint="tests/reliability/hold_flow.py:hold", flow_name="hold", name=moment,
        cron="0 0 1 1 *",  # never due within a test (and the scheduler is off)
        description=f"the fault matrix's run caught {moment}",
    ), POOL, source, branch) for moment in MOMENTS]
    print("\n".join(apply(specs, UNRESPONSIVE_SECONDS).lines()))
    if not pending_coverage:  # the automation before issue 13: only a run that sent a heartbeat is watched
        automation = unresponsive_automation(UNRESPONSIVE_SECONDS)
        automation.trigger.after = {"prefect.flow-run.heartbeat"}
        with get_client(sync_client=True) as client:
            client.update_automation(client.read_automations_by_name(UNRESPONSIVE_AUTOMATION)[0].id, automation)
        print("automation: narrowed to runs that sent a heartbeat")


if __name__ == "__main__":
    deploy(sys.argv[1], sys.argv[2], pending_coverage="--automation-without-pending" not in sys.argv[3:])
