"""The stack file's [[steps]], run against a planned stack: what each step sees and when it is done.

The flow_run step needs a Prefect server and a worker; tests/emulator/test_any_repo.py and test_e2e.py run it.
"""

import http.server
import json
import sys
import threading
from pathlib import Path

import psutil
import psycopg
import pytest

from emulator.errors import StepError
from emulator.model.plan import ServicePlan
from emulator.model.stack import Step
from emulator.runtime import steps
from emulator.runtime.secrets import secret_store

WEB = ServicePlan(name="web", kind="app", argv=("true",), cwd=Path("/"), port=4321, public_domain="127.0.0.1:4433",
                  env={"RAILWAY_SERVICE_NAME": "web", "PORT": "4321", "RAILWAY_PRIVATE_DOMAIN": "127.0.0.1",
                       "RAILWAY_PUBLIC_DOMAIN": "127.0.0.1:4433", "PATH": "/image/bin", "HOME": "/image/home",
                       "TOKEN": "web-token"})


def context(tmp_path, plans=None, **changes) -> steps.StepContext:
    lines = []
    fields = dict(plans=plans or {"web": WEB}, shared={"POOL": "p1"}, secret=secret_store(tmp_path),
                  repo_dir=tmp_path, prefect_api=None, log=lines.append, stopped=lambda: False,
                  state=lambda name: "Active", snapshot={"EMULATOR_SNAPSHOT_URL": "file:///snap.git"})
    fields.update(changes)
    found = steps.StepContext(**fields)
    found.lines = lines
    return found


def test_a_step_runs_like_railway_run_with_the_services_variables_and_its_own(tmp_path):
    step = Step("show", "run", 'echo "$TOKEN $API $POOL $EMULATOR_SNAPSHOT_URL $HOME"; command -v python',
                service="web", variables={"API": "http://${{RAILWAY_PRIVATE_DOMAIN}}:${{web.PORT}}/api",
                                          "POOL": "${{shared.POOL}}"})
    ran = context(tmp_path)
    assert steps.run_step(step, ran) == {"exit_code": 0}
    words = ran.lines[1].split()
    assert words[:4] == ["web-token", "http://127.0.0.1:4321/api", "p1", "file:///snap.git"]
    assert words[4] != "/image/home"  # the developer's machine, not the image
    assert ran.lines[2] == str(Path(sys.executable).parent / "python")  # this interpreter first on PATH


def test_a_failing_or_hanging_command_fails_the_step_naming_it(tmp_path):
    with pytest.raises(StepError, match=r"step s: `exit 3` exited with code 3"):
        steps.run_step(Step("s", "run", "exit 3"), context(tmp_path))
    with pytest.raises(StepError, match=r"step s: `sleep 30` was still running after 1s: killed"):
        steps.run_step(Step("s", "run", "sleep 30", timeout=1), context(tmp_path))


def test_a_step_needs_its_service_active_and_existing(tmp_path):
    with pytest.raises(StepError, match="step s needs web, which is Crashed; see `python -m emulator logs web`"):
        steps.run_step(Step("s", "run", "true", service="web"), context(tmp_path, state=lambda name: "Crashed"))
    with pytest.raises(StepError, match=r"step s: there is no running service worker \(web\)"):
        steps.run_step(Step("s", "run", "true", service="worker"), context(tmp_path))
    with pytest.raises(StepError, match="variable X references \\$\\{\\{worker.PORT\\}\\}: there is no service"):
        steps.run_step(Step("s", "run", "true", variables={"X": "${{worker.PORT}}"}), context(tmp_path))


def test_sql_waits_until_the_query_returns_more_than_zero(tmp_path, database_url):
    step = Step("rows", "sql", "SELECT count(*) FROM things", variables={"DATABASE_URL": database_url}, timeout=20)

    def create_later():
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE things AS SELECT 1 AS x")

    threading.Timer(1.0, create_later).start()  # missing at first: the step keeps asking
    assert steps.run_step(step, context(tmp_path)) == {"value": 1}
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM things")
    with pytest.raises(StepError, match=r"gave 0, not a number > 0, for 1s") as failed:
        steps.run_step(Step("rows", "sql", step.target, variables=step.variables, timeout=1), context(tmp_path))
    assert failed.value.record == {"value": 0}


def test_sql_without_a_database_url_says_how_to_set_one(tmp_path):
    with pytest.raises(StepError, match=r'DATABASE_URL = "\$\{\{Postgres.DATABASE_URL\}\}"'):
        steps.run_step(Step("rows", "sql", "SELECT 1"), context(tmp_path))


def test_http_waits_for_a_200(tmp_path):
    answers = iter([503, 200])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(next(answers, 200))
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/health"
        assert steps.run_step(Step("h", "http", url, timeout=20), context(tmp_path)) == {"value": 200}
    finally:
        server.shutdown()
    with pytest.raises(StepError, match=r"GET http://127.0.0.1:1/ did not answer 200 within 1s"):
        steps.run_step(Step("h", "http", "http://127.0.0.1:1/", timeout=1), context(tmp_path))


def test_a_flow_run_step_waits_out_a_busy_server_as_prefects_client_does(tmp_path):
    """A Prefect server whose database is locked answers 503; Prefect's client retries 408/429/502/503 up to
    5 times (prefect/client/base.py), so `prefect deployment run` passes where a single try failed a step."""
    busy = iter([503, 503])
    posts = []

    class Prefect(http.server.BaseHTTPRequestHandler):
        def answer(self, code, body=None, **headers):
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(code)
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.endswith("/deployments/name/flow/deployment"):
                self.answer(200, {"id": "d1"})
            else:
                self.answer(200, {"id": "r1", "state": {"type": "COMPLETED", "name": "Completed"}})

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            posts.append(self.path)
            code = next(busy, 201)
            if code == 503:
                self.answer(503, {"detail": "Service Unavailable"}, Retry_After="0")
            else:
                self.answer(201, {"id": "r1", "name": "busy-run"})

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Prefect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = f"http://127.0.0.1:{server.server_port}/api"
        step = Step("f", "flow_run", "flow/deployment", timeout=20)
        record = steps.run_step(step, context(tmp_path, prefect_api=api))
    finally:
        server.shutdown()
    assert record["flow_run"] == {"id": "r1", "name": "busy-run", "state": "Completed"}
    assert posts == ["/api/deployments/d1/create_flow_run"] * 3


def test_a_flow_run_step_without_an_api_says_where_to_name_one(tmp_path):
    with pytest.raises(StepError, match=r"set PREFECT_API_URL in the step's variables or name the server in \[prefect\]"):
        steps.run_step(Step("f", "flow_run", "flow/deployment"), context(tmp_path))


def test_a_stop_mid_step_kills_the_command_and_ends_the_step(tmp_path):
    marker = tmp_path / "pid"

    def stopped() -> bool:  # Ctrl-C once the command runs
        return marker.exists() and marker.read_text().strip() != ""

    step = Step("long", "run", f"echo $$ > {marker}; exec sleep 300", timeout=120)
    assert steps.run_step(step, context(tmp_path, stopped=stopped)) == {}
    pid = int(marker.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
