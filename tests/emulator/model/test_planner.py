import builtins
import io
import os
import random
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from emulator.model.plan import BuildError, ServicePlan
from emulator.model.planner import plan_stack
from emulator.model.stack import load_stack
from emulator.runtime.build import prepare_stack, remove_homes

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "railway.stack.toml"
# What the builders read from the repo and what its image installs: the tests plan a copy, so they see the
# real configuration. The same files give the same snapshot tree, so every test's image is one cached build.
DEPLOYMENT_FILES = ("Procfile", "pyproject.toml", "uv.lock", "README.md", "railpack.json", "nixpacks.toml",
                    "Dockerfile.worker", "start_worker.sh", "vault_ingest")
PROBE = 'for t in git curl apt-get apt dpkg sudo vault-ingest; do echo "$t=$(command -v $t || echo -)"; done'


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """One state dir for the module, as one emulator keeps across deploys: runtime bins are built once."""
    return tmp_path_factory.mktemp("state")


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    for name in DEPLOYMENT_FILES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif (ROOT / name).exists():
            shutil.copy(ROOT / name, root / name)
    return root


@pytest.fixture
def plan(repo, state):
    def plan(variant=None, **kwargs) -> dict[str, ServicePlan | BuildError]:
        return prepare_stack(load_stack(SHIPPED, variant), repo, state, **kwargs)
    return plan


def probe(service: ServicePlan) -> dict[str, str]:
    """Which commands the service's own shell finds, run the way its image runs commands."""
    argv = (*service.argv[:-1], PROBE)
    out = subprocess.run(argv, env=service.env, cwd=service.cwd, capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def test_the_production_stack_plans_every_service(plan, repo):
    plans = plan()
    assert {name: p.kind for name, p in plans.items()} == {
        "Postgres": "postgres", "web": "app", "worker": "app", "hyperliquid": "replay"}
    web, worker = plans["web"], plans["worker"]
    assert web.argv == ("/bin/bash", "-c", "vault-ingest serve")
    assert worker.argv == ("/bin/bash", "-c", "bash start_worker.sh")
    assert (web.healthcheck_path, web.healthcheck_timeout, web.restart_policy, web.max_retries) == (
        "/api/health", 300.0, "ON_FAILURE", 10)
    # Each replica runs in its own fresh copy of the repo's snapshot (Railpack's /app), never the checkout.
    assert web.cwd != worker.cwd and {web.cwd.parent, worker.cwd.parent} == {plans["web"].cwd.parent}
    assert not web.cwd.is_relative_to(repo) and (web.cwd / "Procfile").read_text() == (repo / "Procfile").read_text()
    assert len({p.port for p in plans.values()}) == 4
    assert web.env["PORT"] == str(web.port)
    assert plans["Postgres"].draining_seconds == 60.0 and web.draining_seconds == 0.0


def test_references_reach_the_other_services_local_ports(plan):
    plans = plan()
    web, worker, pg, replay = plans["web"], plans["worker"], plans["Postgres"], plans["hyperliquid"]
    password = pg.env["POSTGRES_PASSWORD"]
    assert worker.env["PREFECT_API_URL"] == f"https://{web.public_domain}/api"  # through the edge
    assert worker.env["DATABASE_URL"] == f"postgresql://postgres:{password}@127.0.0.1:{pg.port}/railway"
    assert web.env["PREFECT_API_DATABASE_CONNECTION_URL"] == worker.env["DATABASE_URL"].replace("/railway", "/prefect")
    assert worker.env["HYPERLIQUID_STATS_URL"] == f"http://127.0.0.1:{replay.port}/Mainnet/vaults"
    assert worker.env["PREFECT_WORK_POOL"] == "hyperliquid-vault-ingestion"
    assert worker.env["RAILWAY_PRIVATE_DOMAIN"] == "127.0.0.1"


def test_postgres_gets_railways_variables_pointed_at_its_local_server_and_volume(plan, state):
    pg = plan()["Postgres"]
    volume = state.resolve() / "volumes" / "postgres"
    assert pg.cwd == volume and volume.is_dir()
    assert re.fullmatch(r"[A-Za-z]{32}", pg.env["POSTGRES_PASSWORD"])
    assert pg.env["PGPASSWORD"] == pg.env["POSTGRES_PASSWORD"]
    assert (pg.env["PGHOST"], pg.env["PGPORT"], pg.env["PGUSER"], pg.env["PGDATABASE"]) == (
        "127.0.0.1", str(pg.port), "postgres", "railway")
    assert pg.env["PGDATA"] == f"{volume}/pgdata"
    assert "PATH" not in pg.env


def test_the_postgres_password_is_stable_across_runs(plan):
    assert plan()["Postgres"].env["POSTGRES_PASSWORD"] == plan()["Postgres"].env["POSTGRES_PASSWORD"]


def test_secrets_are_collected_from_each_plans_environment(plan):
    plans = plan()
    password = plans["Postgres"].env["POSTGRES_PASSWORD"]
    assert password in plans["Postgres"].secrets
    assert password in plans["worker"].secrets and password in plans["web"].secrets
    assert plans["hyperliquid"].secrets == frozenset()


def test_ids_are_stable_deployments_are_new(plan):
    first, second = plan()["web"].env, plan()["web"].env
    assert first["RAILWAY_SERVICE_ID"] == second["RAILWAY_SERVICE_ID"]
    assert first["RAILWAY_PROJECT_ID"] == second["RAILWAY_PROJECT_ID"]
    assert first["RAILWAY_DEPLOYMENT_ID"] != second["RAILWAY_DEPLOYMENT_ID"]


def test_a_kept_port_is_never_handed_to_another_service(repo, state, monkeypatch):
    """Between `down` and `up` a kept edge port is free, so a fresh pick could land on it; the picks skip it."""
    sample = random.sample
    kept = 12345
    # Every pick tries the kept port first, as an unlucky random draw would.
    monkeypatch.setattr(random, "sample", lambda population, k: [kept, *sample(population, k)])
    plans = plan_stack(load_stack(SHIPPED, "worker-replicas"), repo, state, edge_domains={"web": f"127.0.0.1:{kept}"},
                       secret=lambda namespace, variable, length, alphabet: "x" * length)
    assert plans["web"].public_domain == f"127.0.0.1:{kept}"
    ports = [plan.port for plan in plans.values()]
    assert kept not in ports and len(set(ports)) == len(ports)


def test_pinned_ports_and_edge_domains_are_used(plan):
    plans = plan(ports={"web": 45111, "Postgres": 45112},
                 edge_domains={"web": "127.0.0.1:45113", "worker": "127.0.0.1:45114"})
    assert plans["web"].port == 45111 and plans["Postgres"].port == 45112
    assert plans["web"].public_domain == plans["web"].env["RAILWAY_PUBLIC_DOMAIN"] == "127.0.0.1:45113"
    assert plans["worker"].env["PREFECT_API_URL"] == "https://127.0.0.1:45113/api"
    assert "RAILWAY_PUBLIC_DOMAIN" not in plans["worker"].env and plans["worker"].public_domain is None


def test_the_public_domain_is_the_edge_ip_so_a_scheme_less_url_is_a_relative_path(plan):
    domain = plan()["web"].public_domain
    host, _, port = domain.partition(":")
    assert host == "127.0.0.1" and port.isdigit()
    # As with `my-app.up.railway.app/api`; `localhost:<port>/api` would parse with the scheme `localhost`.
    assert urlsplit(f"{domain}/api").scheme == "" and urlsplit(f"localhost:{port}/api").scheme == "localhost"


def test_a_scheme_less_ui_url_stays_scheme_less(plan):
    web = plan("ui-api-url-no-scheme", edge_domains={"web": "127.0.0.1:45113"})["web"]
    assert web.env["PREFECT_UI_API_URL"] == "127.0.0.1:45113/api"
    assert web.argv[-1] == "prefect server start --port $PORT"


def test_the_worker_without_a_start_command_runs_web(plan):
    worker = plan("worker-runs-web")["worker"]
    assert worker.argv == ("/bin/bash", "-c", "vault-ingest serve")
    assert "↳ Found web command in Procfile" in worker.build_log


def test_the_railpack_worker_has_git_only_while_its_apt_packages_name_it(plan, repo):
    assert probe(plan()["worker"])["git"] != "-"
    assert probe(plan("gitless-worker")["worker"])["git"] == "-"
    assert probe(plan("gitless-worker-script")["worker"])["git"] == "-"
    (repo / "railpack.json").unlink(missing_ok=True)
    assert probe(plan()["web"])["git"] == "-"  # web names no apt packages of its own


@pytest.mark.parametrize("variant, git, lines, absent", [
    # railway.md §2.2, railpack core/core.go GetConfig: the file's list replaces the variable's.
    ("railpack-json-without-git", False, ["↳ Using config file `railpack.json`", "install apt packages: ffmpeg",
                                          "↳ Add `...` to `deploy.aptPackages` to retain Railpack packages"],
     ["is ignored"]),
    ("apt-variable-ignored", False, ["⚠ RAILPACK_DEPLOY_APT_PACKAGES is ignored: `railpack.json` sets that list "
                                     "too", "install apt packages: ffmpeg"], ["retain Railpack packages"]),
    # No "...": only the Python provider's own packages go (none for psycopg[binary]), git stays.
    ("railpack-json-without-spread", True, ["install apt packages: git",
                                            "↳ Add `...` to `deploy.aptPackages` to retain Railpack packages"],
     ["is ignored"]),
    (None, True, ["install apt packages: git"], ["is ignored", "retain Railpack"]),  # the base sets only the file
])
def test_a_railpack_json_overlay_decides_git_and_the_build_log_says_which_list_won(plan, variant, git, lines,
                                                                                    absent):
    worker = plan(variant)["worker"]
    assert (probe(worker)["git"] != "-") is git
    log = "\n".join(worker.build_log)
    for line in lines:
        assert line in log, log
    for text in absent:
        assert text not in log, log


def test_a_files_overlay_changes_only_that_services_snapshot(plan, repo):
    plans = plan("railpack-json-without-git")
    assert "ffmpeg" in (plans["worker"].cwd / "railpack.json").read_text()
    assert (plans["web"].cwd / "railpack.json").read_text() == (repo / "railpack.json").read_text()
    assert probe(plans["web"])["git"] != "-"  # web still builds from the repository's railpack.json


def test_the_nixpacks_login_shell_keeps_the_modelled_path(plan):
    worker = plan("nixpacks-worker")["worker"]
    assert worker.argv[:3] == ("/bin/bash", "-l", "-c")
    found = probe(worker)
    assert found["git"] != "-" and found["curl"] != "-"
    assert found["vault-ingest"].endswith("/bin/vault-ingest")


def test_the_repos_dockerfile_worker_runs_start_worker_sh_from_the_checkout(plan, repo):
    worker = plan("dockerfile-worker")["worker"]
    assert worker.argv == ("bash", f"{worker.cwd}/start_worker.sh")  # CMD ["bash", "/app/start_worker.sh"]
    assert "$ bash /app/start_worker.sh" in worker.build_log


def test_the_dockerfile_worker_installs_the_lock_as_its_dockerfile_does(plan):
    worker = plan("dockerfile-worker")["worker"]
    assert "$ uv sync --locked --no-dev --no-editable" in worker.build_log
    found = subprocess.run(["bash", "-c", "command -v vault-ingest"], env=worker.env, cwd=worker.cwd,
                           capture_output=True, text=True).stdout.strip()
    assert found == worker.env["PATH"].split(":")[0] + "/vault-ingest"


def test_the_dockerfile_worker_has_what_its_dockerfile_installs(plan, repo):
    (repo / "Dockerfile.worker").write_text(
        "FROM python:3.13-slim\nRUN apt-get update && apt-get install -y --no-install-recommends git ca-certificates\n"
        'CMD ["bash", "-c", "' + PROBE.replace('"', '\\"') + '"]\n')
    worker = plan("dockerfile-worker")["worker"]
    assert worker.builder == "dockerfile" and worker.argv[:2] == ("bash", "-c")
    found = dict(line.split("=", 1) for line in subprocess.run(
        worker.argv, env=worker.env, cwd=worker.cwd, capture_output=True, text=True, check=True).stdout.splitlines())
    assert found["git"] != "-" and found["curl"] == "-"


@pytest.mark.parametrize("variant", [None, "gitless-worker", "nixpacks-worker", "worker-runs-web"])
def test_no_package_manager_of_the_host_is_ever_on_path(plan, variant, state):
    for name, service in plan(variant).items():
        if service.kind == "app":
            found = probe(service)
            assert [found[tool] for tool in ("dpkg", "sudo")] == ["-"] * 2, name
            # apt-get and apt are the deployment's own stand-ins (emulator/runtime/apt.py), never the host's.
            for tool in ("apt-get", "apt"):
                assert Path(found[tool]).is_relative_to(Path(service.env["HOME"])), (name, found[tool])
            assert found["vault-ingest"].endswith("/bin/vault-ingest")


def test_path_puts_the_images_venv_first_then_the_deployments_own_bin(plan):
    worker = plan()["worker"]
    first, own, runtime = worker.env["PATH"].split(":")
    assert (Path(first) / "vault-ingest").is_file() and (worker.cwd / ".venv" / "bin").resolve() == Path(first)
    assert Path(own).is_relative_to(Path(worker.env["HOME"])) and (Path(own) / "apt-get").is_file()
    assert (Path(runtime) / "bash").exists() and not (Path(runtime) / "apt-get").exists()
    assert Path(runtime) == Path(plan()["worker"].env["PATH"].split(":")[2])  # identical images share one
    assert worker.env["HOME"] != plan()["worker"].env["HOME"]  # a fresh container filesystem per deploy
    assert f"export PATH={worker.env['PATH']}" in (Path(worker.env["HOME"]) / ".bash_profile").read_text()


INSTALL_GIT = "apt-get update -qq && apt-get install -y -qq --no-install-recommends git && git --version"


def test_apt_get_in_a_root_image_installs_git_for_that_deployment_only(plan, repo):
    """Railpack's runtime runs the start command as root with apt (railway.md §1.2): a start-time install
    works there, and the next deployment's fresh filesystem has no git again."""
    worker = plan("gitless-worker")["worker"]
    assert probe(worker)["git"] == "-"
    installed = run_in(worker, INSTALL_GIT)
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout.startswith("git version ")
    assert Path(probe(worker)["git"]).parent == Path(worker.env["PATH"].split(":")[1])
    assert probe(plan("gitless-worker")["worker"])["git"] == "-"  # the redeploy does not keep it


def test_apt_get_in_a_non_root_dockerfile_image_is_refused_as_debian_refuses_it(plan, repo):
    """Dockerfile.worker ends with `USER worker`: apt-get cannot take dpkg's lock there."""
    (repo / "Dockerfile.worker").write_text(
        "FROM python:3.12-slim\nRUN useradd worker\nUSER worker\nCMD [\"bash\", \"start_worker.sh\"]\n")
    worker = plan("dockerfile-worker")["worker"]
    refused = run_in(worker, "apt-get install -y git")
    assert refused.returncode == 100
    assert refused.stderr.splitlines() == [
        "E: Could not open lock file /var/lib/dpkg/lock-frontend - open (13: Permission denied)",
        "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), are you root?"]
    assert run_in(worker, "command -v git").returncode == 1


def run_in(service: ServicePlan, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(("/bin/bash", "-c", script), env=service.env, cwd=service.cwd, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_replicas_get_their_own_port_and_replica_id(plan):
    plans = plan("worker-replicas")
    one, two = plans["worker.1"], plans["worker.2"]
    assert "worker" not in plans
    assert one.port != two.port and one.env["PORT"] == str(one.port)
    assert one.env["RAILWAY_REPLICA_ID"] != two.env["RAILWAY_REPLICA_ID"]
    assert one.env["RAILWAY_DEPLOYMENT_ID"] == two.env["RAILWAY_DEPLOYMENT_ID"]
    assert one.env["RAILWAY_SERVICE_NAME"] == "worker" and one.replicas == two.replicas == 2


def write_stack(tmp_path, text):
    path = tmp_path / "stack.toml"
    path.write_text('[project]\nname = "p"\n' + text)
    return load_stack(path)


def test_one_failing_service_does_not_stop_the_others(repo, state, tmp_path):
    stack = write_stack(tmp_path, """
[services.web]
[services.worker]
start_command = "run"
[services.worker.variables]
API = "${{B}}"
B = "${{API}}"
""")
    plans = prepare_stack(stack, repo, state)
    assert isinstance(plans["web"], ServicePlan)
    assert isinstance(plans["worker"], BuildError)
    assert str(plans["worker"]) == (
        "worker: variable API references ${{B}}, which references ${{API}}: the references form a cycle "
        "(worker.API -> worker.B -> worker.API)"
    )


def test_a_reference_to_the_injected_port_renders_empty_and_the_build_log_says_why(repo, state, tmp_path):
    stack = write_stack(tmp_path, """
[services.web]
[services.worker]
start_command = "run"
[services.worker.variables]
API = "http://${{web.RAILWAY_PRIVATE_DOMAIN}}:${{web.PORT}}/api"
SELF = "${{PORT}}"
""")
    plans = prepare_stack(stack, repo, state)
    worker = plans["worker"]
    # Deployed anyway, with the URL Railway would give it: an empty port, so port 80 and a refused connection.
    assert worker.env["API"] == "http://127.0.0.1:/api" and worker.env["SELF"] == ""
    assert worker.env["PORT"] == str(worker.port)  # injected all the same
    warnings = [line for line in worker.build_log if line.startswith("⚠ worker:")]  # not the image's notes
    assert len(warnings) == 2
    assert warnings[0].startswith("⚠ worker: variable API references ${{web.PORT}}, which Railway renders as an "
                                  "empty string: web has no variable PORT; the PORT Railway injects at runtime")
    assert "set PORT on web" in warnings[0]
    assert warnings[1].endswith('set PORT on worker (e.g. PORT = "8080") or read $PORT at runtime')
    assert "$ run" in worker.build_log  # the builder's lines follow
    assert not [line for line in plans["web"].build_log if line.startswith("⚠ web:")]


def test_the_shipped_stack_has_no_variable_warnings(plan):
    for name, service in plan().items():
        assert not [line for line in service.build_log if line.startswith(f"⚠ {name.split('.')[0]}:")], name


def test_an_ipv6_only_environment_reaches_services_over_ipv6_loopback(repo, state, tmp_path):
    stack = write_stack(tmp_path, """private_network = "ipv6-only"
[services.Postgres]
source = "postgres"
[services.web]
[services.web.variables]
PORT = "45140"
[services.worker]
start_command = "run"
[services.worker.variables]
API = "http://${{web.RAILWAY_PRIVATE_DOMAIN}}:${{web.PORT}}/api"
HOST = "${{web.RAILWAY_PRIVATE_DOMAIN}}"
DATABASE_URL = "${{Postgres.DATABASE_URL}}"
""")
    assert stack.private_network == "ipv6-only"
    plans = prepare_stack(stack, repo, state)
    worker, pg = plans["worker"], plans["Postgres"]
    assert worker.env["API"] == "http://[::1]:45140/api" and worker.env["HOST"] == "::1"
    # Railway's Postgres listens on IPv6 too; only its local stand-in is IPv4-only, so it stays reachable.
    assert f"@127.0.0.1:{pg.port}/railway" in worker.env["DATABASE_URL"]


def test_localhost_to_another_service_is_warned_about_in_the_build_log(repo, state, tmp_path):
    stack = write_stack(tmp_path, """
[services.web]
[services.web.variables]
PORT = "4200"
[services.worker]
start_command = "run"
[services.worker.variables]
PREFECT_API_URL = "http://localhost:4200/api"
""")
    worker = prepare_stack(stack, repo, state)["worker"]
    assert ("⚠ worker: variable PREFECT_API_URL points at localhost:4200, which on Railway is worker's own "
            "container, never another service; use ${{web.RAILWAY_PRIVATE_DOMAIN}} instead of localhost "
            "(or https://${{web.RAILWAY_PUBLIC_DOMAIN}})") in worker.build_log


def test_a_build_failure_is_railways_message(repo, state, tmp_path):
    (repo / "Procfile").unlink()
    plans = prepare_stack(write_stack(tmp_path, "[services.web]\n"), repo, state)
    assert str(plans["web"]) == (
        "No start command detected. Specify a start command: https://railpack.com/config/file#deploy"
    )


def test_a_user_set_port_is_honoured(repo, state, tmp_path):
    stack = write_stack(tmp_path, """
[services.web]
healthcheck_path = "/api/health"
[services.web.variables]
PORT = "45120"
[services.worker]
start_command = "run"
[services.worker.variables]
API = "http://${{web.RAILWAY_PRIVATE_DOMAIN}}:45120/api"
""")
    plans = prepare_stack(stack, repo, state)
    assert plans["web"].port == 45120 and plans["web"].env["PORT"] == "45120"
    assert plans["worker"].env["API"] == "http://127.0.0.1:45120/api"


@pytest.mark.parametrize("text, message", [
    ('[services.web.variables]\nPORT = "http"\n', "web: PORT = 'http' must be a port number"),
    ('[services.web]\nreplicas = 2\n[services.web.variables]\nPORT = "4200"\n', "replicas would share one local port"),
    ('[services.web.variables]\nPATH = "/usr/bin"\n', "web: PATH is set as a service variable"),
    ('[services.web.variables]\nRAILWAY_DEPLOYMENT_DRAINING_SECONDS = "soon"\n', "must be a number of seconds"),
])
def test_settings_the_emulator_cannot_honour_fail_that_service(repo, state, tmp_path, text, message):
    plans = prepare_stack(write_stack(tmp_path, text), repo, state)
    assert isinstance(plans["web"], BuildError) and message in str(plans["web"])


def test_railway_timing_variables_feed_the_plan(repo, state, tmp_path):
    stack = write_stack(tmp_path, """
[services.web.variables]
RAILWAY_DEPLOYMENT_DRAINING_SECONDS = "30"
RAILWAY_HEALTHCHECK_TIMEOUT_SEC = "60"
""")
    web = prepare_stack(stack, repo, state)["web"]
    assert (web.draining_seconds, web.healthcheck_timeout) == (30.0, 60.0)


def test_https_on_the_public_domain_stays_https_and_the_services_trust_the_edge(repo, state, tmp_path):
    stack = write_stack(tmp_path, """
[services.web]
public_domain = true
[services.web.variables]
PREFECT_UI_API_URL = "https://${{RAILWAY_PUBLIC_DOMAIN}}/api"
[services.worker]
start_command = "run"
[services.worker.variables]
PREFECT_API_URL = "https://${{web.RAILWAY_PUBLIC_DOMAIN}}/api"
""")
    plans = prepare_stack(stack, repo, state, edge_domains={"web": "127.0.0.1:45130"})
    assert plans["web"].env["PREFECT_UI_API_URL"] == "https://127.0.0.1:45130/api"
    assert plans["worker"].env["PREFECT_API_URL"] == "https://127.0.0.1:45130/api"
    bundle = Path(plans["worker"].env["SSL_CERT_FILE"])
    assert bundle == Path(plans["web"].env["SSL_CERT_FILE"])
    assert (state / "tls" / "edge.crt").read_text() in bundle.read_text()


def test_without_a_public_domain_nothing_changes_the_trust_store(repo, state, tmp_path):
    assert "SSL_CERT_FILE" not in prepare_stack(write_stack(tmp_path, "[services.web]\n"), repo, state)["web"].env


def test_remove_homes_deletes_each_deployments_home(plan, state):
    plans = plan()
    homes = [Path(p.env["HOME"]) for p in plans.values() if p.kind == "app"]
    assert all(home.is_dir() for home in homes)
    remove_homes(state, plans)
    assert not any(home.exists() for home in homes)
    plan()
    remove_homes(state)
    assert not (state / "homes").exists()


def test_every_plan_is_finished_with_its_references_for_the_start_order(plan, repo):
    plans = plan()
    assert plans["web"].depends_on == ("Postgres",)
    assert plans["worker"].depends_on == ("Postgres", "hyperliquid", "web")
    assert plans["Postgres"].depends_on == () and plans["hyperliquid"].depends_on == ()
    # The built-ins' commands too: nothing is left for the supervisor to fill in.
    postgres, replay = plans["Postgres"], plans["hyperliquid"]
    assert Path(postgres.argv[0]).name == "postgres" and str(postgres.port) in postgres.argv
    assert postgres.argv[postgres.argv.index("-D") + 1] == postgres.env["PGDATA"]
    assert replay.argv[1:] == ("-m", "emulator.runtime.replay", str(repo.resolve() / "cassettes"), str(replay.port))


@pytest.fixture
def nothing_written_nothing_run(monkeypatch):
    """Fail any process start and any file or directory written, as the model must do neither."""
    def refuse(what):
        def refused(*args, **kwargs):
            raise AssertionError(f"the model {what}: {args[:2]}")
        return refused

    real_open, real_os_open = builtins.open, os.open

    def read_only_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            raise AssertionError(f"the model opened {file} to write")
        return real_open(file, mode, *args, **kwargs)

    def read_only_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC):
            raise AssertionError(f"the model opened {path} to write")
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("started a process"))
    monkeypatch.setattr(builtins, "open", read_only_open)
    monkeypatch.setattr(io, "open", read_only_open)
    monkeypatch.setattr(os, "open", read_only_os_open)
    for name in ("mkdir", "makedirs", "symlink", "link", "rename", "replace", "unlink", "remove", "rmdir", "chmod",
                 "chown", "truncate", "system", "fork", "posix_spawn", "posix_spawnp", "execv", "execve"):
        monkeypatch.setattr(os, name, refuse(f"called os.{name}"))
    for name in ("rmtree", "copytree", "copyfile", "copy", "copy2", "move"):
        monkeypatch.setattr(shutil, name, refuse(f"called shutil.{name}"))


# Every kind of build the shipped stack has: Railpack with its file and a files overlay, Nixpacks, a
# Dockerfile, apt at start time, replicas.
@pytest.mark.parametrize("variant", [None, "nixpacks-worker", "gitless-worker", "gitless-worker-apt",
                                     "railpack-json-without-git", "dockerfile-worker", "worker-replicas"])
def test_planning_is_pure_every_side_effect_is_left_to_the_build(repo, tmp_path, variant,
                                                                nothing_written_nothing_run):
    state = tmp_path / "state"  # never created: planning writes nothing there
    secrets = {}
    plans = plan_stack(load_stack(SHIPPED, variant), repo, state, edge_domains={"web": "127.0.0.1:45131"},
                       secret=lambda namespace, variable, length, alphabet:
                       secrets.setdefault((namespace, variable), alphabet[0] * length))
    assert not state.exists()  # not even the snapshot, the secrets or the trust bundle
    apps = [plan for plan in plans.values() if plan.kind == "app"]
    assert {plan.env["RAILWAY_SERVICE_NAME"] for plan in apps} == {"web", "worker"}
    # What the build will do and where, already decided: each replica's app dir and HOME under the state dir.
    for app in apps:
        assert app.build is not None and app.argv == ()
        assert Path(app.cwd).parent == state.resolve() / "apps" and app.build.home.parent == state.resolve() / "homes"
        assert app.env["SSL_CERT_FILE"] == str(state.resolve() / "tls" / "trust.pem")
    postgres = plans["Postgres"]
    assert postgres.argv == () and postgres.env["PGDATA"].startswith(str(postgres.cwd))
    assert plans["hyperliquid"].argv[1:3] == ("-m", "emulator.runtime.replay")
