"""The fault matrix's stops, on the shipped stack under the emulator: the worker's container killed (out of
memory: every process SIGKILLed; its restart policy starts it again), and the whole project stopped and
started again (`down`, then `up`; only Postgres's volume keeps its data). One stack for both, one fault
after the other; the cells are described in tests/reliability/matrix.py, the figures in the README's
Reliability section."""

from __future__ import annotations

import pytest

from tests.reliability.matrix import failures, play, matrix_stack, record

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def shipped():
    with matrix_stack("fault-matrix-stops-") as stack:
        yield stack


def test_the_workers_container_killed_at_any_moment_never_wedges_a_deployment(shipped, record_property):
    cells, unfinished = play(shipped, shipped.kill_worker)
    record(cells, record_property)
    assert failures(shipped, "worker-sigkill", cells, unfinished) == {}


def test_the_stack_stopped_and_started_at_any_moment_never_wedges_a_deployment(shipped, record_property):
    cells, unfinished = play(shipped, shipped.restart)
    record(cells, record_property)
    assert failures(shipped, "stack-restart", cells, unfinished) == {}
