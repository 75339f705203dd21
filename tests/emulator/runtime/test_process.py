import dataclasses
import functools
import os
import sys
import time

import psutil
import pytest

from emulator.model.plan import ServicePlan
from emulator.runtime.logs import LogSink
from emulator.runtime.postgres import free_port
from emulator.runtime.process import ACTIVE, COMPLETED, CRASHED, FAILED, REMOVED, Deployment, ProcessGroup
from tests.support.prefect_server import wait_until as support_wait_until


# These processes are local shells: a few seconds is long, and they are checked often.
wait_until = functools.partial(support_wait_until, timeout=10, interval=0.02)


def bash(name, command, cwd, **options) -> ServicePlan:
    port = options.pop("port", 0)
    env = {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1", "PORT": str(port), **options.pop("env", {})}
    return ServicePlan(name=name, kind="app", argv=("/bin/bash", "-c", command), env=env, cwd=cwd, port=port,
                       **options)


@pytest.fixture
def deploy(tmp_path):
    sink = LogSink(tmp_path, console=None)
    started = []

    def run(plan, **kwargs) -> Deployment:
        deployment = Deployment(plan, sink, **kwargs).start()
        started.append(deployment)
        return deployment

    run.sink = sink
    yield run
    for deployment in started:
        deployment.stop()
    sink.close()


def log(tmp_path, name, stream="deploy"):
    path = tmp_path / "logs" / f"{name}.{stream}.log"
    return path.read_text() if path.exists() else ""


def pids_in(text):
    return [int(line.split("=", 1)[1]) for line in text.splitlines() if line.startswith("pid=")]


def gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_exit_zero_is_completed_and_not_restarted(deploy, tmp_path):
    d = deploy(bash("job", "echo hello from the job; exit 0", tmp_path, build_log=("↳ Detected Python",)))
    assert d.wait_state([COMPLETED, CRASHED], 10) == COMPLETED
    assert d.restarts == 0 and d.exit_code == 0
    assert log(tmp_path, "job") == "Starting Container\nhello from the job\nExited with code 0: Completed\n"
    assert log(tmp_path, "job", "build") == "↳ Detected Python\n"


def test_on_failure_restarts_up_to_max_retries_then_crashed(deploy, tmp_path):
    d = deploy(bash("flaky", "exit 3", tmp_path, max_retries=2))
    assert d.wait_state([COMPLETED, CRASHED], 10) == CRASHED
    assert d.restarts == 2 and d.exit_code == 3
    text = log(tmp_path, "flaky")
    assert text.count("Starting Container") == 3
    assert "Exited with code 3; restarting (1/2, restart policy ON_FAILURE)" in text
    assert "Exited with code 3; restarting (2/2, restart policy ON_FAILURE)" in text
    assert text.endswith("Exited with code 3 after 2 restarts: Crashed\n")


def test_one_restart_is_said_in_the_singular(deploy, tmp_path):
    d = deploy(bash("flaky", "exit 3", tmp_path, max_retries=1))
    assert d.wait_state([COMPLETED, CRASHED], 10) == CRASHED
    assert log(tmp_path, "flaky").endswith("Exited with code 3 after 1 restart: Crashed\n")


def test_on_failure_stops_restarting_once_it_exits_zero(deploy, tmp_path):
    command = "n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count; [ $n -ge 2 ] && exit 0 || exit 1"
    d = deploy(bash("migrate", command, tmp_path))
    assert d.wait_state([COMPLETED, CRASHED], 10) == COMPLETED
    assert d.restarts == 2


def test_never_policy_crashes_at_the_first_failure(deploy, tmp_path):
    d = deploy(bash("once", "exit 1", tmp_path, restart_policy="NEVER"))
    assert d.wait_state([COMPLETED, CRASHED], 10) == CRASHED
    assert d.restarts == 0
    assert "Exited with code 1 (restart policy NEVER): Crashed" in log(tmp_path, "once")


def test_always_policy_restarts_even_after_exit_zero(deploy, tmp_path):
    d = deploy(bash("loop", "exit 0", tmp_path, restart_policy="ALWAYS"), restart_delay=0.01)
    wait_until(lambda: d.restarts >= 3, what="three restarts")
    assert d.state == ACTIVE
    d.stop()
    assert d.state == REMOVED


def test_unknown_restart_policy_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="restart policy 'SOMETIMES'"):
        Deployment(bash("x", "true", tmp_path, restart_policy="SOMETIMES"), LogSink(None, console=None))


def test_missing_executable_counts_as_a_failed_start(deploy, tmp_path):
    plan = bash("ghost", "", tmp_path, max_retries=1)
    d = deploy(dataclasses.replace(plan, argv=(str(tmp_path / "no-such-binary"),)))
    assert d.wait_state([COMPLETED, CRASHED], 10) == CRASHED
    assert d.exit_code == 127 and "Failed to start" in log(tmp_path, "ghost")


def test_healthcheck_success_makes_the_deploy_active(deploy, tmp_path):
    port = free_port()
    plan = bash("web", f"exec {sys.executable} -m http.server {port} --bind 127.0.0.1", tmp_path, port=port,
                healthcheck_path="/", healthcheck_timeout=10)
    d = deploy(plan)
    assert d.wait_state([ACTIVE, FAILED], 15) == ACTIVE
    build = log(tmp_path, "web", "build")
    header = "====================\nStarting Healthcheck\n====================\n\nPath: /\nRetry window: 10s\n"
    assert build.startswith(header)
    assert build.endswith("\n[1/1] Healthcheck succeeded!\n")


def test_healthcheck_timeout_fails_the_deploy_and_stops_the_process(deploy, tmp_path):
    plan = bash("web", "echo pid=$$; exec sleep 60", tmp_path, port=free_port(), healthcheck_path="/api/health",
                healthcheck_timeout=1)
    d = deploy(plan)
    assert d.wait_state([ACTIVE, FAILED], 10) == FAILED
    assert log(tmp_path, "web", "build").endswith("\n1/1 replicas never became healthy!\nHealthcheck failed!\n")
    assert "Attempt #1 failed with service unavailable." in log(tmp_path, "web", "build")
    (pid,) = pids_in(log(tmp_path, "web"))
    assert gone(pid) and d.restarts == 0


def test_without_healthcheck_active_at_start_and_stop_kills_the_whole_group(deploy, tmp_path):
    d = deploy(bash("worker", "sleep 300 & echo pid=$!; sleep 300 & echo pid=$!; echo pid=$$; wait", tmp_path))
    d.wait_state(ACTIVE, 5)
    wait_until(lambda: len(pids_in(log(tmp_path, "worker"))) == 3, what="three pids logged")
    pids = pids_in(log(tmp_path, "worker"))
    assert all(not gone(pid) for pid in pids)
    d.stop()
    assert d.state == REMOVED
    assert all(gone(pid) for pid in pids)


def test_sigterm_is_enough_when_the_process_honours_it(deploy, tmp_path):
    d = deploy(bash("worker", "trap 'echo draining; exit 0' TERM; echo trapped; while :; do sleep 0.05; done",
                    tmp_path, draining_seconds=10))
    d.wait_state(ACTIVE, 5)
    wait_until(lambda: "trapped" in log(tmp_path, "worker"), what="the trap set, not merely the launcher up")
    began = time.monotonic()
    d.stop()
    assert time.monotonic() - began < 5
    text = log(tmp_path, "worker")
    assert "draining" in text and "SIGKILL" not in text


def test_sigkill_after_the_draining_period_when_sigterm_is_ignored(deploy, tmp_path):
    d = deploy(bash("stubborn", "trap '' TERM; echo pid=$$; while :; do sleep 0.05; done", tmp_path,
                    draining_seconds=0.5))
    wait_until(lambda: pids_in(log(tmp_path, "stubborn")), what="stubborn's pid")
    (pid,) = pids_in(log(tmp_path, "stubborn"))
    began = time.monotonic()
    d.stop()
    assert 0.5 <= time.monotonic() - began < 5
    assert "Still running after the 0.5s draining period: SIGKILL" in log(tmp_path, "stubborn")
    assert gone(pid)


def test_what_the_first_process_leaves_behind_dies_with_it(deploy, tmp_path):
    d = deploy(bash("leaky", "sleep 300 & echo pid=$!; exit 1", tmp_path, restart_policy="NEVER"))
    assert d.wait_state([COMPLETED, CRASHED], 10) == CRASHED
    (pid,) = pids_in(log(tmp_path, "leaky"))
    assert gone(pid)


def test_a_descendant_in_its_own_session_still_dies_on_stop(deploy, tmp_path):
    script = ("import subprocess, time; p = subprocess.Popen(['sleep', '300'], start_new_session=True); "
              "print(f'pid={p.pid}', flush=True); time.sleep(300)")
    d = deploy(ServicePlan(name="worker", kind="app", argv=(sys.executable, "-c", script),
                           env={"PATH": os.environ["PATH"]}, cwd=tmp_path, port=0))
    wait_until(lambda: pids_in(log(tmp_path, "worker")), what="the worker's pid")
    (pid,) = pids_in(log(tmp_path, "worker"))
    assert os.getpgid(pid) != d.pid
    d.stop()
    assert gone(pid)


def test_secret_values_never_reach_the_deploy_log(deploy, tmp_path):
    deploy.sink.add_secrets(["s3cr3t-value-42"])
    d = deploy(bash("leaky", 'echo "token is $TOKEN"', tmp_path, env={"TOKEN": "s3cr3t-value-42"}))
    d.wait_state(COMPLETED, 10)
    assert "token is *****" in log(tmp_path, "leaky") and "s3cr3t" not in log(tmp_path, "leaky")


def test_groups_share_a_recent_process_scan(monkeypatch):
    """Each service notes its descendants every 2 s; one scan of every process serves them all."""
    scans = []
    scan = psutil.process_iter
    monkeypatch.setattr(psutil, "process_iter", lambda *args, **kwargs: scans.append(1) or scan(*args, **kwargs))
    mine = os.getpgid(0)
    first, second = ProcessGroup(mine), ProcessGroup(mine)
    assert psutil.Process() in first.track()  # max_age 0: a scan of its own
    assert psutil.Process() in second.track(max_age=60)
    assert len(scans) == 1
    second.track()
    assert len(scans) == 2


DRAINS = ("import signal, sys, time\n"
          "signal.signal(signal.SIGTERM, lambda *_: (print('got SIGTERM', flush=True), sys.exit(0)))\n"
          "print('ready', flush=True)\n"
          "time.sleep(300)\n")


@pytest.mark.parametrize("start_command, script, drains", [
    ("bash start.sh", "exec {python} drain.py", True),
    ("bash start.sh", "{python} drain.py", False),  # the script's bash is the main process, without a trap
    ("{python} drain.py", None, True),  # bash -c execs a single simple command itself
    ("{python} drain.py; echo after", None, False),
])
def test_sigterm_goes_to_the_main_process_only_so_a_wrapper_without_exec_never_drains(
        deploy, tmp_path, start_command, script, drains):
    """Railway's stop signals the container's main process, not its group (railway.md §8, Railway's
    nodejs-sigterm guide); what the main process does not pass on is SIGKILLed when draining ends."""
    (tmp_path / "drain.py").write_text(DRAINS)
    if script:
        (tmp_path / "start.sh").write_text(script.format(python=sys.executable) + "\n")
    d = deploy(bash("worker", start_command.format(python=sys.executable), tmp_path, draining_seconds=1))
    wait_until(lambda: "ready" in log(tmp_path, "worker"), what="the worker ready")
    d.stop()
    text = log(tmp_path, "worker")
    assert ("got SIGTERM" in text) is drains
    assert ("Still running after the 1s draining period: SIGKILL" in text) is not drains
    assert d.processes() == []
