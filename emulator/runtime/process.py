"""One service replica's deployment, run the way Railway runs it.

States are Railway's: Building → Deploying → Active (at healthcheck success, or at start without one),
then Completed (exit 0), Crashed (non-zero exit once the restart policy gives up) or Failed (the
deploy failed, including a healthcheck timeout); Removing → Removed after a stop. The process runs in
its own process group, which plays the container, led by `emulator.runtime.launcher`: when the service's first
process exits, whatever it left behind is killed; a stop is SIGTERM to the container's main process (as
Railway sends it; see the launcher), then SIGKILL to the group once the draining period is over. The
launcher also takes the service down when this process dies, even by SIGKILL, so a killed emulator
leaves nothing running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable

import psutil

from emulator.model.plan import ServicePlan
from emulator.runtime.healthcheck import wait_healthy
from emulator.runtime.logs import LogSink

BUILDING, DEPLOYING, ACTIVE = "Building", "Deploying", "Active"
COMPLETED, CRASHED, FAILED = "Completed", "Crashed", "Failed"
REMOVING, REMOVED = "Removing", "Removed"
FINISHED = frozenset({COMPLETED, CRASHED, FAILED, REMOVED})
POLICIES = ("ON_FAILURE", "ALWAYS", "NEVER")
_POLL = 0.02
# How often descendants are noted, so ones that leave the group still die with it.
_TRACK_EVERY = 2.0
# A scan of every process costs ~10 ms; the services of a stack share one rather than each making its own,
# and a stop waiting for its processes to go looks at a fresh one a few times a second, not every _POLL.
_SHARED_SCAN_AGE = _TRACK_EVERY / 2
_STOPPING_SCAN_AGE = 0.25
_COMMAND_NOT_FOUND = 127


_Scan = tuple[dict[int, list[psutil.Process]], dict[int, list[psutil.Process]]]  # by parent, by group


class _ProcessTable:
    """Every process by parent and by group, from a scan at most `max_age` seconds old."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken = float("-inf")
        self._scan: _Scan = ({}, {})

    def fresh(self, max_age: float) -> _Scan:
        """(by parent, by group), both from the same scan."""
        with self._lock:
            if time.monotonic() - self._taken > max_age:
                by_parent, by_group = defaultdict(list), defaultdict(list)
                for proc in psutil.process_iter(["ppid"]):
                    by_parent[proc.info["ppid"]].append(proc)
                    try:
                        by_group[os.getpgid(proc.pid)].append(proc)
                    except OSError:
                        pass
                self._scan, self._taken = (by_parent, by_group), time.monotonic()
            return self._scan


_TABLE = _ProcessTable()


class _Watchdog:
    """The pipe every launcher watches: its write end lives exactly as long as this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ends: tuple[int, int] | None = None

    def fd(self) -> int:
        """The read end, for a launcher to inherit (os.pipe's ends are close-on-exec otherwise)."""
        with self._lock:
            if self._ends is None:
                self._ends = os.pipe()
            return self._ends[0]


_WATCHDOG = _Watchdog()
_LAUNCHER = Path(__file__).with_name("launcher.py")


class ProcessGroup:
    """A deployment's processes, as its container would hold them.

    That is the group its first process leads plus every descendant seen so far, including those that
    moved to a session of their own (Prefect's runner isolates flow runs that way).
    """

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self._seen: set[psutil.Process] = set()
        self._lock = threading.Lock()  # the deployment's thread and stop() both track

    def track(self, max_age: float = 0.0) -> list[psutil.Process]:
        """Note and return every live member and descendant, from a process scan at most `max_age` s old."""
        with self._lock:
            if not self._seen and not _group_exists(self.pgid):
                return []
            by_parent, by_group = _TABLE.fresh(max_age)
            found, pending = set(), [*by_group.get(self.pgid, ()), *self._seen]
            while pending:
                proc = pending.pop()
                if proc not in found and _alive(proc):  # _alive also tells a reused pid apart
                    found.add(proc)
                    pending.extend(by_parent.get(proc.pid, ()))
            self._seen = found
            return list(found)

    def terminate(self, draining_seconds: float, on_kill: Callable[[], None] = lambda: None) -> bool:
        """SIGTERM to the group's leader, the launcher, which passes it on to the main process as Railway does;
        SIGKILL to everything left after the draining period. True if it came to that."""
        self.track()
        try:
            os.kill(self.pgid, signal.SIGTERM)
        except ProcessLookupError:  # no launcher: what a killed emulator left behind
            signal_group(self.pgid, signal.SIGTERM)
        if self._wait_gone(time.monotonic() + draining_seconds):
            return False
        on_kill()
        self.kill()
        return True

    def kill(self, timeout: float = 5.0) -> None:
        live = self.track()
        signal_group(self.pgid, signal.SIGKILL)
        for proc in live:
            try:
                proc.kill()
            except psutil.Error:
                pass
        if not self._wait_gone(time.monotonic() + timeout):
            raise RuntimeError(f"processes {[p.pid for p in self.track()]} survived SIGKILL")

    def _wait_gone(self, deadline: float) -> bool:
        """True once nothing is left (and a scan made now agrees), False at `deadline`."""
        while self.track(_STOPPING_SCAN_AGE) or self.track():
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL)
        return True


def _restarts(count: int) -> str:
    return f"{count} restart{'' if count == 1 else 's'}"


def _note_descendants(group: ProcessGroup, exited: threading.Event) -> None:
    while not exited.wait(_TRACK_EVERY):
        group.track(_SHARED_SCAN_AGE)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def signal_group(pgid: int, sig: int) -> None:
    """`sig` to process group `pgid`, if it still exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


class Deployment:
    """Runs `plan` under its restart policy until it finishes or `stop()` is called.

    `ready` decides the move from Deploying: it gets a `stopped()` callable and returns True (Active)
    or False (Failed; the process is stopped). It defaults to the plan's healthcheck, or to nothing,
    which makes the deployment Active as soon as it starts. `prepare` runs once before the first start.
    """

    def __init__(self, plan: ServicePlan, sink: LogSink, *,
                 ready: Callable[[Callable[[], bool]], bool] | None = None,
                 prepare: Callable[[], None] | None = None, user: str | None = None,
                 restart_delay: float = 0.0, on_change: Callable[["Deployment"], None] = lambda d: None) -> None:
        if plan.restart_policy not in POLICIES:
            raise ValueError(f"{plan.name}: restart policy {plan.restart_policy!r} is not one of {POLICIES}")
        self.plan = plan
        self.name = plan.name
        self._sink = sink
        self._ready = ready or (self._healthcheck if plan.healthcheck_path else None)
        self._prepare = prepare
        self._user = user
        self._restart_delay = restart_delay
        self._on_change = on_change
        self._cond = threading.Condition()
        self._halt = threading.Event()
        self._final = REMOVED
        self._state = BUILDING
        self._proc: subprocess.Popen | None = None
        self._group: ProcessGroup | None = None
        self._reader: threading.Thread | None = None
        self._thread: threading.Thread | None = None
        self.restarts = 0
        self.exit_code: int | None = None
        self.started_at: float | None = None  # the running process's create time, to tell a reused pid apart

    @property
    def state(self) -> str:
        return self._state

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def processes(self) -> list[psutil.Process]:
        """The live processes of the current run; none once it has finished."""
        group = self._group
        return group.track() if group is not None else []

    def start(self) -> "Deployment":
        self._thread = threading.Thread(target=self._run, name=f"deploy-{self.name}", daemon=True)
        self._thread.start()
        return self

    def wait_state(self, states: str | Iterable[str], timeout: float) -> str:
        wanted = {states} if isinstance(states, str) else set(states)
        with self._cond:
            if not self._cond.wait_for(lambda: self._state in wanted, timeout):
                raise TimeoutError(f"{self.name} is {self._state}, not {'/'.join(sorted(wanted))}, after {timeout}s")
            return self._state

    def stop(self) -> None:
        """Stop for good: SIGTERM to the group, SIGKILL after `plan.draining_seconds`, reap; then Removed."""
        with self._cond:
            self._final = REMOVED
            self._halt.set()
            finished = self._state in FINISHED
        if not finished:
            self._set(REMOVING)
        self._terminate()
        if self._thread is not None:
            self._thread.join()
        self._set(REMOVED)

    # -- the deployment's own thread

    def _run(self) -> None:
        for line in self.plan.build_log:
            self._sink.build(self.name, line)
        self._set(DEPLOYING)
        if self._prepare is not None:
            try:
                self._prepare()
            except Exception as exc:  # noqa: BLE001 - any failure to prepare fails the deploy, with its message
                self._sink.build(self.name, f"Deploy failed: {exc}")
                self._set(FAILED)
                return
        first = True
        while True:
            with self._cond:
                if self._halt.is_set():
                    break
                self._spawn()
            self._on_change(self)
            if first:
                first = False
                self._begin_deploy_check()
            code = self._wait_exit()
            with self._cond:
                self.exit_code = code
                if self._halt.is_set():
                    break
                if not self._restarts_after(code):
                    self._final = COMPLETED if code == 0 else CRASHED
                    self._halt.set()
                    break
                self.restarts += 1
                limit = f"/{self.plan.max_retries}" if self.plan.restart_policy == "ON_FAILURE" else ""
                self._sink.deploy(self.name, f"Exited with code {code}; restarting ({self.restarts}{limit}, "
                                             f"restart policy {self.plan.restart_policy})")
            self._on_change(self)
            if self._restart_delay:
                self._halt.wait(self._restart_delay)
        self._conclude()

    def _spawn(self) -> None:
        self._sink.deploy(self.name, "Starting Container")
        try:
            watch = _WATCHDOG.fd()
            user = ("--user", self._user) if self._user else ()
            proc = subprocess.Popen(
                (sys.executable, "-I", "-S", str(_LAUNCHER), str(watch), *user, "--", *self.plan.argv),
                env=self.plan.env, cwd=self.plan.cwd, pass_fds=(watch,),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            self._sink.deploy(self.name, f"Failed to start the container's command: {exc}")
            self._proc, self._group, self.started_at = None, None, None
            return
        self._proc, self._group = proc, ProcessGroup(proc.pid)
        try:
            self.started_at = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            self.started_at = None  # already gone; nothing left to tell apart
        self._reader = threading.Thread(target=self._read, args=(proc,), name=f"log-{self.name}", daemon=True)
        self._reader.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for raw in proc.stdout:
            self._sink.deploy(self.name, raw.decode("utf-8", "replace").rstrip("\r\n"))

    def _wait_exit(self) -> int:
        proc, group = self._proc, self._group
        if proc is None:
            return _COMMAND_NOT_FOUND
        exited = threading.Event()
        threading.Thread(target=_note_descendants, args=(group, exited), name=f"track-{self.name}",
                         daemon=True).start()
        code = proc.wait()  # blocking: Popen.wait(timeout) would poll every 50 ms
        exited.set()
        # The container ends with its first process: nothing it started outlives it.
        try:
            group.kill()
        except RuntimeError as exc:
            self._sink.deploy(self.name, f"Warning: {exc}")
        self._reader.join(timeout=2)
        return code

    def _restarts_after(self, code: int) -> bool:
        policy = self.plan.restart_policy
        if policy == "ALWAYS":
            return True
        return policy == "ON_FAILURE" and code != 0 and self.restarts < self.plan.max_retries

    def _conclude(self) -> None:
        code, final = self.exit_code, self._final
        if final == COMPLETED:
            self._sink.deploy(self.name, "Exited with code 0: Completed")
        elif final == CRASHED:
            policy = self.plan.restart_policy
            tries = f"after {_restarts(self.restarts)}" if policy == "ON_FAILURE" else f"(restart policy {policy})"
            self._sink.deploy(self.name, f"Exited with code {code} {tries}: Crashed")
        self._set(final)

    # -- the deploy-time check

    def _begin_deploy_check(self) -> None:
        if self._ready is None:
            self._set(ACTIVE, only_from=DEPLOYING)
            return
        threading.Thread(target=self._deploy_check, name=f"ready-{self.name}", daemon=True).start()

    def _deploy_check(self) -> None:
        try:
            ok = self._ready(self._halt.is_set)
        except Exception as exc:  # noqa: BLE001 - a readiness error fails the deploy, with its message
            if not self._halt.is_set():
                self._sink.build(self.name, f"Deploy failed: {exc}")
            ok = False
        if ok:
            self._set(ACTIVE, only_from=DEPLOYING)
            return
        with self._cond:
            if self._halt.is_set():
                return  # stopped or already finished: not the check's verdict to give
            self._final = FAILED
            self._halt.set()
        self._terminate()

    def _healthcheck(self, stopped: Callable[[], bool]) -> bool:
        return wait_healthy(self.plan.port, self.plan.healthcheck_path, self.plan.healthcheck_timeout,
                            lambda line: self._sink.build(self.name, line), sleep=self._halt.wait, stopped=stopped)

    # -- helpers

    def _terminate(self) -> None:
        with self._cond:
            proc, group = self._proc, self._group
        if proc is None or proc.poll() is not None:
            return
        self._sink.deploy(self.name, "Stopping Container")
        draining = self.plan.draining_seconds
        group.terminate(draining, on_kill=lambda: self._sink.deploy(
            self.name, f"Still running after the {draining:g}s draining period: SIGKILL"))

    def _set(self, state: str, only_from: str | None = None) -> None:
        with self._cond:
            if only_from is not None and self._state != only_from:
                return
            if self._state == state:
                return
            self._state = state
            self._cond.notify_all()
        self._on_change(self)
