"""`vault-ingest doctor` options, defaults and exit code, in process against a port nothing listens on."""

from __future__ import annotations

import json

import pytest

from emulator.runtime.postgres import free_port
from vault_ingest import cli
from vault_ingest.doctor import DEFAULT_POOL


@pytest.fixture
def env(monkeypatch):
    for name in ("PREFECT_API_URL", "PREFECT_WORK_POOL", "PREFECT_API_AUTH_STRING", "RAILWAY_SERVICE_NAME",
                 "DATABASE_URL", "PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def dead_api() -> str:
    return f"http://127.0.0.1:{free_port()}/api"


def test_failing_check_exits_non_zero_with_the_checklist(env, capsys):
    api = dead_api()
    assert cli.main(["doctor", "--api-url", api, "--pool", "p1"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"vault-ingest doctor: {api}, work pool 'p1', from outside the services\n")
    assert f"✗ api: GET {api}/health got no answer" in out
    assert "    fix: Deploy the `web` service" in out


def test_defaults_come_from_the_environment(env, capsys):
    api = dead_api()
    env.setenv("PREFECT_API_URL", api)
    env.setenv("PREFECT_WORK_POOL", "from-env")
    cli.main(["doctor", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert (data["api_url"], data["pool"], data["ok"]) == (api, "from-env", False)
    env.delenv("PREFECT_WORK_POOL")
    cli.main(["doctor", "--json"])
    assert json.loads(capsys.readouterr().out)["pool"] == DEFAULT_POOL


def test_no_api_url_at_all_is_a_failed_check(env, capsys):
    assert cli.main(["doctor"]) == 1
    assert "✗ api: no API URL given" in capsys.readouterr().out


def test_inside_and_outside_override_detection(env, capsys):
    env.setenv("RAILWAY_SERVICE_NAME", "worker")
    cli.main(["doctor", "--api-url", dead_api(), "--json"])
    assert "git" in {c["name"] for c in json.loads(capsys.readouterr().out)["checks"]}
    cli.main(["doctor", "--api-url", dead_api(), "--json", "--outside"])
    assert "git" not in {c["name"] for c in json.loads(capsys.readouterr().out)["checks"]}
    env.delenv("RAILWAY_SERVICE_NAME")
    cli.main(["doctor", "--api-url", dead_api(), "--json", "--inside"])
    assert json.loads(capsys.readouterr().out)["inside_service"] is True
    with pytest.raises(SystemExit) as exc:
        cli.main(["doctor", "--inside", "--outside"])
    assert exc.value.code == 2
