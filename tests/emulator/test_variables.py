import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.plan import BuildError
from emulator.variables import (
    POSTGRES_TEMPLATE, Endpoint, localize, railway_variables, referenced_services, resolve, secret_store,
    secret_values, slug, stable_id,
)


def fixed_secret(namespace, variable, length, alphabet):
    return (alphabet * length)[:length]


def resolved(namespaces, service="web"):
    return resolve({"shared": {}, **namespaces}, service, fixed_secret)


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


def test_an_unknown_service_is_a_build_error_with_the_case_sensitive_hint():
    with pytest.raises(BuildError) as failure:
        resolved({"Postgres": {}, "worker": {"DATABASE_URL": "${{ postgres.DATABASE_URL }}"}}, service="worker")
    assert str(failure.value) == (
        "worker: variable DATABASE_URL references ${{ postgres.DATABASE_URL }}: there is no service named "
        "postgres; service names are case-sensitive, did you mean Postgres?"
    )


def test_an_unknown_variable_is_a_build_error_naming_service_variable_and_reference():
    with pytest.raises(BuildError, match=re.escape(
        "worker: variable API references ${{web.URL}}, which references ${{PUBLIC}}: web has no variable PUBLIC"
    )):
        resolved({"web": {"URL": "https://${{PUBLIC}}"}, "worker": {"API": "${{web.URL}}"}}, service="worker")


def test_an_unknown_shared_variable_is_a_build_error():
    message = "web: variable X references ${{shared.NOPE}}: shared has no variable NOPE"
    with pytest.raises(BuildError, match=re.escape(message)):
        resolved({"web": {"X": "${{shared.NOPE}}"}})


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
