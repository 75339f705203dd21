"""The fault matrix's server faults, on the shipped stack under the emulator: `web` redeployed (a push: a new
server on a fresh filesystem beside the old one, then the old one stopped), and the whole project stopped and
started again (`down`, then `up`; only Postgres's volume keeps its data). One stack for both, one fault after
the other; the cells are described in tests/reliability/matrix.py, the figures in the README's Reliability
section."""

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
    with tempfile.TemporaryDirectory(prefix="fault-matrix-server-") as root:
        stack = MatrixStack(Path(root))
        try:
            stack.up()
            stack.deploy_flows()
            yield stack
        finally:
            stack.close()


def test_a_web_redeploy_at_any_moment_never_wedges_a_deployment(shipped, record_property):
    cells, unfinished = play(shipped, lambda: shipped.redeploy("web"))
    for moment, cell in cells.items():
        record_property(f"{moment}_seconds_to_next_completed", round(cell.seconds))
    assert failures(shipped, "web-redeploy", cells, unfinished) == {}


def test_the_stack_stopped_and_started_at_any_moment_never_wedges_a_deployment(shipped, record_property):
    cells, unfinished = play(shipped, shipped.restart)
    for moment, cell in cells.items():
        record_property(f"{moment}_seconds_to_next_completed", round(cell.seconds))
    assert failures(shipped, "stack-restart", cells, unfinished) == {}
