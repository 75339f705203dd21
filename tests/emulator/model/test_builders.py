import json

import pytest

from emulator.model.builders import NO_START_NIXPACKS, NO_START_RAILPACK, build, parse_dockerfile
from emulator.model.plan import BuildError
from emulator.model.stack import Service


def repo(tmp_path, files=None):
    """A repo with pyproject.toml (so Python is detected) plus `files` (name -> text)."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "vault-ingest"\n')
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text)
    return tmp_path


PROCFILE = "web: vault-ingest serve\nworker: bash start_worker.sh\n"


# --- Railpack -------------------------------------------------------------------------------------

def test_railpack_picks_web_and_logs_it_like_railpack(tmp_path):
    image = build(Service("worker"), repo(tmp_path, {"Procfile": PROCFILE}), {})
    assert image.builder == "railpack"
    assert image.argv == ("/bin/bash", "-c", "vault-ingest serve")
    assert image.log + image.start == ("Railpack (emulated)", "↳ Detected Python",
                                       "↳ Found web command in Procfile", "Deploy", "$ vault-ingest serve")


def test_railpack_precedence_custom_then_config_file_then_env_then_procfile(tmp_path):
    # core.go GetConfig merges options < environment < railpack.json; the prose docs say the opposite.
    config = json.dumps({"deploy": {"startCommand": "from-config"}})
    root = repo(tmp_path, {"Procfile": PROCFILE, "railpack.json": config})
    env = {"RAILPACK_START_CMD": "from-env"}
    assert build(Service("s", start_command="custom"), root, env).argv[-1] == "custom"
    assert build(Service("s"), root, env).argv[-1] == "from-config"
    (root / "railpack.json").write_text("{}")
    assert build(Service("s"), root, env).argv[-1] == "from-env"
    assert build(Service("s"), root, {}).argv[-1] == "vault-ingest serve"


def test_railpack_still_logs_the_procfile_pick_when_a_custom_command_wins(tmp_path):
    # Its Procfile provider always runs; the override applies after (railpack core.go).
    image = build(Service("worker", start_command="bash start_worker.sh"), repo(tmp_path, {"Procfile": PROCFILE}), {})
    assert "↳ Found web command in Procfile" in image.log
    assert image.start == ("Deploy", "$ bash start_worker.sh")


def test_railpack_reads_json_with_comments_and_logs_the_config_file(tmp_path):
    config = '{\n  // the worker\n  "deploy": {"startCommand": "run // not a comment"} /* end */\n}\n'
    image = build(Service("s"), repo(tmp_path, {"railpack.json": config}), {})
    assert image.argv[-1] == "run // not a comment"
    assert "↳ Using config file `railpack.json`" in image.log


def test_an_invalid_railpack_json_fails_the_build(tmp_path):
    with pytest.raises(BuildError, match="Failed to read config file `railpack.json`"):
        build(Service("s"), repo(tmp_path, {"railpack.json": "{nope"}), {})


def test_railpack_procfile_order_worker_then_first_other(tmp_path):
    image = build(Service("s"), repo(tmp_path, {"Procfile": "clock: ./clock.sh\nworker: ./work.sh\n"}), {})
    assert image.argv[-1] == "./work.sh" and "↳ Found worker command in Procfile" in image.log
    image = build(Service("s"), repo(tmp_path, {"Procfile": "urgent: ./u.sh\nclock: ./c.sh\nrelease: ./r.sh\n"}), {})
    assert image.argv[-1] == "./u.sh" and "↳ Found urgent command in Procfile" in image.log


def test_railpack_falls_back_to_the_python_main_file(tmp_path):
    assert build(Service("s"), repo(tmp_path, {"app.py": ""}), {}).argv[-1] == "python app.py"


def test_railpack_without_any_start_command_fails_with_railpacks_message(tmp_path):
    with pytest.raises(BuildError) as failure:
        build(Service("s"), repo(tmp_path), {})
    assert str(failure.value) == (
        "No start command detected. Specify a start command: https://railpack.com/config/file#deploy"
    ) == NO_START_RAILPACK


@pytest.mark.parametrize("builder", ["railpack", "nixpacks"])
def test_a_yaml_invalid_procfile_fails_even_with_a_custom_start_command(tmp_path, builder):
    root = repo(tmp_path, {"Procfile": 'web: python -c "x": y\n'})
    with pytest.raises(BuildError, match="Procfile is not valid YAML"):
        build(Service("s", builder=builder, start_command="run"), root, {})


def test_procfile_lint_lands_in_the_build_log(tmp_path):
    image = build(Service("s"), repo(tmp_path, {"Procfile": "web: serve #x\n"}), {})
    assert any(line.startswith("⚠ Procfile line 1: Heroku runs `web`") for line in image.log)


def test_the_railpack_runtime_has_no_git(tmp_path):
    assert build(Service("s", start_command="run"), repo(tmp_path), {}).tools == frozenset()


@pytest.mark.parametrize("packages, tools", [
    ("git", {"git"}),
    ("... git curl", {"git", "curl"}),
    ("ffmpeg", set()),
])
def test_railpack_deploy_apt_packages_add_tools(tmp_path, packages, tools):
    image = build(Service("s", start_command="run"), repo(tmp_path), {"RAILPACK_DEPLOY_APT_PACKAGES": packages})
    assert image.tools == tools


def test_railpack_json_apt_packages_replace_the_variables_list(tmp_path):
    # The file's list replaces the variable's at the merge; its "..." spreads the provider's list, not the
    # variable's (context.go applyDeployAptPackages), so the variable is ignored while the file sets one.
    root = repo(tmp_path, {"railpack.json": json.dumps({"deploy": {"aptPackages": ["...", "git"]}})})
    service = Service("s", start_command="run")
    assert build(service, root, {}).tools == {"git"}
    assert build(service, root, {"RAILPACK_DEPLOY_APT_PACKAGES": "curl"}).tools == {"git"}
    assert build(service, root, {"RAILPACK_DEPLOY_APT_PACKAGES": "ffmpeg"}).apt == ("git",)
    (root / "railpack.json").write_text(json.dumps({"deploy": {}}))
    assert build(service, root, {"RAILPACK_DEPLOY_APT_PACKAGES": "curl"}).tools == {"curl"}


# --- Nixpacks -------------------------------------------------------------------------------------

def test_nixpacks_runs_a_login_shell_and_has_git_and_curl(tmp_path):
    image = build(Service("s", builder="nixpacks"), repo(tmp_path, {"Procfile": PROCFILE}), {})
    assert image.argv == ("/bin/bash", "-l", "-c", "vault-ingest serve")
    assert image.tools == {"git", "curl"}
    assert not any("Found" in line for line in image.log)  # Nixpacks prints no Procfile line
    assert image.env["PYTHONUNBUFFERED"] == "1"


def test_nixpacks_precedence_custom_then_env_then_toml_then_procfile(tmp_path):
    root = repo(tmp_path, {"Procfile": PROCFILE, "nixpacks.toml": '[start]\ncmd = "from-toml"\n'})
    service = Service("s", builder="nixpacks")
    env = {"NIXPACKS_START_CMD": "from-env"}
    assert build(Service("s", builder="nixpacks", start_command="custom"), root, env).argv[-1] == "custom"
    assert build(service, root, env).argv[-1] == "from-env"
    assert build(service, root, {}).argv[-1] == "from-toml"
    assert build(service, repo(tmp_path, {"nixpacks.toml": ""}), {}).argv[-1] == "vault-ingest serve"


def test_nixpacks_ignores_railpack_settings(tmp_path):
    root = repo(tmp_path, {"Procfile": PROCFILE, "railpack.json": '{"deploy": {"startCommand": "x"}}'})
    assert build(Service("s", builder="nixpacks"), root, {"RAILPACK_START_CMD": "y"}).argv[-1] == "vault-ingest serve"


def test_nixpacks_picks_alphabetically_and_never_release(tmp_path):
    root = repo(tmp_path, {"Procfile": "release: migrate\nzeta: z\nalpha: a\n"})
    assert build(Service("s", builder="nixpacks"), root, {}).argv[-1] == "a"
    root = repo(tmp_path, {"Procfile": "release: migrate\n"})
    assert build(Service("s", builder="nixpacks"), root, {}).argv[-1] == "python -m vault-ingest"


def test_nixpacks_without_any_start_command_fails(tmp_path):
    (tmp_path / "requirements.txt").write_text("")
    with pytest.raises(BuildError) as failure:
        build(Service("s", builder="nixpacks"), tmp_path, {})
    assert str(failure.value) == NO_START_NIXPACKS


# --- Dockerfile -----------------------------------------------------------------------------------

WORKER_DOCKERFILE = """\
FROM python:3.13-slim
RUN apt-get update \\
    && apt-get install -y --no-install-recommends git ca-certificates \\
    && rm -rf /var/lib/apt/lists/*
ENV PYTHONUNBUFFERED=1 POOL=vault-ingest
CMD prefect worker start --pool ${POOL}
"""


def test_a_dockerfile_runtime_has_what_apt_get_installs(tmp_path):
    root = repo(tmp_path, {"Dockerfile.worker": WORKER_DOCKERFILE})
    image = build(Service("worker", builder="dockerfile", dockerfile_path="Dockerfile.worker"), root, {})
    assert image.builder == "dockerfile"
    assert image.tools == {"git"}
    assert image.env == {"PYTHONUNBUFFERED": "1", "POOL": "vault-ingest"}
    assert image.argv == ("/bin/sh", "-c", "prefect worker start --pool ${POOL}")
    assert image.log + image.start == ("Using Dockerfile `Dockerfile.worker`", "Deploy",
                                       "$ /bin/sh -c 'prefect worker start --pool ${POOL}'")


def test_a_root_dockerfile_wins_over_the_builder_setting(tmp_path):
    root = repo(tmp_path, {"Procfile": PROCFILE, "Dockerfile": 'FROM python:3.13-slim\nCMD ["python", "-m", "app"]\n'})
    image = build(Service("web"), root, {})
    assert image.builder == "dockerfile"
    assert image.argv == ("python", "-m", "app")
    assert image.log[0] == "Using detected Dockerfile!"
    assert image.tools == frozenset()


def test_railway_dockerfile_path_variable_selects_the_dockerfile(tmp_path):
    root = repo(tmp_path, {"Dockerfile.worker": WORKER_DOCKERFILE})
    assert build(Service("w"), root, {"RAILWAY_DOCKERFILE_PATH": "Dockerfile.worker"}).builder == "dockerfile"


def test_a_custom_start_command_on_a_dockerfile_service_is_exec_form(tmp_path):
    root = repo(tmp_path, {"Dockerfile.worker": WORKER_DOCKERFILE})
    service = Service("w", builder="dockerfile", dockerfile_path="Dockerfile.worker",
                      start_command='prefect worker start --pool "$POOL" --port $PORT')
    # No shell: $PORT reaches the program literally, as on Railway.
    assert build(service, root, {}).argv == ("prefect", "worker", "start", "--pool", "$POOL", "--port", "$PORT")


@pytest.mark.parametrize("layout", [
    "WORKDIR /app\nCOPY --from=build /out ./\nCOPY pyproject.toml README.md ./\nCOPY src ./src\nWORKDIR src\n",
    "COPY . /app/\n",
    "WORKDIR /app\n",  # no COPY into a directory: the WORKDIR it is
])
def test_paths_in_the_copied_build_context_point_into_the_checkout(tmp_path, layout):
    dockerfile = f'FROM python:3.13-slim\n{layout}CMD ["bash", "/app/src/run.sh", "/app-data"]\n'
    image = build(Service("w", builder="dockerfile"), repo(tmp_path, {"Dockerfile": dockerfile}), {})
    assert image.argv == ("bash", f"{tmp_path}/src/run.sh", "/app-data")
    assert image.start[-1] == "$ bash /app/src/run.sh /app-data"


def test_a_missing_dockerfile_fails_the_build(tmp_path):
    with pytest.raises(BuildError, match="Dockerfile `Dockerfile.worker` does not exist"):
        build(Service("w", builder="dockerfile", dockerfile_path="Dockerfile.worker"), repo(tmp_path), {})


def test_a_dockerfile_without_a_command_fails_the_build(tmp_path):
    with pytest.raises(BuildError, match="no CMD or ENTRYPOINT"):
        build(Service("w", builder="dockerfile"), repo(tmp_path, {"Dockerfile": "FROM python:3.13-slim\n"}), {})


@pytest.mark.parametrize("dockerfile, tools", [
    ("FROM python:3.13\n", {"git", "curl", "wget", "ssh"}),
    ("FROM python:3.13-slim\n", set()),
    ("FROM docker.io/library/python:3.13-slim-trixie@sha256:abc\n", set()),
    ("FROM debian:trixie-slim\nRUN apt install -y curl=8.* openssh-client\n", {"curl", "ssh"}),
    ("FROM python:3.13-alpine\nRUN apk add --no-cache git\n", {"wget", "git"}),
    ("FROM buildpack-deps:trixie-curl\n", {"curl", "wget"}),
    # Only the final stage counts: the builder stage's git stays behind.
    ("FROM python:3.13-slim AS build\nRUN apt-get install -y git\nFROM python:3.13-slim\n", set()),
    ("FROM python:3.13-slim AS base\nRUN apt-get install -y git\nFROM base\nCMD run\n", {"git"}),
])
def test_dockerfile_runtime_tools(dockerfile, tools):
    assert parse_dockerfile(dockerfile).tools == tools


@pytest.mark.parametrize("dockerfile, argv", [
    ('FROM x\nENTRYPOINT ["tini", "--"]\nCMD ["prefect", "worker"]\n', ("tini", "--", "prefect", "worker")),
    ('FROM x\nENTRYPOINT ["tini", "--"]\nCMD run $PORT\n', ("tini", "--", "/bin/sh", "-c", "run $PORT")),
    ('FROM x\nCMD ["a"]\nENTRYPOINT exec serve\nCMD ["ignored"]\n', ("/bin/sh", "-c", "exec serve")),
    ('FROM x\nCMD ["a"]\nENTRYPOINT ["e"]\n', ("e", "a")),  # a CMD of this stage survives ENTRYPOINT
    ('FROM x AS base\nCMD ["a"]\nFROM base\nENTRYPOINT ["e"]\n', ("e",)),  # an inherited one does not
])
def test_dockerfile_entrypoint_and_cmd(dockerfile, argv):
    assert parse_dockerfile(dockerfile).argv() == argv
