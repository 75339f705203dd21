"""`python -m emulator` without running the stack: arguments, planning options, run, status, logs."""

import json
import socket
from pathlib import Path

import psutil
import pytest

from emulator.cli import main
from emulator.project import LOCAL_DRAINING_SECONDS, Project, UpOptions, previous_ports, with_draining
from emulator.runtime.build import prepare_stack
from emulator.runtime.edge import Edge
from emulator.runtime.postgres import free_port

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "railway.stack.toml"


@pytest.fixture
def state(tmp_path):
    return tmp_path / "state"


def emulator(state, *args) -> int:
    return main(["--stack", str(STACK), "--state-dir", str(state), *args])


def test_up_help_lists_the_variants_and_the_local_draining_default(capsys):
    with pytest.raises(SystemExit):
        main(["up", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "worker-replicas two worker replicas polling the same pool" in text
    assert f"local default {LOCAL_DRAINING_SECONDS:g}; Railway's default is 0" in text


@pytest.mark.parametrize("args, message", [
    (["--set", "worker.NOEQUALS"], "--set 'worker.NOEQUALS': write SERVICE.NAME=VALUE"),
    (["--set", "wroker.X=1"], "cannot set variables on 'wroker'"),
    (["--variant", "nope"], "no variant named 'nope'; variants: apt-variable-ignored"),
    (["--live", "--replay-error-every", "3"], "the --replay-* options have nothing to act on"),
    (["--service", "wbe"], "--service wbe: the stack has no such service; it has Postgres, web, worker"),
])
def test_up_refuses_what_it_cannot_do_before_starting_anything(state, capsys, args, message):
    assert emulator(state, "up", *args) == 1
    assert message in capsys.readouterr().err
    assert not (state / "runtime.json").exists()


def test_live_drops_the_replay_service_and_every_variable_that_points_at_it(state):
    stack = Project(STACK, state).stack(UpOptions(live=True))
    assert "hyperliquid" not in stack.services
    worker = stack.services["worker"].variables
    assert not [name for name in worker if name.startswith("HYPERLIQUID_")]  # the app defaults to the real API
    assert worker["PREFECT_API_URL"]  # the rest stays


@pytest.mark.parametrize("services, kept", [
    (["web"], {"web", "Postgres"}),  # web's database URL references Postgres
    (["worker"], {"worker", "web", "Postgres", "hyperliquid"}),
    (["Postgres"], {"Postgres"}),
])
def test_service_keeps_it_and_what_its_variables_reference(state, services, kept):
    assert set(Project(STACK, state).stack(UpOptions(services=services)).services) == kept


def test_service_means_no_flow_deploy(state, monkeypatch):
    asked = []
    monkeypatch.setattr(Project, "up", lambda self, options: asked.append(options) or 0)
    assert emulator(state, "up", "--service", "web") == 0
    assert asked[0].services == ["web"] and not asked[0].deploy


def test_replay_options_become_the_replay_services_variables(state):
    project = Project(STACK, state)
    options = UpOptions(replay={"REPLAY_ERROR_EVERY": "3", "REPLAY_LATENCY_SECONDS": "0.5"})
    replay = prepare_stack(project.stack(options), ROOT, state)["hyperliquid"]
    assert (replay.env["REPLAY_ERROR_EVERY"], replay.env["REPLAY_LATENCY_SECONDS"]) == ("3", "0.5")
    assert replay.env["PYTHONUNBUFFERED"] == "1"


def test_the_local_draining_default_applies_only_where_the_stack_sets_none(state):
    plans = prepare_stack(Project(STACK, state).stack(UpOptions()), ROOT, state)
    drained = {name: with_draining(plan, LOCAL_DRAINING_SECONDS).draining_seconds for name, plan in plans.items()}
    assert drained == {"Postgres": 60.0, "web": 10.0, "worker": 10.0, "hyperliquid": 10.0}
    assert with_draining(plans["web"], 0).draining_seconds == 0  # --draining-seconds 0: Railway's default


def runtime(state, services, supervisor=None) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / "runtime.json").write_text(json.dumps({"version": 1, "supervisor": supervisor, "services": services}))


def test_a_redeploy_keeps_the_ports_that_are_still_free(state):
    web, edge, taken = free_port(), free_port(), free_port()
    runtime(state, {
        "web": {"service": "web", "port": web, "public_domain": f"localhost:{edge}", "edge_port": edge},
        "worker.1": {"service": "worker", "port": taken},
    })
    with socket.create_server(("127.0.0.1", taken)):
        ports, domains = previous_ports(json.loads((state / "runtime.json").read_text()), free_only=True)
    assert ports == {"web": web} and domains == {"web": f"localhost:{edge}"}
    plans = prepare_stack(Project(STACK, state).stack(UpOptions()), ROOT, state, ports, domains)
    # The edge keeps its port; its host is 127.0.0.1 now, also for a state dir from when it was localhost.
    assert plans["web"].port == web and plans["web"].public_domain == f"127.0.0.1:{edge}"


def test_the_next_up_keeps_an_edge_port_its_closed_connections_still_wait_on(state, tmp_path):
    """The edge closes first (it answers http:// with a 301 and shuts its side), so for a minute after `down`
    the kernel keeps those connections in TIME_WAIT on the edge's port. They stop no listener that sets
    SO_REUSEADDR, as the edge does; a plain bind would fail and the next `up` would move the domain."""
    backend = free_port()
    edge = Edge(0, backend, tmp_path / "tls").start()
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := client.recv(4096):  # the edge's FIN ends it: the edge closed first
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 301")
    edge.stop()
    with socket.socket() as plain:  # the situation the test is about: a bind without SO_REUSEADDR fails
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", edge.port))
    runtime(state, {"web": {"service": "web", "port": backend, "public_domain": edge.domain,
                            "edge_port": edge.port}})
    _, domains = previous_ports(json.loads((state / "runtime.json").read_text()), free_only=True)
    assert domains == {"web": edge.domain}
    Edge(edge.port, backend, tmp_path / "tls").stop()  # and the edge can listen there again


def test_run_passes_the_services_environment_and_the_exit_code(state, capfd):
    code = emulator(state, "run", "worker", "--", "sh", "-c",
                    'echo "$RAILWAY_SERVICE_NAME $PREFECT_WORK_POOL $HOME"; command -v git; exit 3')
    out = capfd.readouterr().out.split()
    assert code == 3
    assert out[:2] == ["worker", "hyperliquid-vault-ingestion"]
    assert out[2].startswith(str(state / "homes"))
    assert out[3].startswith(str(state / "runtimes"))  # the modelled image's git
    assert not Path(out[2]).exists()  # the run's HOME goes with it


def test_run_reaches_a_service_the_last_up_left_out(state, capfd):
    state.mkdir(parents=True)
    (state / "project.json").write_text(json.dumps({"options": {"services": ["web"], "deploy": False,
                                                                "first_run_timeout": 300}}))  # an older up's
    assert emulator(state, "run", "worker", "--", "printenv", "PREFECT_WORK_POOL") == 0
    assert capfd.readouterr().out.strip() == "hyperliquid-vault-ingestion"


def test_run_inside_a_gitless_runtime_has_no_git(state, capfd):
    assert emulator(state, "run", "--variant", "gitless-worker", "worker", "--", "git", "--version") == 127
    assert "git: command not found in worker's runtime" in capfd.readouterr().err


def test_run_names_the_services_when_the_one_asked_for_does_not_exist(state, capsys):
    assert emulator(state, "run", "wroker", "--", "true") == 1
    assert "no service named 'wroker'; services: Postgres, hyperliquid, web, worker" in capsys.readouterr().err


def test_status_groups_replicas_under_their_service(state, capsys):
    me = psutil.Process()  # a live supervisor, whose word on the states status takes
    runtime(state, {
        "web": {"service": "web", "state": "Active", "port": 4001, "url": "https://localhost:4000"},
        "worker.1": {"service": "worker", "state": "Active", "port": 4002},
        "worker.2": {"service": "worker", "state": "Crashed", "port": 4003, "exit_code": 1},
    }, supervisor={"pid": me.pid, "started_at": me.create_time()})
    assert emulator(state, "status", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["running"] is True and status["pool"] is None
    assert set(status["services"]) == {"web", "worker"}
    worker = status["services"]["worker"]
    assert worker["state"] == "1/2 Active, 1/2 Crashed"
    assert {name: r["state"] for name, r in worker["replicas"].items()} == {"worker.1": "Active", "worker.2": "Crashed"}
    assert emulator(state, "status") == 0
    text = capsys.readouterr().out
    assert f"running (pid {me.pid}), variant base" in text
    assert "worker  1/2 Active, 1/2 Crashed 127.0.0.1:4002, 127.0.0.1:4003  (worker.1 Active, worker.2 Crashed)" \
        in text


def test_logs_of_a_service_cover_its_replicas(state, capsys):
    runtime(state, {"worker.1": {"service": "worker"}, "worker.2": {"service": "worker"}})
    (state / "logs").mkdir()
    (state / "logs" / "worker.1.deploy.log").write_text("one\n")
    (state / "logs" / "worker.2.deploy.log").write_text("two\n")
    (state / "logs" / "worker.1.build.log").write_text("↳ Found web command in Procfile\n")
    assert emulator(state, "logs", "worker") == 0
    assert capsys.readouterr().out.splitlines() == ["worker.1 | one", "worker.2 | two"]
    assert emulator(state, "logs", "worker.1", "--build") == 0
    assert capsys.readouterr().out == "↳ Found web command in Procfile\n"
    assert emulator(state, "logs", "web") == 1
    assert "no service named 'web'; services: worker" in capsys.readouterr().err


def test_down_and_reset_with_nothing_running(state, capsys):
    assert emulator(state, "status") == 0
    assert "nothing has run" in capsys.readouterr().out
    assert emulator(state, "down") == 0
    assert "nothing was running" in capsys.readouterr().out
    (state / "volumes").mkdir(parents=True)
    assert emulator(state, "reset") == 0
    assert not state.exists()


def test_repo_and_stack_may_live_apart_and_the_state_sits_beside_the_stack_file(tmp_path, capsys):
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    repo.mkdir()
    elsewhere.mkdir()
    stack = elsewhere / "mine.stack.toml"
    stack.write_text('[project]\nname = "mine"\n[services.web]\nstart_command = "true"\n')
    assert main(["--repo", str(repo), "--stack", str(stack), "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state_dir"] == str(elsewhere.resolve() / ".emulator-mine")
    project = Project(stack, None, repo)
    assert (project.repo_dir, project.stack_file) == (repo.resolve(), stack.resolve())
    (repo / "railway.stack.toml").write_text(stack.read_text())
    assert main(["--repo", str(repo), "status", "--json"]) == 0  # --repo alone: its railway.stack.toml
    assert json.loads(capsys.readouterr().out)["state_dir"] == str(repo.resolve() / ".emulator")


@pytest.mark.parametrize("args, message", [
    (["--repo", "/nonexistent/repo", "--stack", str(STACK), "status"], "--repo /nonexistent/repo: no such directory"),
    (["--repo", "/", "status"], "/railway.stack.toml: no such stack file; create it or pass --stack PATH"),
    (["--stack", str(STACK), "up", "--step-timeout", "nope=3"], "--step-timeout nope: the stack has no such step; "
                                                                 "its steps: deploy, first-run, vaults"),
    (["--stack", str(STACK), "up", "--step-timeout", "deploy"], "write STEP=SECONDS"),
])
def test_bad_locations_and_step_timeouts_are_clear_errors(args, message, capsys):
    assert main(args) == 1
    assert message in capsys.readouterr().err
