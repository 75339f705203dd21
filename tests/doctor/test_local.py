"""Checks of the service the doctor runs in: git on PATH and the two database URLs."""

from __future__ import annotations

import shutil

import httpx
import pytest

from emulator.runtime.postgres import free_port
from vault_ingest.doctor import Status, run_checks
from vault_ingest.doctor.local import check_app_database_url, check_git, check_prefect_database_url

SECRET = "pg-secret-pw"


def test_git_missing_names_each_builders_fix(tmp_path):
    check = check_git({"PATH": str(tmp_path)})
    assert check.status is Status.FAIL and "git_clone" in check.detail
    for fix in ("RAILPACK_DEPLOY_APT_PACKAGES=git", "railpack.json", "Dockerfile.worker", "WORKER_INSTALL_GIT=1"):
        assert fix in check.fix


def test_git_missing_while_railpack_json_overrides_the_variable_says_the_variable_is_ignored(tmp_path):
    """The apt-variable-ignored variant: Railpack merges railpack.json over RAILPACK_DEPLOY_APT_PACKAGES."""
    (tmp_path / "railpack.json").write_text('{"deploy": {"aptPackages": ["...", "ffmpeg"]}}')
    env = {"PATH": str(tmp_path), "RAILPACK_DEPLOY_APT_PACKAGES": "git"}
    check = check_git(env, tmp_path)
    assert check.status is Status.FAIL
    assert ('RAILPACK_DEPLOY_APT_PACKAGES=git is ignored: railpack.json sets deploy.aptPackages to ["...", "ffmpeg"]'
            in check.detail)
    assert check.fix.startswith('Add git to railpack.json: "deploy": {"aptPackages": ["...", "git"]}')
    assert "is ignored" not in check_git({"PATH": str(tmp_path)}, tmp_path).detail  # no variable, nothing ignored
    (tmp_path / "railpack.json").write_text("{}")
    assert "is ignored" not in check_git(env, tmp_path).detail  # the file sets no list: the variable counts


def test_git_on_path_passes(tmp_path):
    (tmp_path / "git").symlink_to(shutil.which("git"))
    check = check_git({"PATH": str(tmp_path)})
    assert check.status is Status.PASS and str(tmp_path / "git") in check.detail


@pytest.mark.parametrize("url", [
    f"postgresql://postgres:{SECRET}@postgres.railway.internal:5432/prefect",
    f"postgres://postgres:{SECRET}@postgres.railway.internal:5432/prefect",
])
def test_plain_postgres_url_is_fine_only_through_the_launcher(url):
    up = check_prefect_database_url({"PREFECT_API_DATABASE_CONNECTION_URL": url}, api_answers=True)
    assert up.status is Status.PASS
    assert "fine when the server starts through `vault-ingest serve`" in up.detail
    assert "a plain `prefect server start` exit at startup" in up.detail
    down = check_prefect_database_url({"PREFECT_API_DATABASE_CONNECTION_URL": url}, api_answers=False)
    assert down.status is Status.FAIL and "the API does not answer" in down.detail
    assert "vault-ingest serve" in down.fix and "postgresql+asyncpg://" in down.fix
    assert SECRET not in up.detail + down.detail + down.fix


def test_asyncpg_url_passes_as_is():
    url = f"postgresql+asyncpg://postgres:{SECRET}@db:5432/prefect"
    check = check_prefect_database_url({"PREFECT_SERVER_DATABASE_CONNECTION_URL": url}, api_answers=False)
    assert check.status is Status.PASS and "PREFECT_SERVER_DATABASE_CONNECTION_URL" in check.detail
    assert SECRET not in check.detail


def test_prefect_url_prefect_cannot_use_fails():
    check = check_prefect_database_url({"PREFECT_API_DATABASE_CONNECTION_URL": "mysql://u:p@db/prefect"}, True)
    assert check.status is Status.FAIL and "mysql://" in check.detail


def test_prefect_url_unset_is_skipped():
    assert check_prefect_database_url({}, api_answers=True).status is Status.SKIP


def test_app_database_url_unset_warns():
    check = check_app_database_url({})
    assert check.status is Status.WARN and "DATABASE_URL=${{Postgres.DATABASE_URL}}" in check.fix


def test_app_database_url_with_prefects_driver_is_unusable():
    check = check_app_database_url({"DATABASE_URL": f"postgresql+asyncpg://u:{SECRET}@db/railway"})
    assert check.status is Status.FAIL and "use postgresql://" in check.detail
    assert SECRET not in check.detail


def test_app_database_that_refuses_connections_is_named_masked():
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:{free_port()}/railway"
    check = check_app_database_url({"DATABASE_URL": url})
    assert check.status is Status.FAIL
    assert check.detail.startswith("cannot connect to postgresql://postgres:***@127.0.0.1:")
    assert SECRET not in check.detail


def _refuse(request):
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def test_inside_a_service_the_local_checks_run_and_see_the_api_is_down(tmp_path):
    env = {"RAILWAY_SERVICE_NAME": "web", "PATH": str(tmp_path),
           "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql://u:{SECRET}@db/prefect"}
    report = run_checks("https://x.up.railway.app/api", pool="p", auth=None, transport=httpx.MockTransport(_refuse),
                        env=env)
    assert report.inside_service
    assert report.check("git").status is Status.FAIL
    assert report.check("prefect-database-url").status is Status.FAIL  # the API is down: the URL may be why
    assert report.check("database-url").status is Status.WARN
    assert SECRET not in report.text() + report.to_json()


def test_outside_flag_wins_over_the_environment():
    report = run_checks("https://x.up.railway.app/api", pool="p", auth=None, transport=httpx.MockTransport(_refuse),
                        env={"RAILWAY_SERVICE_NAME": "worker"}, inside_service=False)
    assert report.check("service").status is Status.SKIP
    with pytest.raises(KeyError, match="no check named 'git'"):
        report.check("git")
