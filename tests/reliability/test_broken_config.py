"""The fault matrix on Prefect's defaults, to show why the shipped configuration is needed: web runs
`prefect server start` (concurrency leases in memory: every new server has none) and the automation watches
only runs that sent a heartbeat, as `deploy` kept it before issue 13. A run caught Pending fails under every
fault, as issue 13 found on a real stack; after a stop and start of the whole stack the deployment is wedged,
`vault-ingest doctor` finds it and `vault-ingest release-slots --apply` frees it. One stack per fault; these
wait out their deadlines, so only `make test-reliability` runs them."""

from __future__ import annotations

import httpx
import pytest

from tests.reliability.matrix import BOUND, failures, play, matrix_stack, record
from tests.reliability.stack import MatrixStack, Runs
from vault_ingest.doctor.client import PrefectAPI
from vault_ingest.doctor.live import check_slots
from vault_ingest.doctor.report import Status
from vault_ingest.doctor.slots import read_deployment

pytestmark = [pytest.mark.e2e, pytest.mark.broken_config, pytest.mark.timeout(1200)]

LABEL = "hold/pending"


@pytest.fixture
def prefect_defaults():
    with matrix_stack("fault-matrix-broken-", "prefect-defaults", "--automation-without-pending") as stack:
        yield stack


FAULTS = {
    "worker-sigkill": lambda stack: stack.kill_worker(),
    "worker-redeploy": lambda stack: stack.redeploy("worker"),
    "web-redeploy": lambda stack: stack.redeploy("web"),
    "stack-restart": lambda stack: stack.restart(),
}


@pytest.mark.parametrize("fault_kind", FAULTS)
def test_with_prefects_defaults_a_fault_in_pending_wedges_or_strands_runs(prefect_defaults, fault_kind,
                                                                         record_property):
    # Held in Pending through the whole fault: the automation as it was never crashes a run there.
    cells, unfinished = play(prefect_defaults, lambda: FAULTS[fault_kind](prefect_defaults), pending_hold=None)
    record(cells, record_property)
    found = failures(prefect_defaults, fault_kind, cells, unfinished)
    assert "pending" in found or any(cells["pending"].first in run for run in unfinished), found
    if fault_kind == "stack-restart":  # the wedge of issue 13: the doctor names it, release-slots frees it
        doctor_finds_and_releases(prefect_defaults, cells["pending"].following)


def release_slots(stack: MatrixStack, *args: str) -> str:
    return stack.ok("run", "worker", "--", "vault-ingest", "release-slots", LABEL, *args)


def doctor_finds_and_releases(stack: MatrixStack, waiting_run: str) -> None:
    transport = httpx.HTTPTransport(verify=str(stack.state / "tls" / "edge.crt"))
    with PrefectAPI(stack.status()["api_url"], None, transport=transport) as api:
        check = check_slots(api, LABEL, read_deployment(api, LABEL))
        assert check.status is Status.FAIL, check
        assert "silent for" in check.detail and "its worker is gone" in check.detail
        assert "1 run(s) waiting in AwaitingConcurrencySlot" in check.detail
        assert f"vault-ingest release-slots {LABEL} --apply" in check.fix

    runs = Runs(stack)
    dry = release_slots(stack)
    assert "would mark run" in dry and "dry run: nothing changed" in dry
    assert runs.state(waiting_run) == "SCHEDULED"  # still waiting: the dry run touched nothing

    applied = release_slots(stack, "--apply")
    assert "done: mark run" in applied and "Crashed" in applied
    assert runs.wait_terminal([waiting_run], timeout=BOUND)[waiting_run][0] == "COMPLETED"
    assert release_slots(stack).splitlines()[-1].startswith("nothing to release")
