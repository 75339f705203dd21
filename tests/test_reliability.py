"""The fault matrix: a stop, crash or redeploy at any moment of a run never wedges its deployment.

Moments: the run is Scheduled, Pending after its pull steps, or Running. Faults: the worker's process tree
SIGKILLed (Railway's redeploy with 0 s draining, an out-of-memory kill), web restarted with a fresh filesystem
(a redeploy of web), or both at once (the whole stack stopped and started). Each cell has its own deployment
(concurrency limit 1). After the fault the next run of the deployment must complete within BOUND seconds,
every run must end (none left Pending or Running), a run that survived the fault completes, and the app table
holds exactly one row per completed run, none overlapping: nothing lost, nothing doubled.

The shipped configuration (`vault-ingest serve`: leases in the Prefect database; deploy's automation) passes
every cell. Prefect's defaults with the old automation (leases in memory, crashed only after a heartbeat) fail
the Pending row under every fault, as issue 13 found on a real stack.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import psycopg
import pytest

from tests.support.fault_stack import FaultStack
from tests.support.prefect_server import wait_until
from vault_ingest import deploy
from vault_ingest.doctor.client import PrefectAPI
from vault_ingest.doctor.live import check_slots
from vault_ingest.doctor.report import Status
from vault_ingest.doctor.slots import read_deployment

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]  # the broken cells wait out their deadline

UNRESPONSIVE_SECONDS = 45  # deploy's window, at its minimum: heartbeats every 30 s
# From the end of a fault to the next run Completed: the dead run is Crashed after the window (plus the
# triggers service's 5 s loop), the next run gets the slot at its next try (1 s here) and runs. A deadline, not
# a measure: on a machine shared by six test sessions one run took 60-90 s from Pending to Completed, and in
# the Scheduled cells the next run waits for the first. The measured times are in the README.
BOUND = UNRESPONSIVE_SECONDS + 255
MOMENTS = ["scheduled", "pending", "running"]
MEMORY = "prefect.server.concurrency.lease_storage.memory"
FILESYSTEM = "prefect.server.concurrency.lease_storage.filesystem"
FAULTS = ["worker-sigkill", "web-restart", "stack-restart"]


def automation(*, covers_pending: bool) -> dict:
    shipped = deploy.unresponsive_automation(UNRESPONSIVE_SECONDS)
    if not covers_pending:  # what deploy kept before issue 13: only runs that had sent a heartbeat
        shipped.trigger.after = {"prefect.flow-run.heartbeat"}
    return shipped.model_dump(mode="json")


def create_database(admin_url: str) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{admin_url.rpartition('/')[0]}/{name}"


def fault_stack(request, name: str, *, shipped: bool, covers_pending: bool | None = None,
                lease_storage: str = MEMORY):
    admin_url = request.getfixturevalue("postgres_admin_url")
    stack = FaultStack(
        workdir=request.getfixturevalue("tmp_path_factory").mktemp(name),
        prefect_database_url=create_database(admin_url),
        app_database_url=create_database(admin_url),
        database_leases=shipped,
        lease_storage=lease_storage,
    )
    request.addfinalizer(stack.stop)
    stack.start_web()
    stack.setup(automation(covers_pending=shipped if covers_pending is None else covers_pending))
    stack.start_worker()
    return stack


@pytest.fixture(scope="module")
def shipped(request):
    """`vault-ingest serve` (leases in the Prefect database) and deploy's automation."""
    return fault_stack(request, "shipped", shipped=True)


@pytest.fixture(scope="module")
def prefect_defaults(request):
    """`prefect server start` (leases in memory) and the automation as it was: crashed after a heartbeat only."""
    return fault_stack(request, "prefect-defaults", shipped=False)


def running_marker(gate):
    return lambda: any(gate.glob("running-*"))


def fault(stack: FaultStack, kind: str, *, before_worker=lambda: None) -> None:
    """Apply `kind`; `before_worker` runs once web is back, before the worker is (the pull step's gate)."""
    if kind in ("worker-sigkill", "stack-restart"):
        stack.kill_worker()
    if kind in ("web-restart", "stack-restart"):
        stack.stop_web()
        stack.start_web()
    before_worker()
    if stack.worker is None:
        stack.start_worker()


def play(stack: FaultStack, moment: str, kind: str) -> dict:
    """One cell: a run caught at `moment`, the fault, then the next run. What happened, for the assertions."""
    cell = f"{moment}-{kind}"
    deployment = stack.deploy_cell(cell)
    gate = stack.hold_dir / cell
    if moment == "scheduled":
        first = stack.create_run(deployment, delay=8)  # Scheduled, due soon, when the fault hits
        if kind == "worker-sigkill":
            stack.kill_worker()
            time.sleep(10)  # past its time, with no worker: Late
            stack.start_worker()
        else:
            fault(stack, kind)
    elif moment == "pending":
        (gate / "hold-pending").touch()
        first = stack.create_run(deployment)
        stack.wait_for(gate / "pulled", timeout=120, what="the first run's pull steps")
        fault(stack, kind, before_worker=lambda: (gate / "hold-pending").unlink())
    else:
        (gate / "hold-running").touch()
        first = stack.create_run(deployment)
        wait_until(running_marker(gate), timeout=120, what="the first run's flow to start")
        fault(stack, kind, before_worker=lambda: (gate / "hold-running").unlink())
    recovered = time.monotonic()
    following = stack.create_run(deployment)
    following_state = stack.wait_terminal(following, timeout=BOUND)
    seconds = time.monotonic() - recovered
    first_state = stack.wait_terminal(first, timeout=max(5.0, BOUND - seconds))
    completed = {run for run, state in ((first, first_state), (following, following_state)) if state == "COMPLETED"}
    return {
        "following_id": following,
        "first_events": stack.events(first),
        "first": first_state,
        "first_message": stack.run(first)["state"].get("message") or "",
        "following": following_state,
        "seconds": seconds,
        "rows": stack.rows(cell),
        "completed": completed,
    }


def failures(stack: FaultStack, moment: str, fault_kind: str, record_property) -> tuple[list[str], dict]:
    """What went wrong in one cell, in words (empty when the deployment came through), and what happened."""
    outcome = play(stack, moment, fault_kind)
    record_property("seconds_to_next_completed", round(outcome["seconds"]))
    killed = fault_kind != "web-restart" and moment != "scheduled"
    expected_first = "CRASHED" if killed else "COMPLETED"
    found = []
    if outcome["following"] != "COMPLETED":
        found.append(f"the next run is {outcome['following']} after {BOUND} s")
    if outcome["first"] != expected_first:
        found.append(f"the run caught by the fault is {outcome['first']}, not {expected_first}")
    rows = outcome["rows"]
    if {row[0] for row in rows} != outcome["completed"] or len(rows) != len(outcome["completed"]):
        found.append(f"rows {[row[0] for row in rows]} are not one per completed run {outcome['completed']}")
    if any(later[1] < earlier[2] for earlier, later in zip(rows, rows[1:])):
        found.append("two runs of the deployment overlapped")
    print(f"{moment} x {fault_kind}: {round(outcome['seconds'])} s to the next run's end; "
          f"events of the run caught: {outcome['first_events']}; {found or 'fine'}")
    return found, outcome


@pytest.mark.parametrize("fault_kind", FAULTS)
@pytest.mark.parametrize("moment", MOMENTS)
def test_a_fault_at_any_moment_never_wedges_the_deployment(shipped, moment, fault_kind, record_property):
    assert failures(shipped, moment, fault_kind, record_property)[0] == []


@pytest.mark.broken_config
@pytest.mark.parametrize("fault_kind", FAULTS)
def test_with_prefects_defaults_a_fault_in_pending_wedges_or_strands_runs(prefect_defaults, fault_kind,
                                                                         record_property):
    found, outcome = failures(prefect_defaults, "pending", fault_kind, record_property)
    assert found, f"Prefect's defaults came through {fault_kind} in Pending"
    if fault_kind == "stack-restart":  # the wedge of issue 13: the doctor names it, release-slots frees it
        doctor_finds_and_releases(prefect_defaults, "hold/pending-stack-restart", outcome["following_id"])


def release_slots(stack: FaultStack, label: str, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "vault_ingest.cli", "release-slots", label, *args],
                            env=stack.client_env(stack.workdir / "cli-home"), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def doctor_finds_and_releases(stack: FaultStack, label: str, waiting_run: str) -> None:
    with PrefectAPI(stack.api_url, None) as api:
        deployment = read_deployment(api, label)
        check = check_slots(api, label, deployment)
        assert check.status is Status.FAIL, check
        assert "silent for" in check.detail and "its worker is gone" in check.detail
        assert "1 run(s) waiting in AwaitingConcurrencySlot" in check.detail
        assert f"vault-ingest release-slots {label} --apply" in check.fix

    dry = release_slots(stack, label)
    assert "would mark run" in dry and "dry run: nothing changed" in dry
    assert stack.state(waiting_run) == "SCHEDULED"  # still waiting: the dry run touched nothing

    applied = release_slots(stack, label, "--apply")
    assert "done: mark run" in applied and "Crashed" in applied
    assert stack.wait_terminal(waiting_run, timeout=BOUND) == "COMPLETED"
    assert release_slots(stack, label).splitlines()[-1].startswith("nothing to release")


@pytest.fixture(scope="module", params=[MEMORY, FILESYSTEM], ids=["memory", "filesystem-off-volume"])
def automation_only(request):
    """deploy's automation, but the leases where a restart or a redeploy loses them: in memory, or in a
    PREFECT_HOME that each start of web gets fresh (Railway's filesystem without a volume)."""
    return fault_stack(request, f"automation-only-{request.param_index}", shipped=False, covers_pending=True,
                       lease_storage=request.param)


@pytest.mark.broken_config
@pytest.mark.xfail(strict=False, reason="not deterministic: of 4 runs, 3 Cancelled the caught run as the source "
                                       "predicts and 1 let it complete; the cause is not found yet")
def test_the_automation_alone_loses_a_live_run_when_web_restarts(automation_only, record_property):
    """Why the leases must survive too: a run in Pending when web restarts has lost its lease, and its move to
    Running finds the slot it holds taken (by itself) and is Cancelled (ValidateDeploymentConcurrencyAtRunning,
    prefect/server/orchestration/core_policy.py). The deployment goes on; that run's work is lost."""
    found, outcome = failures(automation_only, "pending", "web-restart", record_property)
    assert outcome["following"] == "COMPLETED"
    assert found == ["the run caught by the fault is CANCELLED, not COMPLETED"], found
    assert "Deployment concurrency slot lost during provisioning" in outcome["first_message"]
