"""Each repo service's image, built from throwaway repositories the tests make: what the lock installs, what a
stale lock and an undeclared import do, what is cached. Dependencies are pinned to versions this project's
uv.lock holds, so uv finds them in the cache `make install` filled and the tests run offline."""

import os
import platform
import re
import subprocess
from pathlib import Path

import pytest

from emulator.model.installs import railpack
from emulator.model.plan import BuildError, ServicePlan
from emulator.model.stack import load_stack
from emulator.runtime.build import prepare_stack
from emulator.runtime.image import CACHE_ENV, build_venv, host_python, uv_binary, venv_key

ROOT = Path(__file__).resolve().parents[3]
LOCKED = dict(re.findall(r'^name = "([^"]+)"\nversion = "([^"]+)"', (ROOT / "uv.lock").read_text(), re.M))
PROBE = "import importlib.util as u\nprint(*[f'{m}=' + ('yes' if u.find_spec(m) else 'no') for m in "\
        "('idna', 'certifi', 'h11')])\n"


def pin(name: str) -> str:
    return f"{name}=={LOCKED[name]}"


def pyproject(*dependencies: str, extra: str | None = None, dev: str | None = None) -> str:
    text = (f'[project]\nname = "app"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
            f"dependencies = {list(dependencies)!r}\n")
    if extra:
        text += f"[project.optional-dependencies]\nextra = [{extra!r}]\n"
    if dev:
        text += f"[dependency-groups]\ndev = [{dev!r}]\n"
    return text.replace("'", '"')


def lock(repo: Path) -> None:
    subprocess.run([uv_binary(), "lock", "--offline", "--python", host_python()], cwd=repo, check=True,
                   capture_output=True, env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"})


def make_repo(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def plan_app(tmp_path: Path, repo: Path, service: str = "") -> ServicePlan | BuildError:
    stack = tmp_path / "stack.toml"
    stack.write_text(f'[project]\nname = "t"\n[services.app]\n{service}')
    return prepare_stack(load_stack(stack), repo, tmp_path / "state")["app"]


def run(plan: ServicePlan) -> subprocess.CompletedProcess:
    return subprocess.run(plan.argv, env=plan.env, cwd=plan.cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache of this test's own, to see builds and hits (the suite's shared one is warm)."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_uv_lock_installs_its_dependencies_without_extras_or_dev(tmp_path):
    repo = make_repo(tmp_path / "repo", {"pyproject.toml": pyproject(pin("idna"), extra=pin("certifi"), dev=pin("h11")),
                                         "main.py": PROBE})
    lock(repo)
    plan = plan_app(tmp_path, repo)
    result = run(plan)
    assert result.stdout.split() == ["idna=yes", "certifi=no", "h11=no"], result.stderr
    assert plan.argv == ("/bin/bash", "-c", "python main.py")
    log = "\n".join(plan.build_log)
    for line in ("↳ Detected Python", "↳ Using uv", "$ uv sync --locked --no-dev --no-editable", "$ python main.py"):
        assert line in log
    assert re.search(r"^Build time: \d+\.\d\d seconds$", log, re.M)
    assert not plan.cwd.is_relative_to(repo) and (plan.cwd / ".venv" / "bin" / "python").exists()


def test_a_stale_lock_fails_the_build_with_uvs_own_message(tmp_path):
    repo = make_repo(tmp_path / "repo", {"pyproject.toml": pyproject(pin("idna")), "main.py": PROBE})
    lock(repo)
    (repo / "pyproject.toml").write_text(pyproject(pin("idna"), pin("certifi")))  # declared, never locked
    failed = plan_app(tmp_path, repo)
    assert isinstance(failed, BuildError)
    words = " ".join(str(failed).split())  # uv wraps its message to the terminal's width
    assert "The lockfile at `uv.lock` needs to be updated, but `--locked` was provided." in words
    assert "Build failed: `uv sync --locked --no-dev --no-install-project` exited with code" in str(failed)


def test_an_undeclared_import_fails_at_runtime_though_the_developers_venv_has_it(tmp_path):
    # httpx is installed where the emulator runs; the image has only what the lock names.
    repo = make_repo(tmp_path / "repo", {"pyproject.toml": pyproject(pin("idna")), "main.py": "import httpx\n"})
    lock(repo)
    result = run(plan_app(tmp_path, repo))
    assert result.returncode == 1 and "ModuleNotFoundError: No module named 'httpx'" in result.stderr


def test_a_pyproject_without_a_lock_installs_nothing(tmp_path):
    repo = make_repo(tmp_path / "repo", {"pyproject.toml": pyproject(pin("idna"))})
    plan = plan_app(tmp_path, repo, 'start_command = "vault-ingest serve"\n')
    result = run(plan)
    assert result.returncode == 127 and "vault-ingest: command not found" in result.stderr
    assert not any(line.startswith("$ uv") or line.startswith("$ pip") for line in plan.build_log)


def test_requirements_txt_is_installed_with_pip_into_the_images_venv(tmp_path):
    repo = make_repo(tmp_path / "repo", {"requirements.txt": pin("certifi") + "\n", "app.py": PROBE})
    plan = plan_app(tmp_path, repo)
    assert run(plan).stdout.split() == ["idna=no", "certifi=yes", "h11=no"]
    assert "↳ Using pip" in plan.build_log and "$ pip install -r requirements.txt" in plan.build_log


@pytest.mark.parametrize("marker, manager", [("poetry.lock", "Poetry"), ("pdm.lock", "PDM")])
def test_an_unmodelled_package_manager_fails_the_build_and_says_so(tmp_path, marker, manager):
    repo = make_repo(tmp_path / "repo", {"pyproject.toml": pyproject(), marker: "", "main.py": ""})
    failed = plan_app(tmp_path, repo)
    assert isinstance(failed, BuildError)
    assert str(failed).startswith(f"{marker}: {manager} projects are built by Railway but not by the emulator")


def test_a_build_is_cached_by_what_it_depends_on(tmp_path, cache):
    repo = make_repo(tmp_path / "repo", {"pyproject.toml": pyproject(pin("idna")), "main.py": PROBE})
    lock(repo)
    first = plan_app(tmp_path, repo)
    assert any(line.startswith("Built image") for line in first.build_log)
    (repo / "main.py").write_text(PROBE + "print('changed')\n")  # the app, not what the venv is built from
    second = plan_app(tmp_path, repo)
    assert any(line.startswith("Using cached image") for line in second.build_log)
    # The same venv and runtime bin; only the deployment's own bin (under its fresh HOME) differs.
    image_dirs = [first.env["PATH"].split(":")[i] for i in (0, 2)]
    assert [second.env["PATH"].split(":")[i] for i in (0, 2)] == image_dirs
    assert run(second).stdout.split()[-1] == "changed"
    (repo / "pyproject.toml").write_text(pyproject(pin("idna"), pin("h11")))
    lock(repo)
    third = plan_app(tmp_path, repo)
    assert any(line.startswith("Built image") for line in third.build_log)
    assert run(third).stdout.split()[:3] == ["idna=yes", "certifi=no", "h11=yes"]


def test_a_build_killed_half_way_is_built_again(tmp_path, cache):
    repo = make_repo(tmp_path / "repo", {"requirements.txt": pin("idna") + "\n"})
    install = railpack(repo)
    key = venv_key("railpack", install, repo, "tree", host_python())
    (cache / "venvs" / key / "venv").mkdir(parents=True)  # no marker: the build never finished
    venv = build_venv("railpack", install, repo, "tree")
    assert any(line.startswith("Built image") for line in venv.log) and (venv.path / "bin" / "python").exists()
    assert any(line.startswith("Using cached image") for line in build_venv("railpack", install, repo, "tree").log)


def test_the_image_holds_the_snapshot_not_the_working_tree(tmp_path):
    repo = make_repo(tmp_path / "repo", {"main.py": "", ".gitignore": "secret.txt\n"})
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    make_repo(repo, {"secret.txt": "ignored", "new.txt": "untracked"})
    plan = plan_app(tmp_path, repo)
    assert (plan.cwd / "new.txt").read_text() == "untracked" and not (plan.cwd / "secret.txt").exists()
    assert not (plan.cwd / ".git").exists()


def test_the_local_python_is_named_where_it_differs_from_railways(tmp_path):
    repo = make_repo(tmp_path / "repo", {"main.py": "", ".python-version": "3.9\n"})
    plan = plan_app(tmp_path, repo)
    assert (f"⚠ Railway's image runs Python 3.9; locally the host's Python {platform.python_version()} runs this "
            "service") in plan.build_log


def test_an_edit_to_the_code_reinstalls_only_the_project(tmp_path, cache):
    packaged = pyproject(pin("idna")) + ('[project.scripts]\napp = "app:main"\n'
                                         '[tool.setuptools]\npy-modules = ["app"]\n'
                                         '[build-system]\nrequires = ["setuptools>=69"]\n'
                                         'build-backend = "setuptools.build_meta"\n')
    repo = make_repo(tmp_path / "repo", {"pyproject.toml": packaged, "app.py": "def main():\n    print('one')\n"})
    lock(repo)
    first = plan_app(tmp_path, repo, 'start_command = "app"\n')
    assert run(first).stdout.strip() == "one"
    (repo / "app.py").write_text("def main():\n    print('two')\n")
    second = plan_app(tmp_path, repo, 'start_command = "app"\n')
    assert run(second).stdout.strip() == "two"  # installed from the source (--no-editable), so rebuilt
    assert any(line.endswith(": cached, the lock is unchanged") for line in second.build_log)
    assert any(line.startswith("Built image") for line in second.build_log)
    assert run(first).stdout.strip() == "one"  # the first deployment's image is untouched


def test_an_apt_package_the_host_lacks_is_named_in_the_build_log(tmp_path):
    repo = make_repo(tmp_path / "repo", {"main.py": ""})
    plan = plan_app(tmp_path, repo, '[services.app.variables]\nRAILPACK_DEPLOY_APT_PACKAGES = "git libpq5 '
                                    'no-such-tool"\n')
    lacking = [line for line in plan.build_log if line.startswith("⚠ apt packages")]
    assert lacking == ["⚠ apt packages no-such-tool: not on this host, so not in the local image"]
