"""A deployment's first process, the way a container's init holds the service: nothing outlives it.

`python -I -S launcher.py WATCH_FD [--user NAME] -- COMMAND...` leads the deployment's process group (the
container), forks COMMAND into it and waits for it:

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

A stop is SIGTERM to the launcher, which passes it on the way Railway delivers it: to the container's main
process only (railwayapp/docs `src/docs/guides/nodejs-sigterm.md` at 806d12c: a wrapper such as npm
"becomes the main process", the app never sees the signal and is force quit at the end; the shared
reference's railway.md §4.5 and §8). That main process is COMMAND, PID 1 of the container, where
Railpack's image runs `/bin/bash -c "<start command>"` (railpack `buildkit/convert.go`), and the kernel
delivers a signal to a PID namespace's init only if it has a handler for it (pid_namespaces(7)).
So the launcher passes SIGTERM on only when COMMAND handles it: bash running `sh start.sh` without a trap
drops it, and the real process in the script never drains unless the script `exec`s it (bash -c execs a
single simple command by itself). Whatever is left is SIGKILLed when the draining period ends.

Standard library only, started with -I -S: it runs in every service's environment, and as root where
Postgres runs as its own user.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import select
import signal
import sys
import time

_LINUX = sys.platform.startswith("linux")  # prctl and /proc; elsewhere the status and signals still pass
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
ORPHAN_GRACE = 3.0
FAILED_TO_START = 127


class _Container:
    main_pid = 0  # COMMAND, once forked
    stopping = False  # the emulator is gone: every process gets SIGTERM, not only one that handles it


_container = _Container()


def _pass_on(signum: int, _frame) -> None:
    """SIGTERM to the main process, if it has a handler for it, as the kernel does for a container's PID 1."""
    pid = _container.main_pid
    if pid and not _container.stopping and _handles(pid, signum):
        try:
            os.kill(pid, signum)
        except OSError:
            pass


def _handles(pid: int, signum: int) -> bool:
    if not _LINUX:
        return True  # no way to tell: the signal goes through
    try:
        with open(f"/proc/{pid}/status") as handle:
            caught = next(line for line in handle if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(int(caught.split()[1], 16) >> (signum - 1) & 1)


def _become_subreaper() -> None:
    if _LINUX:
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


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
    _become_subreaper()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    for sig in (signal.SIGCHLD, signal.SIGINT):
        signal.signal(sig, lambda *_: None)  # handlers, not SIG_IGN, which COMMAND would inherit
    signal.signal(signal.SIGTERM, _pass_on)
    main_pid = os.fork()
    if main_pid == 0:
        _exec(command, user)
    _container.main_pid = main_pid
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
    # Python ignores these, and SIG_IGN survives exec: a container's process starts with the defaults, so
    # `yes | head` in a start script ends by SIGPIPE there, not by a write error.
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    try:
        env = _environment()  # before a change of user, which may leave /proc/self unreadable
        if user is not None:  # here, not before the launcher: the interpreter may be out of the user's reach
            entry = pwd.getpwnam(user)
            os.initgroups(user, entry.pw_gid)
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
        os.execvpe(command[0], command, env)
    except OSError as exc:
        print(f"Failed to start the container's command: {exc}", flush=True)
    os._exit(FAILED_TO_START)


def _environment() -> dict:
    """The environment this process was started with: Python's startup adds LC_CTYPE=C.UTF-8 where the
    locale is C (PEP 538), and the service must get exactly what the emulator planned."""
    if not _LINUX:
        return dict(os.environ)
    with open("/proc/self/environ", "rb") as handle:  # the block execve(2) was given, untouched by setenv
        entries = handle.read().split(b"\0")
    return dict(entry.split(b"=", 1) for entry in entries if b"=" in entry)


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
    """The emulator is gone: SIGTERM to the whole group (not a Railway stop: no process should be missed),
    SIGKILL to everything after the grace."""
    _container.stopping = True
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
    if not _LINUX:
        return []  # the emulator's own tracking of the group kills what is left
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
