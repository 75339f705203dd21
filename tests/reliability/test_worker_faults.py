"""The fault matrix's worker faults, on the shipped stack under the emulator: the worker's container killed
(out of memory; its restart policy starts it again), and the worker redeployed with Railway's default
draining (0 s: its runs are SIGKILLed with it). One stack for both, one fault after the other; the cells are
described in tests/reliability/matrix.py, the figures in the README's Reliability section."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.reliability.matrix import failures, play
from tests.reliability.stack import MatrixStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def shipped():
    """railway.stack.toml: `vault-ingest serve` (leases in the Prefect database), start_worker.sh, and the
    flows deployed by `vault-ingest deploy`'s code, its automation at the 45 s minimum."""
    # Not under pytest's basetemp, whose 0700 reset would lock out the user PostgreSQL runs as under root.
    with tempfile.TemporaryDirectory(prefix="fault-matrix-worker-") as root:
        stack = MatrixStack(Path(root))
        try:
            stack.up()
            stack.deploy_flows()
            yield stack
        finally:
            stack.close()


def test_the_workers_container_killed_at_any_moment_never_wedges_a_deployment(shipped, record_property):
    cells, unfinished = play(shipped, shipped.kill_worker)
    for moment, cell in cells.items():
        record_property(f"{moment}_seconds_to_next_completed", round(cell.seconds))
    assert failures(shipped, "worker-sigkill", cells, unfinished) == {}


def test_a_worker_redeploy_with_the_default_draining_at_any_moment_never_wedges_a_deployment(shipped,
                                                                                            record_property):
    said = []
    cells, unfinished = play(shipped, lambda: said.append(shipped.redeploy("worker")))
    assert "SIGKILL after 0s (RAILWAY_DEPLOYMENT_DRAINING_SECONDS, Railway's default)" in said[0]
    for moment, cell in cells.items():
        record_property(f"{moment}_seconds_to_next_completed", round(cell.seconds))
    assert failures(shipped, "worker-redeploy", cells, unfinished) == {}
