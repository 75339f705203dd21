"""One fault, three runs caught at once: what the fault matrix asserts of each cell.

Moments: a run Scheduled (due SCHEDULED_LEAD seconds after the fault begins), Pending with its code pulled
(held at import), Running (held in the flow). Each moment has its own deployment, concurrency limit 1, so the
three cells of a fault share one stack. After the fault the next run of each deployment must be Completed
within BOUND seconds, every run must end (none left Pending or Running), a run the fault did not kill must
complete, and the app table must hold exactly one row per completed run, none overlapping: nothing lost,
nothing doubled.
"""

from __future__ import annotations

import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from tests.reliability.hold_flow import UNRESPONSIVE_SECONDS
from tests.reliability.stack import MatrixStack, Runs
from tests.support.prefect_server import wait_until

# From the end of a fault to the next run Completed: a dead run is Crashed after the automation's window (plus
# the triggers service's 5 s loop), the next run gets the slot at its next try (1 s here) and runs. A deadline,
# not a measure: on two cores shared by five test sessions one run took 20-90 s from Pending to Completed, and
# in the Scheduled cells the next run waits for the first. The measured times are in the README.
BOUND = UNRESPONSIVE_SECONDS + 255
SCHEDULED_LEAD = 5
# A run sends no event between its last pull step and Running, so one held in Pending longer than the
# automation's window is marked Crashed while alive (then Prefect lets it run on, its slot already given back).
# A real run spends seconds there; the held one is let go within the window whether the fault is over or not
# (only a slow `web` redeploy, 30-60 s here, outlasts it).
PENDING_HOLD_SECONDS = UNRESPONSIVE_SECONDS - 20  # and the engine needs seconds more to propose Running
CRASHED_BY_AUTOMATION = f"No heartbeat for {UNRESPONSIVE_SECONDS} s"  # vault_ingest.deploy's message
WORKER_FAULTS = {"worker-sigkill", "worker-redeploy", "stack-restart"}  # the ones that kill the worker's runs


@dataclass
class Cell:
    moment: str
    first: str  # the run the fault caught
    claimed_in_fault: bool = False  # a Scheduled run a worker took during the fault
    first_state: str = ""
    first_message: str = ""
    following: str = ""
    following_state: str = ""
    seconds: float = 0.0
    events: list[str] = field(default_factory=list)


@contextmanager
def matrix_stack(prefix: str, variant: str | None = None, *deploy_args: str) -> Iterator[MatrixStack]:
    """railway.stack.toml (by default: `vault-ingest serve`, leases in the Prefect database; start_worker.sh),
    the hold flow deployed by `vault-ingest deploy`'s code with its automation at the 45 s minimum."""
    # Not under pytest's basetemp, whose 0700 reset would lock out the user PostgreSQL runs as under root.
    with tempfile.TemporaryDirectory(prefix=prefix) as root:
        stack = MatrixStack(Path(root), variant)
        try:
            stack.up()
            stack.deploy_flows(*deploy_args)
            yield stack
        finally:
            stack.close()


def catch(runs: Runs) -> dict[str, Cell]:
    """A run held Running, then one held Pending with its code pulled, caught last so that it is held as
    short a time as the fault allows."""
    gates, cells = runs.stack.gates, {}
    (gates / "pending" / "hold-pending").touch()
    (gates / "running" / "hold-running").touch()
    for moment, marker in (("running", "running"), ("pending", "pulled")):
        cells[moment] = cell = Cell(moment, runs.create(moment))
        wait_until(lambda: (gates / moment / f"{marker}-{cell.first}").exists(), timeout=240,
                   what=f"the {moment} run to be caught", interval=0.5)
    return cells


def play(stack: MatrixStack, fault: Callable[[], None], pending_hold: float | None = PENDING_HOLD_SECONDS,
         ) -> tuple[dict[str, Cell], list[str]]:
    """Catch a run at each moment, apply `fault`, start the next runs; the cells, and the runs left unended.
    `pending_hold`: let the Pending run go after this long even if the fault is not over (None: never)."""
    runs = Runs(stack)
    cells = catch(runs)
    cells["scheduled"] = Cell("scheduled", runs.create("scheduled", delay=SCHEDULED_LEAD))
    began = datetime.now(timezone.utc)
    release = threading.Timer(pending_hold or 0, (stack.gates / "pending" / "hold-pending").unlink,
                              kwargs={"missing_ok": True})
    if pending_hold is not None:
        release.start()
    fault()
    release.cancel()
    ended = datetime.now(timezone.utc)
    recovered = time.monotonic()
    runs.reconnect()  # after an `up` the edge may listen elsewhere
    (stack.gates / "pending" / "hold-pending").unlink(missing_ok=True)
    (stack.gates / "running" / "hold-running").unlink()
    for cell in cells.values():
        cell.following = runs.create(cell.moment)
    for cell in cells.values():
        cell.claimed_in_fault = cell.moment == "scheduled" and any(
            kind == "PENDING" and began <= when <= ended for kind, when in runs.states(cell.first))
    followed = runs.wait_terminal([cell.following for cell in cells.values()], timeout=BOUND)
    firsts = runs.wait_terminal([cell.first for cell in cells.values()], timeout=30)
    for cell in cells.values():
        cell.following_state, done = followed[cell.following]
        cell.seconds = done - recovered
        cell.first_state = firsts[cell.first][0]
        cell.first_message = runs.read(cell.first)["state"].get("message") or ""
        cell.events = runs.events(cell.first)
    unfinished = runs.unfinished()
    runs.http.close()
    return cells, unfinished


def record(cells: dict[str, Cell], record_property) -> None:
    """Each cell's seconds from the end of the fault to the next run Completed, and what the caught run went
    through, into the JUnit report (the README's figures come from there)."""
    for moment, cell in cells.items():
        record_property(f"{moment}_seconds_to_next_completed", round(cell.seconds))
        record_property(f"{moment}_caught_run", f"{cell.first_state}: {', '.join(cell.events)}")


def failures(stack: MatrixStack, fault_kind: str, cells: dict[str, Cell], unfinished: list[str]) -> dict[str, list]:
    """What went wrong in each cell, in words (empty when the deployment came through)."""
    rows = stack.rows()
    found = {}
    for moment, cell in cells.items():
        problems = []
        if cell.following_state != "COMPLETED":
            problems.append(f"the next run is {cell.following_state} after {BOUND} s")
        if fault_kind not in WORKER_FAULTS:
            expected = {"COMPLETED"}
        elif moment != "scheduled":
            expected = {"CRASHED"}
        elif cell.claimed_in_fault:  # due during the fault: the worker it killed took it, or the one after
            expected = {"CRASHED", "COMPLETED"}
        else:
            expected = {"COMPLETED"}
        if cell.first_state not in expected:
            problems.append(f"the run caught by the fault is {cell.first_state} ({cell.first_message!r}), "
                            f"not {'/'.join(sorted(expected))}")
        elif (moment != "scheduled" and cell.first_state == "CRASHED"
              and not cell.first_message.startswith(CRASHED_BY_AUTOMATION)):
            # Nothing else reports the end of a run whose worker died: deploy's automation must be what ended it.
            problems.append(f"the caught run was Crashed by something other than the automation: "
                            f"{cell.first_message!r}")
        completed = {run for run, state in ((cell.first, cell.first_state), (cell.following, cell.following_state))
                     if state == "COMPLETED"}
        mine = [row for row in rows if row[1] in (cell.first, cell.following)]
        if any(row[0] != moment for row in mine) or {row[1] for row in mine} != completed or len(mine) != len(completed):
            problems.append(f"rows {[row[1] for row in mine]} are not one per completed run {sorted(completed)}")
        if any(later[2] < earlier[3] for earlier, later in zip(mine, mine[1:])):
            problems.append("two runs of the deployment overlapped")
        revived = cell.first_state == "COMPLETED" and any(e.endswith(".Crashed") for e in cell.events)
        print(f"{moment} x {fault_kind}: {round(cell.seconds)} s to the next run's end; caught run "
              f"{cell.first_state}{' (claimed during the fault)' if cell.claimed_in_fault else ''}"
              f"{' (marked Crashed while alive, then ran on)' if revived else ''}; "
              f"its events: {cell.events}; {problems or 'fine'}")
        if problems:
            found[moment] = problems
    if unfinished:
        found["unfinished"] = unfinished
    return found
