"""Railpack's configuration merge, against the cases of Railpack's own tests and example plans.

Expected values are copied from railwayapp/railpack at b5e805800e6787a4744cd944a357e29b848d38f3:
`core/config_test.go` (TestGenerateConfigFromEnvironment), `core/config/config_test.go` (TestMergeConfig*),
`core/plan/spread_test.go` semantics and the example plans in `core/__snapshots__/`.
"""

import json

import pytest

from emulator.model.builders import build
from emulator.model.plan import BuildError
from emulator.model.railpack_config import Config, from_environment, merge, resolve, spread, standardize
from emulator.model.stack import Service


def test_the_environment_kitchen_sink_of_railpacks_own_test():
    config = from_environment({
        "RAILPACK_INSTALL_CMD": "npm install", "RAILPACK_BUILD_CMD": "npm run build", "RAILPACK_START_CMD": "npm start",
        "RAILPACK_PACKAGES": "node@18 python@3.9", "RAILPACK_BUILD_APT_PACKAGES": "build-essential libssl-dev",
        "RAILPACK_DEPLOY_APT_PACKAGES": "libssl-dev",
    })
    assert (config.install_cmd, config.build_cmd, config.start_cmd) == ("npm install", "npm run build", "npm start")
    assert config.packages == {"node": "18", "python": "3.9"}
    assert config.build_apt_packages == ["build-essential", "libssl-dev"]
    assert config.deploy_apt_packages == ["libssl-dev"]
    assert from_environment({"RAILPACK_PACKAGES": "jq pipx:httpie@3.2.4"}).packages == {
        "jq": "latest", "pipx:httpie": "3.2.4"}
    assert from_environment({}) == Config()


def test_merge_later_wins_maps_merge_lists_replace():
    # TestMergeConfigSmall: packages merge key by key, deploy variables too, a later value wins.
    first = Config(packages={"python": "latest", "node": "22"}, deploy_variables={"SHARED": "one", "HELLO": "world"},
                   build_apt_packages=["git"], start_cmd="first")
    second = Config(packages={"node": "23", "bun": "latest"}, deploy_variables={"SHARED": "two", "FOO": "bar"})
    merged = merge(first, second)
    assert merged.packages == {"python": "latest", "node": "23", "bun": "latest"}
    assert merged.deploy_variables == {"SHARED": "two", "HELLO": "world", "FOO": "bar"}
    assert (merged.build_apt_packages, merged.start_cmd) == (["git"], "first")  # zero values never override
    # A non-nil list replaces outright, even an empty one; "..." is not spread at this stage.
    assert merge(Config(deploy_apt_packages=["curl"]), Config(deploy_apt_packages=["...", "git"])
                 ).deploy_apt_packages == ["...", "git"]
    assert merge(Config(deploy_apt_packages=["curl"]), Config(deploy_apt_packages=[])).deploy_apt_packages == []


def test_spread_strings():
    assert spread(None, ["libpq5"]) == ["libpq5"]
    assert spread(["...", "git"], ["libpq5"]) == ["libpq5", "git"]
    assert spread(["git"], ["libpq5"]) == ["git"]
    assert spread(["...", "git", "..."], ["a"]) == ["a", "git", "a"]


def test_the_file_beats_the_variables(tmp_path):
    (tmp_path / "railpack.json").write_text(json.dumps({"deploy": {"startCommand": "file", "aptPackages": ["..."]}}))
    merged = resolve(tmp_path, {"RAILPACK_START_CMD": " env ", "RAILPACK_DEPLOY_APT_PACKAGES": "git"})
    assert (merged.config.start_cmd, merged.config.deploy_apt_packages, merged.config_file) == ("file", ["..."],
                                                                                                "railpack.json")
    assert resolve(tmp_path / "nowhere", {"RAILPACK_START_CMD": " env "}).config.start_cmd == "env"  # trimmed
    # Railpack drops the overridden variables without a word; the emulator names them for the build log.
    assert merged.ignored == ("RAILPACK_START_CMD", "RAILPACK_DEPLOY_APT_PACKAGES")
    (tmp_path / "railpack.json").write_text(json.dumps({"deploy": {"aptPackages": []}}))  # an empty list replaces too
    assert resolve(tmp_path, {"RAILPACK_DEPLOY_APT_PACKAGES": "git"}).ignored == ("RAILPACK_DEPLOY_APT_PACKAGES",)
    (tmp_path / "railpack.json").write_text("{}")
    assert resolve(tmp_path, {"RAILPACK_DEPLOY_APT_PACKAGES": "git"}).ignored == ()


def test_railpack_config_file_names_another_file_and_a_missing_one_fails(tmp_path):
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "rp.json").write_text('{"deploy": {"startCommand": "from ci"}}')
    assert resolve(tmp_path, {"RAILPACK_CONFIG_FILE": "ci/rp.json"}).config.start_cmd == "from ci"
    with pytest.raises(BuildError, match=r'config file ".*missing.json" not found'):
        resolve(tmp_path, {"RAILPACK_CONFIG_FILE": "missing.json"})


def test_hujson_comments_and_trailing_commas():
    text = '{\n // c\n "deploy": {"aptPackages": ["...", "git",], "startCommand": "a // b, ]"}, /* x */\n}'
    assert json.loads(standardize(text)) == {"deploy": {"aptPackages": ["...", "git"], "startCommand": "a // b, ]"}}


@pytest.mark.parametrize("text, message", [
    ('{"deploy": {"aptPackages": "git"}}', "`deploy.aptPackages` must be a list of strings"),
    ('{"deploy": []}', "`deploy` must be an object"),
    ('{"steps": {"build": {"commands": ["make"]}}}', "`steps` in `railpack.json` are not modelled"),
])
def test_a_config_the_emulator_cannot_act_on_fails_the_build_and_says_why(tmp_path, text, message):
    (tmp_path / "railpack.json").write_text(text)
    with pytest.raises(BuildError, match=message.replace("`", ".")):
        resolve(tmp_path, {})


# Railpack's example plans (core/__snapshots__/TestGenerateBuildPlanForExamples_<name>_1.snap.json): the
# files that decide the start command, and the start command and install commands the snapshot holds.
EXAMPLES = {
    "python-pip": ({"app.py": "", "requirements.txt": "numpy==2.2.1\npandas==2.2.3\n"}, "python app.py",
                   ["$ pip install -r requirements.txt"]),
    "python-bot-only": ({"bot.py": ""}, "python bot.py", []),
    "python-uv": ({"main.py": "", "uv.lock": "", "pyproject.toml":
                   '[project]\nname = "python-uv"\ndependencies = ["flask>=3.1.0", "gunicorn>=23.0.0"]\n'},
                  "gunicorn --bind 0.0.0.0:${PORT:-8000} main:app",
                  ["$ uv sync --locked --no-dev --no-install-project", "$ uv sync --locked --no-dev --no-editable"]),
    "python-uv-packaged": ({"uv.lock": "", "railpack.json": '{"deploy": {"startCommand": "python-uv-packaged"}}',
                            "pyproject.toml": '[project]\nname = "python-uv-packaged"\n'}, "python-uv-packaged",
                           ["$ uv sync --locked --no-dev --no-install-project",
                            "$ uv sync --locked --no-dev --no-editable"]),
}


@pytest.mark.parametrize("name", EXAMPLES)
def test_railpacks_example_plans(tmp_path, name):
    files, start, commands = EXAMPLES[name]
    for file, text in files.items():
        (tmp_path / file).write_text(text)
    image = build(Service("s"), tmp_path, {})
    assert image.argv == ("/bin/bash", "-c", start)
    assert [line for line in image.install.log if line.startswith("$")] == commands
