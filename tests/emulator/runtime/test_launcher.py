import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from emulator.runtime import launcher

LAUNCHER = Path(launcher.__file__)
# The command leaves a sleep in its group and one in a session of its own (as Prefect's runner does).
LEAVES_TWO = ("sleep 300 & echo pid=$!; setsid sleep 300 & echo pid=$!; echo pid=$$; ")


@pytest.fixture
def launch():
    started = []

    def run(command: str, **options) -> tuple[subprocess.Popen, int]:
        """The launcher running `bash -c command`, and the write end of its watchdog pipe."""
        read, write = os.pipe()
        proc = subprocess.Popen([sys.executable, "-I", "-S", str(LAUNCHER), str(read), "--", "/bin/bash", "-c",
                                 command], pass_fds=(read,), stdout=subprocess.PIPE, text=True,
                                start_new_session=True, **options)
        os.close(read)
        started.append((proc, write))
        return proc, write

    yield run
    for proc, write in started:
        try:
            os.close(write)
        except OSError:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def pids(proc: subprocess.Popen, count: int) -> list[int]:
    return [int(proc.stdout.readline().strip().removeprefix("pid=")) for _ in range(count)]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids_: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [pid for pid in pids_ if not gone(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.mark.parametrize("command, code", [("exit 3", 3), ("exit 0", 0), ("kill -TERM $$", 128 + signal.SIGTERM)])
def test_exits_with_the_commands_status_or_128_plus_its_signal(launch, command, code):
    proc, _ = launch(command)
    assert proc.wait(10) == code


def test_a_command_that_cannot_start_exits_127_and_says_why(tmp_path):
    read, write = os.pipe()
    proc = subprocess.run([sys.executable, "-I", "-S", str(LAUNCHER), str(read), "--", str(tmp_path / "nope")],
                          pass_fds=(read,), capture_output=True, text=True, timeout=10)
    os.close(read), os.close(write)
    assert proc.returncode == 127
    assert proc.stdout.startswith("Failed to start the container's command: [Errno 2] No such file or directory")


def test_what_the_command_leaves_behind_dies_with_it_even_in_another_session(launch):
    proc, _ = launch(LEAVES_TWO + "exit 5")
    left = pids(proc, 3)[:2]
    assert proc.wait(10) == 5
    assert wait_gone(left) == []


def test_a_closed_watchdog_pipe_stops_everything(launch):
    """The emulator died (even by SIGKILL): SIGTERM to the command, SIGKILL to the rest after the grace."""
    proc, write = launch(LEAVES_TWO + "trap 'echo draining; exit 0' TERM; while :; do sleep 0.05; done")
    everything = pids(proc, 3)
    time.sleep(0.2)
    assert not any(gone(pid) for pid in everything) and proc.poll() is None  # nothing fires while it is open
    os.close(write)
    assert proc.wait(10) == 0
    assert "draining" in proc.stdout.read()
    assert wait_gone(everything) == []


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(launch):
    proc, write = launch("trap '' TERM; echo pid=$$; while :; do sleep 0.05; done")
    (command,) = pids(proc, 1)
    began = time.monotonic()
    os.close(write)
    assert proc.wait(launcher.ORPHAN_GRACE + 10) == 128 + signal.SIGKILL
    assert time.monotonic() - began >= launcher.ORPHAN_GRACE
    assert gone(command)


def test_sigterm_reaches_a_main_process_that_handles_it(launch):
    proc, _ = launch("trap 'echo stopping; exit 7' TERM; echo ready; while :; do sleep 0.05; done")
    assert proc.stdout.readline() == "ready\n"
    os.kill(proc.pid, signal.SIGTERM)  # a stop: to the launcher, which passes it on
    assert proc.wait(10) == 7  # the launcher outlived the signal to report the command's status
    assert "stopping" in proc.stdout.read()


def test_sigterm_is_dropped_by_a_main_process_without_a_handler_as_by_pid_1(launch):
    """A container's init gets only the signals it handles; the child of a wrapper shell gets none."""
    proc, _ = launch("echo pid=$$; sleep 300 & echo pid=$!; wait")
    shell, child = pids(proc, 2)
    os.kill(proc.pid, signal.SIGTERM)
    time.sleep(0.5)  # what is asserted is that nothing happens; half a second gives it the chance to
    assert proc.poll() is None and not gone(shell) and not gone(child)


def test_the_command_starts_with_the_default_signal_dispositions(launch):
    """Python, which runs the launcher, ignores SIGPIPE and SIGXFSZ; a container's process does not."""
    proc, _ = launch("grep SigIgn /proc/self/status")
    ignored = int(proc.stdout.read().split()[1], 16)
    assert proc.wait(10) == 0
    assert [sig for sig in (signal.SIGPIPE, signal.SIGXFSZ) if ignored >> (sig - 1) & 1] == []


def test_the_command_gets_exactly_the_environment_the_launcher_was_given(tmp_path):
    """Not Python's additions: its startup sets LC_CTYPE=C.UTF-8 where the locale is C (PEP 538)."""
    read, write = os.pipe()
    env = {"PATH": os.environ["PATH"], "ONLY_THIS": "1"}
    proc = subprocess.run([sys.executable, "-I", "-S", str(LAUNCHER), str(read), "--", "env"], pass_fds=(read,),
                          env=env, capture_output=True, text=True, timeout=10)
    os.close(read), os.close(write)
    assert dict(line.split("=", 1) for line in proc.stdout.splitlines()) == env
