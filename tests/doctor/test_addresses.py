"""The doctor's warnings about where URLs point: plain HTTP to a public domain, localhost meant for another service."""

from __future__ import annotations

import socket

import httpx
import pytest

from emulator.runtime.postgres import free_port
from vault_ingest.doctor import Status, run_checks
from vault_ingest.doctor.addresses import check_api_scheme, check_loopback_urls

SECRET = "pg-secret-pw"


@pytest.mark.parametrize("url", ["http://vault-ingest-web.up.railway.app/api",
                                 "http://user:pw@My-App.Example.COM:80/api"])
def test_plain_http_to_a_public_domain_warns_with_both_fixes(url):
    check = check_api_scheme(url)
    assert check.status is Status.WARN and check.name == "api-scheme"
    assert "301" in check.detail and "405 Method Not Allowed" in check.detail
    assert "PREFECT_API_URL=https://${{web.RAILWAY_PUBLIC_DOMAIN}}/api" in check.fix
    assert "PREFECT_API_URL=http://${{web.RAILWAY_PRIVATE_DOMAIN}}:<web's PORT>/api" in check.fix
    assert ":pw@" not in check.detail


@pytest.mark.parametrize("url", ["https://vault-ingest-web.up.railway.app/api", "http://web.railway.internal:4200/api",
                                 "http://localhost:4200/api", "http://127.0.0.1:4200/api", "http://[::1]:4200/api"])
def test_https_the_private_network_and_loopback_pass_silently(url):
    assert check_api_scheme(url) is None


def test_run_checks_puts_the_warning_before_the_failure_it_explains():
    """Through an edge that redirects as Railway's does, the health check fails on the 301; the warning says why."""
    def edge(request: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"location": str(request.url.copy_with(scheme="https"))})

    report = run_checks("http://my-app.up.railway.app/api", pool="p", auth=None,
                        transport=httpx.MockTransport(edge), inside_service=False)
    assert [check.name for check in report.checks[:2]] == ["api-scheme", "api"]
    assert report.check("api").status is Status.FAIL and "redirects to https://" in report.check("api").detail


@pytest.fixture
def silent_port() -> int:
    return free_port("127.0.0.1")  # free: nothing answers there


@pytest.mark.parametrize(("var", "url", "fix"), [
    ("DATABASE_URL", f"postgresql://postgres:{SECRET}@localhost:{{port}}/railway",
     "DATABASE_URL=${{Postgres.DATABASE_URL}}"),
    ("PREFECT_API_URL", "http://127.0.0.1:{port}/api", "PREFECT_API_URL=https://${{web.RAILWAY_PUBLIC_DOMAIN}}/api"),
    ("PREFECT_API_DATABASE_CONNECTION_URL", f"postgresql+asyncpg://postgres:{SECRET}@[::1]:{{port}}/prefect",
     "PREFECT_API_DATABASE_CONNECTION_URL=postgresql://${{Postgres.PGUSER}}:${{Postgres.PGPASSWORD}}@"
     "${{Postgres.PGHOST}}:${{Postgres.PGPORT}}/prefect"),
])
def test_a_silent_loopback_url_meant_for_another_service_warns_with_the_reference_to_use(var, url, fix, silent_port):
    checks = check_loopback_urls({var: url.format(port=silent_port), "RAILWAY_SERVICE_NAME": "worker"})
    assert len(checks) == 1
    check = checks[0]
    assert check.status is Status.WARN and check.name == f"localhost:{var}"
    assert f"nothing answers on port {silent_port}: on Railway" in check.detail
    assert "worker's own container, never another service" in check.detail
    assert fix in check.fix
    assert SECRET not in check.detail + check.fix


def test_a_loopback_port_that_answers_is_this_container_and_passes():
    """Something here listens (the service itself; or the emulator, whose private names become 127.0.0.1)."""
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        assert check_loopback_urls({"DATABASE_URL": f"postgresql://u:p@127.0.0.1:{port}/railway"}) == []


def test_the_default_port_of_the_scheme_is_probed():
    probed = []
    checks = check_loopback_urls({"DATABASE_URL": "postgresql://u:p@localhost/railway",
                                  "PREFECT_API_URL": "https://localhost/api"},
                                 probe=lambda host, port: probed.append((host, port)))
    assert probed == [("localhost", 443), ("localhost", 5432)] and len(checks) == 2


@pytest.mark.parametrize("value", ["postgresql://u:p@postgres.railway.internal:5432/railway",
                                   "https://web.up.railway.app/api", "", "not a url"])
def test_other_hosts_are_not_probed(value):
    assert check_loopback_urls({"DATABASE_URL": value}, probe=lambda *_: pytest.fail("probed")) == []


def test_inside_a_service_the_report_carries_the_warning(silent_port):
    env = {"RAILWAY_SERVICE_NAME": "worker", "PATH": "", "DATABASE_URL": f"postgresql://u:p@localhost:{silent_port}/r"}
    report = run_checks("https://web.up.railway.app/api", pool="p", auth=None, inside_service=True, env=env,
                        transport=httpx.MockTransport(lambda request: httpx.Response(503)))
    assert report.check("localhost:DATABASE_URL").status is Status.WARN
    assert run_checks("https://web.up.railway.app/api", pool="p", auth=None, inside_service=False, env=env,
                      transport=httpx.MockTransport(lambda request: httpx.Response(503))).checks[-1].name == "service"
