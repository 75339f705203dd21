"""A deployment's first process, the way a container's init holds the service: nothing outlives it.

`python -I -S launcher.py WATCH_FD [--user NAME] -- COMMAND...` leads the deployment's process group (the container),
forks COMMAND into it and waits for it:

- It is a child subreaper (prctl(2) PR_SET_CHILD_SUBREAPER), so every descendant that loses its parent
  is re-parented here rather than to init, including those in sessions of their own (Prefect's runner
  starts flow runs that way). When COMMAND exits, the container ends: every descendant left is killed.
- WATCH_FD is the read end of a pipe whose only write end the emulator holds (close-on-exec). The pipe
  reads EOF when the emulator dies, even by SIGKILL: then COMMAND's group gets SIGTERM and every
  descendant SIGKILL after `ORPHAN_GRACE` seconds. A pipe rather than PR_SET_PDEATHSIG, which fires on
  the death of the parent *thread* and only for the direct child, not what it started.
- It exits with COMMAND's status, or 128 + the signal that ended it, as a container runtime reports it.
  A COMMAND that cannot be started exits 127, as a shell's "command not found".
- With --user, COMMAND runs as that user (PostgreSQL refuses root) while the launcher stays who it was,
  so it can still kill whatever COMMAND starts.

A SIGTERM to the group (a stop) leaves the launcher waiting for COMMAND, whose status it has to report.
Standard library only, started with -I -S: it runs in every service's environment, and as the user
Postgres runs as.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import select
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
ORPHAN_GRACE = 3.0
FAILED_TO_START = 127


def main(argv: list[str]) -> int:
    watch_fd, *argv = argv
    user = None
    if argv[:1] == ["--user"]:
        user, *argv = argv[1:]
    if argv[:1] != ["--"] or len(argv) < 2:
        print("usage: launcher.py WATCH_FD [--user NAME] -- COMMAND [ARG ...]", file=sys.stderr)
        return 2
    command, watch_fd = argv[1:], int(watch_fd)
    os.set_inheritable(watch_fd, False)  # the service has no business with it
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)  # handlers, not SIG_IGN, which COMMAND would inherit
    main_pid = os.fork()
    if main_pid == 0:
        _exec(command, user)
    code = None
    while code is None:
        readable, _, _ = select.select([watch_fd, wake_r], [], [])
        if wake_r in readable:
            os.read(wake_r, 4096)
            code = _reap(main_pid)
        if code is None and watch_fd in readable and not os.read(watch_fd, 1):
            code = _orphaned(main_pid)
    _kill_descendants()
    return code


def _exec(command: list[str], user: str | None) -> None:
    try:
        if user is not None:  # here, not before the launcher: the interpreter may be out of the user's reach
            entry = pwd.getpwnam(user)
            os.initgroups(user, entry.pw_gid)
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"Failed to start the container's command: {exc}", flush=True)
    os._exit(FAILED_TO_START)


def _reap(main_pid: int) -> int | None:
    """Reap every exited child (re-parented orphans too); COMMAND's exit status once it has exited."""
    code = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return code
        if pid == 0:
            return code
        if pid == main_pid:
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code


def _orphaned(main_pid: int) -> int:
    """The emulator is gone: stop COMMAND as a stop would (SIGTERM to its group), SIGKILL after the grace."""
    _signal_group(os.getpgid(0), signal.SIGTERM)
    deadline = time.monotonic() + ORPHAN_GRACE
    while time.monotonic() < deadline:
        code = _reap(main_pid)
        if code is not None:
            return code
        time.sleep(0.05)
    return 128 + signal.SIGKILL


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass


def _kill_descendants() -> None:
    """SIGKILL everything under this process until nothing is left, reaping as it goes."""
    while children := _descendants(os.getpid()):
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _reap(-1)
        time.sleep(0.01)
    _reap(-1)


def _descendants(root: int) -> list[int]:
    by_parent: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()  # the name in parentheses may hold spaces
        if fields[0] != b"Z":  # a zombie is dead already; _reap takes it
            by_parent.setdefault(int(fields[1]), []).append(int(entry))
    found, pending = [], [root]
    while pending:
        for child in by_parent.get(pending.pop(), ()):
            found.append(child)
            pending.append(child)
    return found


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
