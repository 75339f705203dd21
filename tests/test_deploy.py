"""The deploy script: specs without a server, and a real server with a git repository the worker could clone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings
from tests.support.prefect_server import WEB_AUTH, clean_environ, railway_web_service

from emulator.runtime.postgres import free_port
from vault_ingest import deploy, flows
from vault_ingest.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "deploy_prefect_flows.py"
POOL = "vault-pool"
GIT_CLONE = "prefect.deployments.steps.git_clone"


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def bare_repo(tmp: Path, *, with_flows: bool = True) -> str:
    """A bare repository with this checkout's package on `main`, as file:// (what git_clone clones)."""
    work = tmp / "work"
    work.mkdir(parents=True)
    if with_flows:
        shutil.copytree(ROOT / "vault_ingest", work / "vault_ingest", ignore=shutil.ignore_patterns("__pycache__"))
    else:
        (work / "README.md").write_text("no flows here\n")
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "flows", cwd=work)
    git("clone", "-q", "--bare", str(work), str(tmp / "repo.git"), cwd=tmp)
    return f"file://{tmp / 'repo.git'}"


def run_script(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120)


# --- specs, no server --------------------------------------------------------------------------------------


def test_specs_name_the_flows_entrypoints():
    for spec in deploy.FLOWS:
        path, _, function = spec.entrypoint.partition(":")
        assert path == "vault_ingest/flows.py"
        assert getattr(flows, function).name == spec.flow_name  # the name the server files the deployment under


@pytest.mark.parametrize(
    "url", ["https://github.com/o/r.git", "https://github.com/o/r", "git@github.com:o/r.git",
            "ssh://git@github.com/o/r.git", "file:///srv/repo.git"],
)
def test_git_urls_are_accepted(url):
    assert deploy.git_url(url) == url


@pytest.mark.parametrize("source", ["github.com/o/r", "ftp://example.com/r.git", "/srv/repo.git", "."])
def test_non_git_source_is_refused(source):
    with pytest.raises(deploy.SourceError, match="is not a git URL"):
        deploy.git_url(source)


def test_local_path_gets_a_file_url_hint(tmp_path):
    with pytest.raises(deploy.SourceError, match=f"e.g. file://{tmp_path}"):
        deploy.git_url(str(tmp_path))


def test_credentials_in_the_url_are_refused():
    with pytest.raises(deploy.SourceError, match="credentials"):
        deploy.git_url("https://ghp_token@github.com/o/r.git")


def test_source_defaults_to_origin(tmp_path):
    git("init", "-q", cwd=tmp_path)
    git("remote", "add", "origin", "https://github.com/o/r.git", cwd=tmp_path)
    specs = deploy.specs_for(deploy.DeployOptions(work_pool=POOL), repo_dir=tmp_path)
    assert {spec.repository for spec in specs} == {"https://github.com/o/r.git"}


def test_ssh_origin_is_refused_with_https_suggestion(tmp_path):
    git("init", "-q", cwd=tmp_path)
    git("remote", "add", "origin", "git@github.com:o/r.git", cwd=tmp_path)
    with pytest.raises(deploy.SourceError, match="pass --source https://github.com/o/r.git"):
        deploy.default_source(tmp_path)


def test_no_origin_is_refused(tmp_path):
    git("init", "-q", cwd=tmp_path)
    with pytest.raises(deploy.SourceError, match="no `origin` remote"):
        deploy.default_source(tmp_path)


def test_dry_run_prints_specs_without_a_server(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}/api"
    env = clean_environ(PREFECT_HOME=str(tmp_path / "home"), PREFECT_API_URL=closed)
    result = run_script("--work-pool", POOL, "--source", "https://github.com/o/r.git", "--ref", "v1", "--dry-run",
                        env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    specs = {spec["name"]: spec for spec in json.loads(result.stdout)}
    assert set(specs) == {"sync-vaults/hourly", "sync-vault-details/hourly"}
    for spec in specs.values():
        assert spec["pull_steps"] == [{GIT_CLONE: {"repository": "https://github.com/o/r.git", "branch": "v1"}}]
        assert spec["work_pool"] == {"name": POOL, "type": "process"}
    assert specs["sync-vaults/hourly"]["schedules"] == [{"cron": "0 * * * *", "timezone": "UTC"}]
    assert specs["sync-vault-details/hourly"]["parameters"] == {"min_tvl": 0, "max_vaults": deploy.DETAILS_MAX_VAULTS}


def test_the_unresponsive_run_window_fits_three_heartbeats():
    assert deploy.unresponsive_seconds({}) == deploy.DEFAULT_UNRESPONSIVE_SECONDS == 180
    assert deploy.heartbeat_seconds(180) == 60
    assert deploy.unresponsive_seconds({deploy.UNRESPONSIVE_SECONDS_VAR: "45"}) == 45
    assert deploy.heartbeat_seconds(45) == 30  # Prefect's shortest


@pytest.mark.parametrize("value", ["44", "30", "1.5", "soon"])
def test_an_unresponsive_run_window_shorter_than_prefects_heartbeats_allow_is_refused(value):
    with pytest.raises(ConfigError, match="at least 45: runs send a heartbeat every third of it"):
        deploy.unresponsive_seconds({deploy.UNRESPONSIVE_SECONDS_VAR: value})


def test_unreachable_server_is_named(tmp_path):
    api = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: api}):
        with pytest.raises(deploy.ServerUnreachableError, match=f"cannot reach the Prefect API at {api}"):
            deploy.apply(deploy.build_specs(POOL, "https://github.com/o/r.git", None))


# --- a real server ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(request):
    return railway_web_service(request).server


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    return bare_repo(tmp_path_factory.mktemp("source"))


@pytest.fixture(scope="module")
def first_deploy(server, source, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("first-deploy")
    env = server.client_env(workdir / "home")
    return run_script("--work-pool", POOL, "--source", source, "--ref", "main", env=env, cwd=workdir)


def deployments(server) -> dict[str, dict]:
    with server.http() as http:
        found = http.post("/api/deployments/filter", json={"work_pools": {"name": {"any_": [POOL]}}}).json()
        flow_names = {f["id"]: f["name"] for f in http.post("/api/flows/filter", json={}).json()}
    return {f"{flow_names[d['flow_id']]}/{d['name']}": d for d in found}


def test_deploy_creates_the_pool_and_both_deployments(server, source, first_deploy):
    assert first_deploy.returncode == 0, first_deploy.stderr
    assert f"work pool '{POOL}': created" in first_deploy.stdout
    with server.http() as http:
        assert http.get(f"/api/work_pools/{POOL}").json()["type"] == "process"
    found = deployments(server)
    assert set(found) == {"sync-vaults/hourly", "sync-vault-details/hourly"}
    for spec in deploy.FLOWS:
        deployment = found[f"{spec.flow_name}/{spec.name}"]
        assert deployment["entrypoint"] == spec.entrypoint
        assert deployment["pull_steps"] == [{GIT_CLONE: {"repository": source, "branch": "main"}}]
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == [spec.cron]
        assert deployment["parameters"] == spec.parameters
        assert deployment["global_concurrency_limit"]["limit"] == 1
        assert deployment["job_variables"] == {"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "60"}}


def unresponsive_automations(server) -> list[dict]:
    with server.http() as http:
        found = http.post("/api/automations/filter", json={}).json()
    return [automation for automation in found if automation["name"] == deploy.UNRESPONSIVE_AUTOMATION]


def test_deploy_keeps_one_automation_that_crashes_unresponsive_runs(server, source, first_deploy):
    assert first_deploy.returncode == 0, first_deploy.stderr
    [automation] = unresponsive_automations(server)
    assert automation["trigger"]["posture"] == "Proactive"
    assert set(automation["trigger"]["after"]) == {
        "prefect.flow-run.Pending", "prefect.flow-run.Submitting", "prefect.flow-run.Running",
        "prefect.flow-run.Retrying", "prefect.flow-run.Cancelling", "prefect.flow-run.heartbeat",
        "prefect.flow-run.pull-step.*"}
    assert automation["trigger"]["within"] == deploy.DEFAULT_UNRESPONSIVE_SECONDS
    assert [action["state"] for action in automation["actions"]] == ["CRASHED"]


def test_rerun_updates_in_place(server, source, first_deploy, tmp_path):
    """One rerun shows both: the pool, deployments and schedules stay as they were, and the automation is
    updated, not added (each run of the script costs a Prefect import, ~4 s of CPU)."""
    before = {name: d["id"] for name, d in deployments(server).items()}
    [automation] = unresponsive_automations(server)
    # Longer than the default, so no other test's run on this shared server is crashed meanwhile.
    env = server.client_env(tmp_path / "home", **{deploy.UNRESPONSIVE_SECONDS_VAR: "900"})
    result = run_script("--work-pool", POOL, "--source", source, "--ref", "main", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"work pool '{POOL}': exists" in result.stdout
    after = deployments(server)
    assert {name: d["id"] for name, d in after.items()} == before
    assert all(len(d["schedules"]) == 1 for d in after.values())
    assert f"automation '{deploy.UNRESPONSIVE_AUTOMATION}': updated" in result.stdout
    [updated] = unresponsive_automations(server)
    assert updated["id"] == automation["id"] and updated["trigger"]["within"] == 900


def test_refused_credentials_are_named(server, source):
    with temporary_settings(updates={PREFECT_API_URL: server.api_url, PREFECT_API_AUTH_STRING: "admin:wrong"}):
        with pytest.raises(deploy.AuthRefusedError, match="PREFECT_API_AUTH_STRING"):
            deploy.apply(deploy.build_specs("other-pool", source, "main"))


def test_missing_entrypoint_is_named(server, tmp_path):
    empty = bare_repo(tmp_path, with_flows=False)
    with temporary_settings(updates={PREFECT_API_URL: server.api_url, PREFECT_API_AUTH_STRING: WEB_AUTH}):
        with pytest.raises(deploy.EntrypointNotFoundError, match="vault_ingest/flows.py:sync_vaults not found"):
            deploy.apply(deploy.build_specs("other-pool", empty, None))
    with server.http() as http:
        assert http.get("/api/work_pools/other-pool").status_code == 404  # nothing changed on the server


def test_unknown_ref_is_named(server, source):
    with temporary_settings(updates={PREFECT_API_URL: server.api_url, PREFECT_API_AUTH_STRING: WEB_AUTH}):
        with pytest.raises(deploy.SourceError, match="at no-such-branch"):
            deploy.apply(deploy.build_specs("other-pool", source, "no-such-branch"))
