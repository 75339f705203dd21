import re
from pathlib import Path

import pytest

from emulator.model.stack import StackError, list_variants, load_stack

SHIPPED = Path(__file__).resolve().parents[3] / "railway.stack.toml"
VARIANTS = ("gitless-worker", "gitless-worker-script", "worker-runs-web", "no-worker", "ui-api-url-missing",
            "ui-api-url-no-scheme", "raw-database-url", "nixpacks-worker", "dockerfile-worker", "worker-replicas",
            "gitless-worker-apt", "railpack-json-without-git", "apt-variable-ignored", "railpack-json-without-spread",
            "as-documented", "prefect-defaults")


def stack_file(tmp_path, text):
    path = tmp_path / "railway.stack.toml"
    path.write_text('[project]\nname = "p"\n' + text)
    return path


def test_the_shipped_base_is_the_documented_production_setup():
    stack = load_stack(SHIPPED)
    assert (stack.project, stack.environment, stack.variant) == ("vault-ingest", "production", None)
    assert {name: service.source for name, service in stack.services.items()} == {
        "Postgres": "postgres", "web": "repo", "worker": "repo", "hyperliquid": "replay"}
    web, worker = stack.services["web"], stack.services["worker"]
    assert (web.builder, web.start_command, web.public_domain) == ("railpack", None, True)
    assert web.healthcheck_path == "/api/health"
    assert web.variables["PREFECT_API_DATABASE_CONNECTION_URL"].endswith("/prefect")  # not the app's database
    assert (worker.builder, worker.start_command, worker.public_domain) == ("railpack", "bash start_worker.sh", False)
    assert worker.variables["PREFECT_API_URL"] == "https://${{web.RAILWAY_PUBLIC_DOMAIN}}/api"
    assert "RAILPACK_DEPLOY_APT_PACKAGES" not in worker.variables  # railpack.json's list would win over it
    assert (worker.restart_policy, worker.restart_max_retries, worker.replicas) == ("ON_FAILURE", 10, 1)
    assert stack.private_network == "dual-stack"  # what a new Railway environment gets


# What the base sets beyond docs/railway.md, or leaves out of it, and why.
NOT_IN_THE_GUIDE = {
    ("web", "PREFECT_SERVER_ANALYTICS_ENABLED"),  # the emulated stacks run offline
    ("worker", "HYPERLIQUID_API_URL"), ("worker", "HYPERLIQUID_STATS_URL"),  # the local Hyperliquid stand-in
}
# The as-documented variant adds them back (tests/scenarios/test_auth.py deploys it).
LEFT_OUT_OF_THE_BASE = {
    ("web", "PREFECT_SERVER_API_AUTH_STRING"), ("worker", "PREFECT_API_AUTH_STRING"),  # scenarios talk without auth
    ("worker", "RAILWAY_DEPLOYMENT_DRAINING_SECONDS"),  # an hour would hold every local `down` of a busy worker
}


def guide_variables() -> dict[tuple[str, str], str]:
    """The variables blocks of docs/railway.md's `web` and `worker` sections, as a user types them in."""
    guide = (SHIPPED.parent / "docs" / "railway.md").read_text()
    found = {}
    for service in ("web", "worker"):
        section = re.search(rf"^## \d\. `{service}`.*?(?=^## )", guide, re.S | re.M)[0]
        block = re.search(r"Variables:\s*```\n(.*?)```", section, re.S)[1]
        for line in filter(str.strip, block.splitlines()):
            name, _, value = line.strip().partition("=")
            found[(service, name)] = value
    return found


def test_the_shipped_base_has_the_guides_variables():
    stack = load_stack(SHIPPED)
    guide = guide_variables()
    base = {(name, var): value for name in ("web", "worker") for var, value in stack.services[name].variables.items()}
    assert set(base) - set(guide) == NOT_IN_THE_GUIDE
    assert set(guide) - set(base) == LEFT_OUT_OF_THE_BASE
    for key in set(guide) & set(base):
        assert base[key] == guide[key], key


def test_the_as_documented_variant_is_the_guides_setup_to_the_letter():
    stack = load_stack(SHIPPED, "as-documented")
    guide = guide_variables()
    documented = {(name, var): value for name in ("web", "worker")
                  for var, value in stack.services[name].variables.items()}
    assert set(guide) - set(documented) == set()
    assert set(documented) - set(guide) == NOT_IN_THE_GUIDE
    for key in set(guide) & set(documented) - {("web", "PREFECT_SERVER_API_AUTH_STRING")}:
        assert documented[key] == guide[key], key
    assert documented[("web", "PREFECT_SERVER_API_AUTH_STRING")].startswith("admin:${{secret(")  # "admin:<...>"
    # `railway run` from a laptop needs the credentials too: every step that talks to Prefect carries them.
    steps = {step.name: step for step in stack.steps}
    for name in ("deploy", "first-run"):
        assert steps[name].variables["PREFECT_API_AUTH_STRING"] == "${{web.PREFECT_SERVER_API_AUTH_STRING}}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_shipped_variant_loads(variant):
    assert load_stack(SHIPPED, variant).variant == variant
    assert variant in list_variants(SHIPPED)


def test_shipped_variants_overlay_and_remove():
    gitless = load_stack(SHIPPED, "gitless-worker").services["worker"]
    assert gitless.start_command == 'prefect worker start --pool "$PREFECT_WORK_POOL"'
    assert "RAILPACK_DEPLOY_APT_PACKAGES" not in gitless.variables and gitless.without_files == ("railpack.json",)
    assert "DATABASE_URL" in gitless.variables  # the rest of the table survives
    nixpacks = load_stack(SHIPPED, "nixpacks-worker").services["worker"]
    assert "RAILPACK_DEPLOY_APT_PACKAGES" not in nixpacks.variables and nixpacks.builder == "nixpacks"
    assert load_stack(SHIPPED, "worker-runs-web").services["worker"].start_command is None
    assert "worker" not in load_stack(SHIPPED, "no-worker").services
    docker = load_stack(SHIPPED, "dockerfile-worker").services["worker"]
    assert (docker.builder, docker.dockerfile_path, docker.start_command) == ("dockerfile", "Dockerfile.worker", None)
    assert load_stack(SHIPPED, "worker-replicas").services["worker"].replicas == 2
    scheme = load_stack(SHIPPED, "ui-api-url-no-scheme").services["web"]
    assert scheme.variables["PREFECT_UI_API_URL"] == "${{RAILWAY_PUBLIC_DOMAIN}}/api"
    raw = load_stack(SHIPPED, "raw-database-url").services["web"]
    assert raw.start_command == "prefect server start --port $PORT"
    assert raw.variables["PREFECT_API_DATABASE_CONNECTION_URL"] == "${{Postgres.DATABASE_URL}}"
    assert raw.variables["PREFECT_SERVER_API_HOST"] == "0.0.0.0"


def test_a_variant_can_remove_a_table_and_redefine_it(tmp_path):
    path = stack_file(tmp_path, """
[services.web.variables]
A = "1"
B = "2"
[variants.fresh]
remove = ["services.web.variables"]
services.web.variables.C = "3"
""")
    assert load_stack(path, "fresh").services["web"].variables == {"C": "3"}
    assert load_stack(path).services["web"].variables == {"A": "1", "B": "2"}


def test_an_unknown_variant_lists_the_known_ones():
    with pytest.raises(StackError) as failure:
        load_stack(SHIPPED, "gitles-worker")
    message = str(failure.value)
    assert message.startswith("railway.stack.toml: no variant named 'gitles-worker'; variants: ")
    assert all(name in message for name in VARIANTS)


@pytest.mark.parametrize("text, message", [
    ("[services.web]\nstart_comand = 'x'\n", "services.web.start_comand: unknown key; known keys: source, builder"),
    ("[servces.web]\n", "servces: unknown key; known keys: project, shared, services, prefect, urls, steps, variants"),
    ("[services.web]\nbuilder = 'heroku'\n",
     "services.web.builder = 'heroku' is not one of: railpack, nixpacks, dockerfile"),
    ("[services.web]\nrestart_policy = 'sometimes'\n",
     "services.web.restart_policy = 'sometimes' is not one of: ON_FAILURE"),
    ("[services.web]\nsource = 'redis'\n", "services.web.source = 'redis' is not one of: repo, postgres, replay"),
    ("[services.web]\nreplicas = 0\n", "services.web.replicas = 0 must be a whole number >= 1"),
    ("[services.web]\nreplicas = true\n", "services.web.replicas = True must be a whole number >= 1"),
    ("[services.web]\npublic_domain = 'yes'\n", "services.web.public_domain must be true or false"),
    ("[services.web]\nhealthcheck_path = 'api/health'\n", "healthcheck_path must start with '/'"),
    ("[services.web]\nstart_command = ' '\n", "services.web.start_command is empty; remove the key"),
    ("[services.web]\ndockerfile_path = 'Dockerfile.web'\n", 'dockerfile_path needs builder = "dockerfile"'),
    ("[services.db]\nsource = 'postgres'\nstart_command = 'x'\n",
     "services.db.start_command: a postgres service is not built"),
    ("[services.web.variables]\nDEBUG = true\n",
     'services.web.variables.DEBUG: write the value as a string, e.g. DEBUG = "true"'),
    ("[services.web.variables]\n'MY-VAR' = 'x'\n", "services.web.variables.MY-VAR: a variable name is letters"),
    ("[services.shared]\n", "services.shared: a service name is letters, digits"),
    ("[services.'my web']\n", "services.my web: a service name is letters, digits"),
    ("[services.web]\nvolume = 'data'\n", "services.web.volume = 'data' must be an absolute mount path"),
    ("[services.web]\nvolume = '/'\n", "services.web.volume = '/' must be an absolute mount path other than /"),
    ("[services.web]\nvolume = '/data'\nreplicas = 2\n", "services.web: a service with a volume cannot have replicas"),
    ("[services.db]\nsource = 'postgres'\nvolume = '/data'\n", "services.db.volume: a postgres service is not built"),
    ("[services.web]\nwithout_files = ['../x']\n", "services.web.without_files: '../x' must be a path inside"),
    ("[services.web]\nfiles = {'/etc/x' = 'y'}\n", "services.web.files: '/etc/x' must be a path inside the repo"),
    ("[services.web]\nfiles = {'railpack.json' = 1}\n", "with the file's text as a string"),
    ("[services.web]\nfiles = ['railpack.json']\n", "services.web.files"),
    ("[variants.v]\nremove = ['services.nope']\n", "variants.v.remove: 'services.nope' is not in the base stack"),
    ("[variants.v]\nextends = 'x'\n", "variants.v.extends: unknown key; known keys: description, remove"),
])
def test_invalid_stacks_name_the_path_and_the_problem(tmp_path, text, message):
    path = stack_file(tmp_path, text)
    with pytest.raises(StackError) as failure:
        load_stack(path, "v" if "[variants.v]" in text else None)
    assert message in str(failure.value)
    assert str(failure.value).startswith("railway.stack.toml: ")


def test_a_volume_is_a_mount_path_and_files_can_be_left_out(tmp_path):
    path = stack_file(tmp_path, "[services.web]\nvolume = '/data/'\nwithout_files = ['railpack.json']\n")
    web = load_stack(path).services["web"]
    assert (web.volume, web.without_files) == ("/data", ("railpack.json",))


def test_enums_are_case_insensitive_and_numbers_become_strings(tmp_path):
    path = stack_file(tmp_path, """
[services.web]
builder = "NIXPACKS"
restart_policy = "always"
healthcheck_timeout = 30
[services.web.variables]
PORT = 4200
""")
    web = load_stack(path).services["web"]
    assert (web.builder, web.restart_policy, web.healthcheck_timeout) == ("nixpacks", "ALWAYS", 30.0)
    assert web.variables == {"PORT": "4200"}


def test_a_missing_or_broken_file_says_so(tmp_path):
    with pytest.raises(StackError, match="no such stack file"):
        load_stack(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[project\n")
    with pytest.raises(StackError, match="bad.toml: not valid TOML"):
        load_stack(tmp_path / "bad.toml")
    (tmp_path / "noname.toml").write_text("[project]\n")
    with pytest.raises(StackError, match="project.name is missing"):
        load_stack(tmp_path / "noname.toml")


def test_variables_set_on_top_override_the_variant_and_the_base():
    stack = load_stack(SHIPPED, "gitless-worker", {"worker": {"PREFECT_WORKER_QUERY_SECONDS": "1",
                                                              "RAILPACK_DEPLOY_APT_PACKAGES": "git"},
                                                   "shared": {"PREFECT_WORK_POOL": "other"}})
    worker = stack.services["worker"]
    assert worker.variables["PREFECT_WORKER_QUERY_SECONDS"] == "1"
    assert worker.variables["RAILPACK_DEPLOY_APT_PACKAGES"] == "git"  # over the variant's "ffmpeg"
    assert worker.start_command.startswith("prefect worker start")  # the rest of the variant holds
    assert stack.shared["PREFECT_WORK_POOL"] == "other"
    assert "PREFECT_WORKER_QUERY_SECONDS" not in load_stack(SHIPPED).services["worker"].variables


def test_variables_for_a_service_that_does_not_exist_are_refused():
    with pytest.raises(StackError, match="cannot set variables on 'wroker': there is no such service"):
        load_stack(SHIPPED, variables={"wroker": {"X": "1"}})
    with pytest.raises(StackError, match="no such service"):
        load_stack(SHIPPED, "no-worker", {"worker": {"X": "1"}})


def test_the_shipped_steps_deploy_run_once_and_count_rows_in_the_stack_files_own_words():
    stack = load_stack(SHIPPED)
    assert (stack.prefect.server, stack.prefect.work_pool) == ("web", "${{shared.PREFECT_WORK_POOL}}")
    assert stack.urls == {"Prefect UI": "https://${{web.RAILWAY_PUBLIC_DOMAIN}}",
                          "Prefect API": "https://${{web.RAILWAY_PUBLIC_DOMAIN}}/api"}
    assert [(s.name, s.action, s.service) for s in stack.steps] == [
        ("deploy", "run", "web"), ("first-run", "flow_run", None), ("vaults", "sql", None)]
    deploy, first, vaults = stack.steps
    assert deploy.target.startswith("vault-ingest deploy") and "$EMULATOR_SNAPSHOT_URL" in deploy.target
    assert (first.target, first.timeout) == ("sync-vaults/hourly", 300.0)
    assert vaults.variables == {"DATABASE_URL": "${{Postgres.DATABASE_URL}}"}


@pytest.mark.parametrize("text, message", [
    ("[[steps]]\nname = 'a'\n", "steps[0] (a) needs exactly one of run, flow_run, sql, http; it has none"),
    ("[[steps]]\nrun = 'x'\nhttp = 'y'\n", "steps[0] (1) needs exactly one of run, flow_run, sql, http; it has run, http"),
    ("[[steps]]\nflow_run = 'sync-vaults'\n", 'write "<flow name>/<deployment name>"'),
    ("[[steps]]\nname = 'a'\nrun = 'x'\n[[steps]]\nname = 'a'\nrun = 'y'\n", "two steps are named 'a'"),
    ("[[steps]]\nrun = 'x'\nwait = 'y'\n", "steps[0].wait: unknown key; known keys: name, service, variables"),
    ("[[steps]]\nrun = 'x'\ntimeout = 0\n", "steps[0].timeout = 0 must be a number of seconds >= 1"),
    ("[prefect]\nwork_pool = 'p'\n", "prefect.server is missing; name the service that runs the Prefect server"),
    ("[urls]\nUI = 3\n", "urls.UI must be a string"),
])
def test_invalid_steps_name_the_step_and_the_fix(tmp_path, text, message):
    with pytest.raises(StackError) as failure:
        load_stack(stack_file(tmp_path, text))
    assert message in str(failure.value)


def test_a_variant_replaces_the_steps_whole(tmp_path):
    path = stack_file(tmp_path, """
[[steps]]
run = "a"
[[steps]]
run = "b"
[variants.one]
steps = [{ name = "only", http = "http://127.0.0.1:1/" }]
""")
    assert [s.target for s in load_stack(path).steps] == ["a", "b"]
    assert [(s.name, s.action) for s in load_stack(path, "one").steps] == [("only", "http")]
