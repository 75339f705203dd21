"""Fixtures for the failure-mode scenarios: stacks brought up through the emulator, a headless Chromium.

Each module brings up its stacks together at its start and stops them at its end: a module is the unit
`pytest -n 2` (with `--dist loadfile`) gives a worker, so no stack starts twice, and an idle stack, which
still costs a sixth of a core (1 s foreman and worker loops), is never left running for later modules.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.scenarios.browser import chromium
from tests.scenarios.stacks import ROOT, Spec, Stack, bring_up

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def scenario_root() -> Iterator[Path]:
    # Not under pytest's basetemp: another session resets it to 0700, locking out PostgreSQL's own user.
    with tempfile.TemporaryDirectory(prefix="vault-scenarios-") as root:
        yield Path(root)


@contextmanager
def running(specs: list[Spec], root: Path) -> Iterator[dict[str, Stack]]:
    """The stacks of `specs`, started together, each in its own state dir under `root`; all stopped after."""
    stacks = [Stack(spec, root / spec.name) for spec in specs]
    try:
        results = bring_up(stacks)
        for stack in stacks:
            stack.up_result = results[stack.spec.name]
        yield {stack.spec.name: stack for stack in stacks}
    finally:
        with ThreadPoolExecutor(len(stacks)) as pool:
            list(pool.map(Stack.down, stacks))


@contextmanager
def running_one(spec: Spec, root: Path) -> Iterator[Stack]:
    """One stack whose `up` went through (services up, and the first run Completed unless not deployed)."""
    with running([spec], root) as stacks:
        stack = stacks[spec.name]
        assert stack.up_result.returncode == 0, up_output(stack)
        yield stack


def up_output(stack: Stack) -> str:
    """What `up` printed and the end of the stack's console log, for assertion messages."""
    console = stack.state / "logs" / "console.log"
    tail = console.read_text(errors="replace")[-6000:] if console.exists() else ""
    return f"{stack.up_result.stdout}\n--- console.log ---\n{tail}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def browser():
    # Per module: Playwright's sync API keeps an event loop running on this thread while it is open, and
    # any later module on the same xdist worker that calls asyncio.run() would fail.
    with chromium() as launched:
        yield launched
