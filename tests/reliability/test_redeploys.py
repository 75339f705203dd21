"""The fault matrix's pushes, on the shipped stack under the emulator: the worker redeployed with Railway's
default draining (0 s: its runs are SIGKILLed with it), and `web` redeployed (a new server on a fresh
filesystem beside the old one, then the old one stopped). One stack for both, one fault after the other; the
cells are described in tests/reliability/matrix.py, the figures in the README's Reliability section."""

from __future__ import annotations

import pytest

from tests.reliability.matrix import failures, play, matrix_stack, record

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def shipped():
    with matrix_stack("fault-matrix-redeploys-") as stack:
        yield stack


def test_a_worker_redeploy_with_the_default_draining_at_any_moment_never_wedges_a_deployment(shipped,
                                                                                            record_property):
    said = []
    cells, unfinished = play(shipped, lambda: said.append(shipped.redeploy("worker")))
    assert "SIGKILL after 0s (RAILWAY_DEPLOYMENT_DRAINING_SECONDS, Railway's default)" in said[0]
    record(cells, record_property)
    assert failures(shipped, "worker-redeploy", cells, unfinished) == {}


def test_a_web_redeploy_at_any_moment_never_wedges_a_deployment(shipped, record_property):
    cells, unfinished = play(shipped, lambda: shipped.redeploy("web"))
    record(cells, record_property)
    assert failures(shipped, "web-redeploy", cells, unfinished) == {}
