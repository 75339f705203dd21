"""`vault-ingest worker`: Prefect's process worker for Railway's `worker` service, drained on SIGTERM.

Railway stops a deployment (a redeploy, a push) with SIGTERM to its main process and SIGKILL
RAILWAY_DEPLOYMENT_DRAINING_SECONDS later (railwayapp/docs c2a634f, deployments/deployment-teardown.md). `prefect
worker start` does not use that window. In Prefect 3.9.1 (the version uv.lock pins; the same in PrefectHQ/prefect
ce79dd3): cli/worker.py calls `setup_signal_handlers_worker`, which turns the first SIGTERM into SIGINT to the worker
itself (utilities/processutils/__init__.py, lines 579-596; its comment's "runs until the subprocesses finish" is
not what happens). The KeyboardInterrupt unwinds the worker, and leaving each run's executor context kills the
flow-run process (runner/_process_manager.py, `ProcessManager.__aexit__`). Prefect has no setting or signal that
stops a worker polling while its runs finish (workers/base.py, `BaseWorker.start`), and pausing the pool or its
queues would stop the new deployment's worker as well.

So this runs the same `ProcessWorker`, with the same settings `prefect worker start --type process` uses, and on
the first SIGTERM:

- it takes no more flow runs: its poll (`get_and_submit_flow_runs`, the only way runs reach a worker; the worker
  channel carries heartbeats, pool snapshots and cleanup work) returns nothing, so a run due during the drain
  goes to the new deployment's worker;
- its event loop keeps running, because a worker relays its runs' output through pipes
  (utilities/processutils `run_process`), so a stopped one would block a run that logs, and it reports a run
  whose process exits non-zero as Crashed. The runs' heartbeats come from the flow-run processes themselves
  (flow_engine.py, `_send_heartbeats`), so they keep flowing;
- once no run is being submitted or running, it stops and exits 0. Whatever is still running when the draining
  window ends is SIGKILLed by Railway, worker and runs alike.

The runs never see the SIGTERM: Railway sends it to the container's main process only, this one once
start_worker.sh has `exec`ed it, and Prefect starts each flow run in a session of its own
(runner/_workspace_starter.py, `isolate_process_group`).

A second SIGTERM, or SIGINT (Ctrl-C), stops at once the way Prefect's worker does, its runs with it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any

from vault_ingest.errors import ConfigError

DRAINING_VAR = "RAILWAY_DEPLOYMENT_DRAINING_SECONDS"
# What the drain wraps or reads on Prefect's BaseWorker; checked at start, so an upgrade that renames one fails
# loudly instead of draining nothing.
_HOOKS = ("get_and_submit_flow_runs", "_submit_run_and_capture_errors", "_submitting_flow_run_ids")

Printer = Callable[[str], None]


def say(line: str) -> None:
    print(f"vault-ingest worker: {line}", file=sys.stderr, flush=True)


class Drain:
    """Stops `worker` taking flow runs, and counts what it is still doing with the ones it took."""

    def __init__(self, worker: Any) -> None:
        missing = [name for name in _HOOKS if not hasattr(worker, name)]
        if missing:
            raise ConfigError(
                f"this Prefect's worker has no {', '.join(missing)}, which the drain on SIGTERM relies on; "
                "install the Prefect version uv.lock pins (`uv sync --locked`)"
            )
        self.worker = worker
        self.draining = False
        self._polls = 0
        self._submitted = 0  # runs from their submission to their final state
        poll, submit = worker.get_and_submit_flow_runs, worker._submit_run_and_capture_errors

        async def poll_unless_draining() -> list:
            if self.draining:
                return []
            self._polls += 1
            try:
                return await poll()
            finally:
                self._polls -= 1

        async def counted_submit(*args: Any, **kwargs: Any) -> Any:
            self._submitted += 1
            try:
                return await submit(*args, **kwargs)
            finally:
                self._submitted -= 1

        # Instance attributes: BaseWorker.start() and _submit_run() look these up on the instance.
        worker.get_and_submit_flow_runs = poll_unless_draining
        worker._submit_run_and_capture_errors = counted_submit

    def runs(self) -> int:
        """The flow runs this worker took that have not ended yet."""
        # A polled run is in _submitting_flow_run_ids from the poll until its process has started, by which
        # time _submit_run_and_capture_errors counts it; a run may be in both for a moment.
        return max(self._submitted, len(self.worker._submitting_flow_run_ids))

    def in_progress(self) -> bool:
        """Whether a flow run this worker took may still be running, or a poll may still take one."""
        return bool(self._polls or self._submitted or self.worker._submitting_flow_run_ids)


def draining_seconds(env: Mapping[str, str]) -> float | None:
    """Railway's draining window as the service sets it; None when unset or not a number."""
    raw = env.get(DRAINING_VAR, "").strip()
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def _window(seconds: float | None) -> str:
    if not seconds:
        return (f"{DRAINING_VAR} is {'unset' if seconds is None else 0} (Railway's default 0): they are SIGKILLed "
                f"now; set {DRAINING_VAR} on the worker to the longest run's seconds to let them finish")
    return f"Railway SIGKILLs what is left {seconds:g}s after the SIGTERM ({DRAINING_VAR})"


async def serve(worker: Any, printer: Printer = say, poll_seconds: float = 1.0) -> int:
    """Run `worker` until SIGTERM, then drain it (see the module). Exit code 0 once drained, 143 when a second
    SIGTERM cut the drain short."""
    drain = Drain(worker)
    started = asyncio.ensure_future(worker.start(printer=printer))
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future | None = None
    stopped = forced = False  # by this function, not by Ctrl-C

    def stop() -> None:
        nonlocal stopped
        stopped = True
        started.cancel()

    async def stop_when_drained() -> None:
        while drain.in_progress():
            await asyncio.sleep(poll_seconds)
        printer("no flow runs left: the worker stops")
        stop()

    def on_sigterm() -> None:
        nonlocal waiter, forced
        if drain.draining:
            printer("second SIGTERM: stopping now, with the flow runs still running")
            forced = True
            stop()
            return
        drain.draining = True
        runs = drain.runs()
        printer(f"SIGTERM: taking no more flow runs; waiting for the {runs} in progress. "
                f"{_window(draining_seconds(os.environ))}" if runs else "SIGTERM: taking no more flow runs")
        waiter = asyncio.ensure_future(stop_when_drained())

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        await started
    except asyncio.CancelledError:
        if not stopped:
            raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        if waiter is not None:
            waiter.cancel()
    return 128 + signal.SIGTERM if forced else 0  # a shell's code for "ended by SIGTERM"


def process_worker(args: argparse.Namespace) -> Any:
    """The worker `prefect worker start --type process` would build from the same options and settings."""
    from prefect.settings import PREFECT_WORKER_HEARTBEAT_SECONDS, PREFECT_WORKER_PREFETCH_SECONDS
    from prefect.workers.process import ProcessWorker

    return ProcessWorker(
        name=args.name,
        work_pool_name=args.pool,
        work_queues=args.work_queue or None,
        limit=args.limit,
        prefetch_seconds=(args.prefetch_seconds if args.prefetch_seconds is not None
                          else PREFECT_WORKER_PREFETCH_SECONDS.value()),
        heartbeat_interval_seconds=int(PREFECT_WORKER_HEARTBEAT_SECONDS.value()),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`prefect worker start`'s options that a process worker on Railway uses, under the same names."""
    parser.add_argument("--pool", "-p", required=True, help="the process work pool to poll (created if missing)")
    parser.add_argument("--name", "-n", help="the worker's name (default: a random one)")
    parser.add_argument("--work-queue", "-q", action="append", help="poll only this queue (repeatable)")
    parser.add_argument("--limit", "-l", type=int, help="at most this many flow runs at once")
    parser.add_argument("--prefetch-seconds", type=float, help="submit runs this early (default: Prefect's setting)")


def main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(serve(process_worker(args)))
    except KeyboardInterrupt:
        return 130
