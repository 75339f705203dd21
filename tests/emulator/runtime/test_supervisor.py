import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from emulator.errors import SupervisorError
from emulator.model.plan import BuildError, ServicePlan
from emulator.runtime.logs import LogSink
from emulator.runtime.postgres import free_port, postgres_server
from emulator.runtime.process import ACTIVE, COMPLETED, CRASHED, FAILED, REMOVED
from emulator.runtime.supervisor import Supervisor, observed, read_runtime, stop_from_state_file, supervisor_alive
from tests.support.prefect_server import wait_until

REPO = Path(__file__).resolve().parents[3]
SERVE = "import pickle, sys; from emulator.runtime.supervisor import Supervisor; " \
        "sys.exit(Supervisor(pickle.load(open(sys.argv[1], 'rb')), sys.argv[2]).serve())"


def bash(name, command, cwd, **options) -> ServicePlan:
    port = options.pop("port", 0)
    env = {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1", "PORT": str(port)}
    return ServicePlan(name=name, kind="app", argv=("/bin/bash", "-c", command), env=env, cwd=cwd, port=port,
                       **options)


def web(cwd) -> ServicePlan:
    port = free_port()
    return bash("web", f"exec {sys.executable} -m http.server {port} --bind 127.0.0.1", cwd, port=port,
                healthcheck_path="/", healthcheck_timeout=15, public_domain=f"127.0.0.1:{free_port()}")


def gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def supervised(tmp_path):
    running = []

    def start(plans, state_dir=None, **kwargs) -> Supervisor:
        state_dir = state_dir or tmp_path / "state"
        supervisor = Supervisor(plans, state_dir, LogSink(state_dir, console=None), **kwargs)
        running.append(supervisor)
        return supervisor.start()

    yield start
    for supervisor in running:
        supervisor.stop()


@pytest.fixture
def background(tmp_path):
    """A supervisor in another process, as `python -m emulator up` runs it; killed on teardown whatever happens."""
    procs = []

    def launch(plans) -> subprocess.Popen:
        plans_file = tmp_path / "plans.pickle"
        plans_file.write_bytes(pickle.dumps(plans))
        with open(tmp_path / "console.txt", "w") as console:
            proc = subprocess.Popen([sys.executable, "-c", SERVE, str(plans_file), str(tmp_path / "state")],
                                    cwd=REPO, start_new_session=True, stdout=console, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    yield launch
    for proc in procs:
        runtime = read_runtime(tmp_path / "state") or {"services": {}}
        for pgid in [proc.pid] + [s.get("pgid") for s in runtime["services"].values()]:
            if pgid:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        proc.wait(5)


def running_runtime(state_dir, *names):
    runtime = read_runtime(state_dir)
    if runtime and all(runtime["services"].get(n, {}).get("state") == ACTIVE and runtime["services"][n]["pid"]
                       for n in names):
        return runtime
    return None


def test_services_are_independent_and_each_gets_its_state(supervised, tmp_path):
    plans = {
        "web": web(tmp_path),
        "crasher": bash("crasher", "echo boom; exit 1", tmp_path, max_retries=1),
        "job": bash("job", "echo done", tmp_path),
        "broken": BuildError("No start command detected. Specify a start command: "
                             "https://railpack.com/config/file#deploy"),
    }
    supervisor = supervised(plans)
    assert supervisor.wait_state("crasher", [COMPLETED, CRASHED], 10) == CRASHED
    assert supervisor.wait_state("job", [COMPLETED, CRASHED], 10) == COMPLETED
    assert supervisor.wait_state("web", [ACTIVE, FAILED], 20) == ACTIVE
    assert supervisor.state("broken") == FAILED
    assert supervisor.restart_count("crasher") == 1
    assert httpx.get(f"{supervisor.url('web')}/", verify=False).status_code == 200

    state = tmp_path / "state"
    assert "No start command detected" in (state / "logs" / "broken.build.log").read_text()
    assert "[1/1] Healthcheck succeeded!" in (state / "logs" / "web.build.log").read_text()
    runtime = read_runtime(state)
    assert supervisor_alive(runtime)
    services = runtime["services"]
    assert {n: s["state"] for n, s in services.items()} == {
        "web": ACTIVE, "crasher": CRASHED, "job": COMPLETED, "broken": FAILED}
    assert services["web"]["url"] == supervisor.url("web") == f"https://{plans['web'].public_domain}"
    assert services["web"]["pgid"] == services["web"]["pid"] and not gone(services["web"]["pid"])

    supervisor.stop()
    assert {n: supervisor.state(n) for n in plans} == {n: REMOVED for n in plans} | {"broken": FAILED}
    assert gone(services["web"]["pid"])
    after = read_runtime(state)
    assert after["supervisor"] is None and all(not s.get("pid") for s in after["services"].values())


def test_a_service_starts_once_the_services_it_references_are_active(supervised, tmp_path):
    port = free_port()
    db = bash("db", f"sleep 1; exec {sys.executable} -m http.server {port} --bind 127.0.0.1", tmp_path, port=port,
              healthcheck_path="/", healthcheck_timeout=30)
    plans = {"app": bash("app", "sleep 300", tmp_path, depends_on=("db",)), "db": db}
    supervisor = supervised(plans)
    assert supervisor.wait_state("app", [ACTIVE], 40) == ACTIVE
    lines = (tmp_path / "state" / "logs" / "emulator.log").read_text().splitlines()
    assert lines.index("db Active") < next(i for i, line in enumerate(lines) if line.startswith("app started"))


def test_an_edge_port_in_use_is_a_clear_error(supervised, tmp_path):
    plan = web(tmp_path)
    with socket.create_server(("127.0.0.1", int(plan.public_domain.split(":")[1]))):
        with pytest.raises(SupervisorError, match="cannot listen on 127.0.0.1:"):
            supervised({"web": plan})


@pytest.fixture
def pg_state_dir():
    # Not under pytest's basetemp: a pytest session starting meanwhile resets that tree to 0700, which locks
    # out the unprivileged user PostgreSQL runs as under root.
    with tempfile.TemporaryDirectory(prefix="emulator-state-") as path:
        yield Path(path)


def test_postgres_and_replay_builtins(pg_state_dir, supervised, tmp_path):  # the dir outlives the services
    pg_port, replay_port = free_port(), free_port()
    volume = pg_state_dir / "volumes" / "postgres"
    env = {"POSTGRES_PASSWORD": "pg-secret-pw", "POSTGRES_DB": "railway", "PGDATA": str(volume / "pgdata")}
    argv, user = postgres_server(env, volume, pg_port).foreground_command()  # what the build step gives the plan
    replay = (sys.executable, "-m", "emulator.runtime.replay", str(REPO / "cassettes"), str(replay_port))
    plans = {
        "Postgres": ServicePlan(name="Postgres", kind="postgres", argv=tuple(argv), user=user, cwd=volume, port=pg_port,
                                env=env, secrets=frozenset({"pg-secret-pw"})),
        "hyperliquid": ServicePlan(name="hyperliquid", kind="replay", argv=replay, cwd=REPO, port=replay_port, env={}),
    }
    supervisor = supervised(plans, state_dir=pg_state_dir)
    logs = pg_state_dir / "logs"
    # Neither references the other, so start() waits for neither (a service waits only for its references).
    assert supervisor.wait_state("Postgres", {ACTIVE, FAILED}, 60) == ACTIVE, \
        [p.read_text()[-2000:] for p in logs.glob("Postgres.*")]
    assert supervisor.wait_state("hyperliquid", {ACTIVE, FAILED}, 60) == ACTIVE
    url = f"postgresql://postgres:pg-secret-pw@127.0.0.1:{pg_port}/railway"
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("railway",)
    assert httpx.post(f"http://127.0.0.1:{replay_port}/info", json={"type": "nope"}).status_code in (404, 200)
    postgres = supervisor.deployments["Postgres"].processes()
    assert len(postgres) > 1  # the postmaster and its helpers
    supervisor.stop()
    assert all(gone(p.pid) for p in postgres)
    assert "ready to accept connections" in (logs / "Postgres.deploy.log").read_text()
    assert (volume / "pgdata" / "PG_VERSION").is_file()  # where the plan's PGDATA says


def test_down_from_another_process_stops_everything(background, tmp_path):
    plan = bash("worker", "sleep 300 & sleep 300 & wait", tmp_path, draining_seconds=2)
    proc = background({"worker": plan, "web": web(tmp_path)})
    runtime = wait_until(lambda: running_runtime(tmp_path / "state", "worker", "web"), timeout=30,
                         what="worker and web running")
    members = [p.pid for p in psutil.Process(runtime["services"]["worker"]["pid"]).children(recursive=True)]
    assert len(members) == 3  # under the launcher: bash and its two sleeps

    second = Supervisor({"worker": plan}, tmp_path / "state", LogSink(None, console=None))
    with pytest.raises(SupervisorError, match="already running"):
        second.start()
    second.stop()  # as `up` does after a failed start: it must not disown the running emulator
    assert supervisor_alive(read_runtime(tmp_path / "state"))

    assert sorted(stop_from_state_file(tmp_path / "state")) == ["web", "worker"]
    assert proc.wait(5) == 128 + signal.SIGTERM
    pids = members + [s["pid"] for s in runtime["services"].values()]
    assert all(gone(pid) for pid in pids)
    after = read_runtime(tmp_path / "state")
    assert after["supervisor"] is None
    assert {s["state"] for s in after["services"].values()} == {REMOVED}


@pytest.mark.parametrize("recovery", ["down", "up again"])
def test_what_a_killed_emulator_and_launcher_left_running_is_stopped(background, supervised, tmp_path, recovery):
    """A killed emulator's launchers stop its services (test_stops); should a launcher die with it (the OOM
    killer, say), `down` or the next `up` stops what is left."""
    proc = background({"worker": bash("worker", "trap '' TERM; sleep 300 & wait", tmp_path, draining_seconds=0.3)})
    runtime = wait_until(lambda: running_runtime(tmp_path / "state", "worker"), timeout=20, what="the worker running")
    launcher = psutil.Process(runtime["services"]["worker"]["pid"])
    (command,) = wait_until(launcher.children, timeout=15, what="the launcher's command")
    os.kill(proc.pid, signal.SIGSTOP)  # neither restarting the worker nor closing the launcher's watchdog pipe
    launcher.kill()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)
    assert not gone(command.pid)  # orphaned, as after a crash
    if recovery == "down":
        assert stop_from_state_file(tmp_path / "state") == ["worker"]
    else:
        supervised({})
        assert "left running by an emulator that did not stop cleanly" in \
            (tmp_path / "state" / "logs" / "emulator.log").read_text()
    assert gone(command.pid)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "terminal closed"])
def test_ctrl_c_or_a_closed_terminal_stops_cleanly(background, tmp_path, sig):
    proc = background({"worker": bash("worker", "sleep 300", tmp_path, draining_seconds=1)})
    runtime = wait_until(lambda: running_runtime(tmp_path / "state", "worker"), timeout=20, what="the worker running")
    os.kill(proc.pid, sig)
    assert proc.wait(30) == 128 + sig
    assert gone(runtime["services"]["worker"]["pid"])
    assert json.loads((tmp_path / "state" / "runtime.json").read_text())["supervisor"] is None


def test_status_checks_the_processes_and_tells_a_killed_emulators_runtime_apart():
    """After a kill -9, runtime.json still says Active: the processes decide, and a pid now held by another
    process (its create time differs) is not the service's."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        started = psutil.Process(alive.pid).create_time()
        runtime = {"supervisor": {"pid": dead.pid, "started_at": 1.0}, "services": {
            "kept": {"state": ACTIVE, "pid": alive.pid, "pgid": alive.pid, "started_at": started},
            "gone": {"state": ACTIVE, "pid": dead.pid, "pgid": dead.pid, "started_at": 1.0},
            "reused": {"state": ACTIVE, "pid": alive.pid, "pgid": alive.pid, "started_at": started - 60},
            "done": {"state": COMPLETED, "pid": None, "pgid": None, "started_at": None},
        }}
        seen = observed(runtime)
        assert seen["supervisor"] is None and seen["stale"] == runtime["supervisor"]
        assert {name: (s["state"], s["running"]) for name, s in seen["services"].items()} == {
            "kept": (ACTIVE, True), "gone": (CRASHED, False), "reused": (CRASHED, False), "done": (COMPLETED, False)}

        me = psutil.Process()  # a live supervisor has the word on states; running is still checked
        live = observed({**runtime, "supervisor": {"pid": me.pid, "started_at": me.create_time()}})
        assert live["stale"] is None and live["supervisor"]["pid"] == me.pid
        assert (live["services"]["gone"]["state"], live["services"]["gone"]["running"]) == (ACTIVE, False)
    finally:
        alive.kill()
        alive.wait()
