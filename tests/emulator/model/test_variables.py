import contextlib
import re
import socket
import string
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.model.plan import BuildError
from emulator.model.variables import (
    POSTGRES_TEMPLATE, Endpoint, localize, loopback_warnings, railway_variables, referenced_services, resolve,
    secret_values, slug, stable_id,
)
from emulator.runtime.secrets import secret_store


def fixed_secret(namespace, variable, length, alphabet):
    return (alphabet * length)[:length]


def resolved(namespaces, service="web", warnings=None):
    return resolve({"shared": {}, **namespaces}, service, fixed_secret, warnings)


# --- references -----------------------------------------------------------------------------------

def test_service_shared_and_same_service_references():
    env = resolved({
        "shared": {"POOL": "vault-ingest"},
        "Postgres": {"DATABASE_URL": "postgresql://db"},
        "web": {"PORT": "8080", "DB": "${{Postgres.DATABASE_URL}}", "POOL": "${{shared.POOL}}",
                "URL": "http://x:${{PORT}}/api"},
    })
    assert env == {"PORT": "8080", "DB": "postgresql://db", "POOL": "vault-ingest", "URL": "http://x:8080/api"}


spaces = st.text(alphabet=" \t", max_size=3)


@given(spaces, spaces)
def test_spaces_inside_the_braces_are_allowed(before, after):
    reference = "${{" + before + "Postgres.DATABASE_URL" + after + "}}"
    env = resolved({"Postgres": {"DATABASE_URL": "pg"}, "web": {"DB": reference}})
    assert env["DB"] == "pg"


@given(st.text(alphabet=string.ascii_letters + string.digits + " :/@.-_", max_size=30))
def test_text_without_references_is_untouched(text):
    assert resolved({"web": {"X": text}})["X"] == text


def test_references_resolve_through_chains():
    env = resolved({
        "web": {"PORT": "1", "PRIVATE": "web.railway.internal", "SELF": "http://${{PRIVATE}}:${{PORT}}"},
        "worker": {"API": "${{web.SELF}}/api", "SAME": "${{API}}"},
    }, service="worker")
    assert env == {"API": "http://web.railway.internal:1/api", "SAME": "http://web.railway.internal:1/api"}


def test_a_cycle_is_a_build_error_naming_the_chain():
    with pytest.raises(BuildError) as failure:
        resolved({"web": {"A": "${{B}}", "B": "x${{A}}"}})
    assert str(failure.value) == (
        "web: variable A references ${{B}}, which references ${{A}}: "
        "the references form a cycle (web.A -> web.B -> web.A)"
    )


# Railway renders a reference it cannot resolve as an empty string and deploys anyway (module docstring).

def test_a_reference_to_a_port_nobody_set_renders_empty_and_says_how_to_fix_it():
    warnings = []
    env = resolved({"web": {"RAILWAY_PRIVATE_DOMAIN": "web.railway.internal"},
                    "worker": {"API": "http://${{web.RAILWAY_PRIVATE_DOMAIN}}:${{web.PORT}}/api"}}, "worker", warnings)
    assert env["API"] == "http://web.railway.internal:/api"  # what users report seeing on Railway
    assert warnings == [
        "⚠ worker: variable API references ${{web.PORT}}, which Railway renders as an empty string: web has no "
        "variable PORT; the PORT Railway injects at runtime is not a variable you can reference; set PORT on web "
        '(e.g. PORT = "8080") or use https://${{web.RAILWAY_PUBLIC_DOMAIN}}'
    ]


def test_a_port_set_as_a_variable_resolves():
    warnings = []
    env = resolved({"web": {"PORT": "4200"}, "worker": {"API": "http://web:${{web.PORT}}"}}, "worker", warnings)
    assert env["API"] == "http://web:4200" and warnings == []


def test_an_unknown_service_renders_empty_with_the_case_sensitive_hint():
    warnings = []
    env = resolved({"Postgres": {}, "worker": {"DATABASE_URL": "${{ postgres.DATABASE_URL }}"}}, "worker", warnings)
    assert env["DATABASE_URL"] == ""
    assert warnings == [
        "⚠ worker: variable DATABASE_URL references ${{ postgres.DATABASE_URL }}, which Railway renders as an "
        "empty string: there is no service named postgres; service names are case-sensitive, did you mean Postgres?"
    ]


def test_an_unknown_variable_renders_empty_naming_service_variable_and_reference():
    warnings = []
    env = resolved({"web": {"URL": "https://${{PUBLIC}}"}, "worker": {"API": "${{web.URL}}"}}, "worker", warnings)
    assert env["API"] == "https://"
    assert warnings == ["⚠ worker: variable API references ${{web.URL}}, which references ${{PUBLIC}}, which Railway "
                        "renders as an empty string: web has no variable PUBLIC; define it there or fix the reference"]


def test_an_unknown_shared_variable_renders_empty():
    warnings = []
    assert resolved({"web": {"X": "a${{shared.NOPE}}b"}}, warnings=warnings) == {"X": "ab"}
    assert warnings[0].startswith("⚠ web: variable X references ${{shared.NOPE}}, which Railway renders as an empty "
                                  "string: shared has no variable NOPE;")


def test_without_a_warnings_list_an_unresolvable_reference_is_a_build_error():
    # The emulator's own steps and URLs resolve strictly: a typo there is the developer's, not Railway's.
    message = "web: variable X references ${{shared.NOPE}}: shared has no variable NOPE"
    with pytest.raises(BuildError, match=re.escape(message)):
        resolve({"shared": {}, "web": {"X": "${{shared.NOPE}}"}}, "web", fixed_secret)


def test_a_public_domain_reference_to_a_service_without_one_says_to_generate_it():
    warnings = []
    resolved({"web": {}, "worker": {"API": "https://${{web.RAILWAY_PUBLIC_DOMAIN}}/api"}}, "worker", warnings)
    assert "web has no variable RAILWAY_PUBLIC_DOMAIN; only a service with a public domain has it" in warnings[0]


def test_something_that_is_not_a_reference_is_a_build_error():
    with pytest.raises(BuildError, match=re.escape("web: variable X references ${{a.b.c}}: that is not a reference")):
        resolved({"web": {"X": "${{a.b.c}}"}})


def test_secret_function_uses_the_source():
    env = resolved({"web": {"S": '${{secret(4, "ab")}}', "T": "${{secret()}}"}})
    assert env["S"] == "abab"
    assert len(env["T"]) == 32


def test_secret_store_keeps_a_value_across_runs(tmp_path):
    first = secret_store(tmp_path)("Postgres", "POSTGRES_PASSWORD", 32, string.ascii_letters)
    again = secret_store(tmp_path)("Postgres", "POSTGRES_PASSWORD", 32, string.ascii_letters)
    assert first == again and re.fullmatch(r"[A-Za-z]{32}", first)
    assert secret_store(tmp_path / "other")("Postgres", "POSTGRES_PASSWORD", 32, string.ascii_letters) != first


# --- Railway's own variables ----------------------------------------------------------------------

def test_postgres_variables_have_railways_exact_shape(tmp_path):
    railway = railway_variables("p", "production", "Postgres", deployment_id="d", replica_id="r")
    env = resolve({"shared": {}, "Postgres": {**railway, **POSTGRES_TEMPLATE}}, "Postgres", secret_store(tmp_path))
    password = env["POSTGRES_PASSWORD"]
    assert re.fullmatch(r"[A-Za-z]{32}", password)
    assert env["DATABASE_URL"] == f"postgresql://postgres:{password}@postgres.railway.internal:5432/railway"
    assert {key: env[key] for key in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "POSTGRES_DB",
                                      "POSTGRES_USER", "PGDATA")} == {
        "PGHOST": "postgres.railway.internal", "PGPORT": "5432", "PGUSER": "postgres", "PGPASSWORD": password,
        "PGDATABASE": "railway", "POSTGRES_DB": "railway", "POSTGRES_USER": "postgres",
        "PGDATA": "/var/lib/postgresql/data/pgdata",
    }
    again = resolve({"shared": {}, "Postgres": {**railway, **POSTGRES_TEMPLATE}}, "Postgres", secret_store(tmp_path))
    assert again["POSTGRES_PASSWORD"] == password


def test_railway_variables_ids_are_stable_and_domains_follow_the_service():
    one = railway_variables("vault-ingest", "production", "My Web", deployment_id="d1", replica_id="r1")
    two = railway_variables("vault-ingest", "production", "My Web", deployment_id="d2", replica_id="r2",
                            public_domain="localhost:4000")
    for key in ("RAILWAY_PROJECT_ID", "RAILWAY_ENVIRONMENT_ID", "RAILWAY_SERVICE_ID"):
        assert one[key] == two[key]
    assert one["RAILWAY_SERVICE_ID"] == stable_id("vault-ingest", "service", "My Web")
    assert one["RAILWAY_PRIVATE_DOMAIN"] == "my-web.railway.internal" and slug("My Web") == "my-web"
    assert one["RAILWAY_ENVIRONMENT"] == one["RAILWAY_ENVIRONMENT_NAME"] == "production"
    assert "RAILWAY_PUBLIC_DOMAIN" not in one
    assert two["RAILWAY_PUBLIC_DOMAIN"] == "localhost:4000"


# --- local rewriting ------------------------------------------------------------------------------

ENDPOINTS = {"web": Endpoint(railway_port=8080, local_port=41000), "postgres": Endpoint(5432, 42000)}


@pytest.mark.parametrize("value, local", [
    ("postgresql://pg:pw@postgres.railway.internal:5432/railway", "postgresql://pg:pw@127.0.0.1:42000/railway"),
    ("http://web.railway.internal:41000/api", "http://127.0.0.1:41000/api"),
    ("http://web.railway.internal:8080/api", "http://127.0.0.1:41000/api"),
    ("web.railway.internal", "127.0.0.1"),
    ("http://web.railway.internal:9999", "http://127.0.0.1:9999"),
    ("http://other.railway.internal:80", "http://other.railway.internal:80"),
    ("http://notweb.railway.internal:8080", "http://notweb.railway.internal:8080"),
    ("https://localhost:4000/api", "https://localhost:4000/api"),  # the edge answers TLS on it
    ("localhost:4000/api", "localhost:4000/api"),
])
def test_localize(value, local):
    assert localize(value, ENDPOINTS) == local


@given(st.text(alphabet="webpostgrsaily.:/0123456789-@ ", max_size=60))
def test_localize_is_idempotent(value):
    once = localize(value, ENDPOINTS)
    assert localize(once, ENDPOINTS) == once


ENDPOINTS_DB_DUAL = {**ENDPOINTS, "postgres": Endpoint(5432, 42000, dual_stack=True)}


@pytest.mark.parametrize("value, local", [
    ("http://web.railway.internal:8080/api", "http://[::1]:41000/api"),
    ("http://web.railway.internal/api", "http://[::1]/api"),
    ("web.railway.internal", "::1"),  # a bare host, as PGHOST or a --host flag takes it
    ("http://web.railway.internal:/api", "http://[::1]:/api"),  # an unresolved ${{web.PORT}} stays broken
    # Postgres's image listens on IPv6 too: only its local stand-in is IPv4-only, so it stays reachable.
    ("postgresql://pg:pw@postgres.railway.internal:5432/railway", "postgresql://pg:pw@127.0.0.1:42000/railway"),
])
def test_localize_on_an_ipv6_only_private_network(value, local):
    assert localize(value, ENDPOINTS_DB_DUAL, "ipv6-only") == local


@given(st.text(alphabet="webpostgrsaily.:/0123456789-@ ", max_size=60))
def test_localize_ipv6_only_is_idempotent(value):
    once = localize(value, ENDPOINTS, "ipv6-only")
    assert localize(once, ENDPOINTS, "ipv6-only") == once


# --- localhost pointing at another service --------------------------------------------------------

NEIGHBOURS = {"web": Endpoint(4200, 41000), "worker": Endpoint(8080, 41001), "Postgres": Endpoint(5432, 42000)}


def test_localhost_pointing_at_another_service_is_named_with_the_fix():
    variables = {"PREFECT_API_URL": "http://localhost:4200/api", "PORT": "41001",
                 "DATABASE_URL": "postgresql://postgres:hunter2@127.0.0.1:5432/railway"}
    assert loopback_warnings("worker", variables, NEIGHBOURS) == [
        "⚠ worker: variable PREFECT_API_URL points at localhost:4200, which on Railway is worker's own container, "
        "never another service; use ${{web.RAILWAY_PRIVATE_DOMAIN}} instead of localhost "
        "(or https://${{web.RAILWAY_PUBLIC_DOMAIN}})",
        "⚠ worker: variable DATABASE_URL points at 127.0.0.1:5432, which on Railway is worker's own container, "
        "never another service; use ${{Postgres.RAILWAY_PRIVATE_DOMAIN}} instead of 127.0.0.1 "
        "(or https://${{Postgres.RAILWAY_PUBLIC_DOMAIN}})",
    ]


@pytest.mark.parametrize("value", [
    "http://localhost:8080/health",  # the service's own port on Railway
    "http://127.0.0.1:41001/x",  # and locally
    "127.0.0.1",  # a bind address, not a destination
    "0.0.0.0",
    "http://web.railway.internal:4200/api",
    "https://localhost.example.com:4200",
])
def test_localhost_to_the_service_itself_or_without_a_port_is_fine(value):
    assert loopback_warnings("worker", {"X": value}, NEIGHBOURS) == []


def test_localhost_on_a_port_no_service_has_still_warns():
    [line] = loopback_warnings("worker", {"API": "http://[::1]:9999"}, NEIGHBOURS)
    assert "points at [::1]:9999" in line and "${{<service>.RAILWAY_PRIVATE_DOMAIN}} instead of [::1]" in line


@pytest.mark.parametrize("value, services", [
    ("http://${{hyperliquid.RAILWAY_PRIVATE_DOMAIN}}:${{ hyperliquid.PORT }}/x", {"hyperliquid"}),
    ("${{shared.POOL}} ${{PORT}} ${{secret(8)}}", set()),
    ("${{web.PORT}}-${{Postgres.PGHOST}}", {"web", "Postgres"}),
])
def test_referenced_services(value, services):
    assert referenced_services(value) == services


def test_secret_values_by_name_and_in_urls():
    env = {
        "POSTGRES_PASSWORD": "hunter2-long", "PGPASSWORD": "hunter2-long", "PREFECT_API_KEY": "pnu_abc",
        "PREFECT_SERVER_API_AUTH_STRING": "admin:pw-123", "GITHUB_TOKEN": "ghp_x1",
        "DATABASE_URL": "postgresql://postgres:SeCrEt99@127.0.0.1:5432/railway",
        "KEYBOARD": "not-a-secret", "PORT": "8080", "SHORT_SECRET": "ab",
    }
    assert secret_values(env) == {"hunter2-long", "pnu_abc", "admin:pw-123", "ghp_x1", "SeCrEt99"}


# --- the private network's address family, with real sockets ---------------------------------------

def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback (::1) to test with")


@contextlib.contextmanager
def listener(host: str, *, v6only: int | None = None) -> Iterator[int]:
    """A listening socket on `host`; yields its port, which is also held, not listened on, on the other
    loopback address, so no other process's listener there can answer in its place."""
    for _ in range(20):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as server, \
                socket.socket(socket.AF_INET if ":" in host else socket.AF_INET6) as guard:
            if v6only is not None:
                server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
            try:
                server.bind((host, 0))  # `::` dual-stack fails here when IPv4 has the port taken
                port = server.getsockname()[1]
                if host == "::" and not v6only:
                    guard.close()  # the server holds both families itself
                else:
                    if guard.family == socket.AF_INET6:
                        guard.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    guard.bind(("::1" if guard.family == socket.AF_INET6 else "127.0.0.1", port))
            except OSError:
                continue  # taken on the other family: try another port
            server.listen()
            yield port
            return
    raise RuntimeError("no port free on both loopback addresses")


def reaches(url: str) -> bool:
    """A TCP connect to the URL's host and port: the kernel completes it from the backlog, no thread needed."""
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=5).close()
        return True
    except OSError:
        return False


def private_url(port: int, network: str) -> str:
    return localize("http://web.railway.internal:8080/api", {"web": Endpoint(8080, port)}, network)


@needs_ipv6
def test_an_ipv4_server_is_unreachable_over_an_ipv6_only_private_network():
    # An AF_INET socket, as `--host 0.0.0.0` gives; on its loopback address, as every test listener binds.
    with listener("127.0.0.1") as port:
        assert reaches(private_url(port, "dual-stack"))
        assert not reaches(private_url(port, "ipv6-only"))


@needs_ipv6
def test_a_dual_stack_server_is_reachable_over_both_private_networks():
    # `::` with IPV6_V6ONLY=0 takes IPv4 too (Linux's default, net.ipv6.bindv6only=0; set explicitly here).
    # The one test listener on the wildcard address: a dual-stack socket needs it, and it lives for two connects.
    with listener("::", v6only=0) as port:
        assert reaches(private_url(port, "dual-stack"))
        assert reaches(private_url(port, "ipv6-only"))


@needs_ipv6
def test_an_ipv6_only_socket_is_reachable_only_over_ipv6():
    # What uvicorn does with `--host ::` (asyncio sets IPV6_V6ONLY=1): the edge and healthcheck, over IPv4,
    # cannot reach it.
    with listener("::1", v6only=1) as port:
        assert reaches(private_url(port, "ipv6-only"))
        assert not reaches(private_url(port, "dual-stack"))
