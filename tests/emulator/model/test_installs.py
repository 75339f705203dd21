"""Which install each builder runs for which files: Railpack's python.go and Nixpacks' python.rs orders, and a
Dockerfile's own RUN lines (the tests of the image build run them: test_image.py)."""

import pytest

from emulator.model.installs import NOTHING, WHOLE_SOURCE, dockerfile, nixpacks, railpack
from emulator.model.plan import BuildError

PACKAGED = '[project]\nname = "app"\n[build-system]\nrequires = ["setuptools"]\n'
VIRTUAL = '[project]\nname = "app"\n'


def files(tmp_path, **named):
    for name, text in named.items():
        (tmp_path / name.replace("_", ".")).write_text(text)
    return tmp_path


def test_railpack_requirements_txt_wins_over_a_uv_lock(tmp_path):
    install = railpack(files(tmp_path, requirements_txt="idna\n", pyproject_toml=VIRTUAL, uv_lock=""))
    assert install.manager == "pip" and install.commands == (("uv", "pip", "install", "-r", "requirements.txt"),)
    assert install.inputs == ("requirements.txt",)


def test_railpack_a_local_reference_makes_the_install_read_the_whole_source(tmp_path):
    assert railpack(files(tmp_path, requirements_txt="lib @ file:///app/lib\n")).inputs == (WHOLE_SOURCE,)


def test_railpack_uv_installs_the_project_in_a_layer_of_its_own(tmp_path):
    install = railpack(files(tmp_path, pyproject_toml=PACKAGED, uv_lock=""))
    assert install.commands == (("uv", "sync", "--locked", "--no-dev", "--no-install-project"),)
    assert install.project_commands == (("uv", "sync", "--locked", "--no-dev", "--no-editable"),)
    assert install.inputs == ("pyproject.toml", "uv.lock")
    # A project uv does not install (no build system) has no project layer.
    assert railpack(files(tmp_path, pyproject_toml=VIRTUAL)).project_commands == ()


def test_railpack_a_pyproject_without_a_lock_installs_nothing(tmp_path):
    assert railpack(files(tmp_path, pyproject_toml=PACKAGED)) == NOTHING


@pytest.mark.parametrize("marker", ["poetry.lock", "pdm.lock"])
def test_both_builders_refuse_what_the_emulator_cannot_install(tmp_path, marker):
    root = files(tmp_path, pyproject_toml=PACKAGED)
    (root / marker).write_text("")
    for provider in (railpack, nixpacks):
        with pytest.raises(BuildError, match=f"^{marker}: .* not by the emulator"):
            provider(root)


def test_nixpacks_installs_a_stale_lock_frozen_and_a_bare_pyproject_with_pip(tmp_path):
    install = nixpacks(files(tmp_path, pyproject_toml=PACKAGED, uv_lock=""))
    assert install.log == ("install: uv sync --no-dev --frozen",)
    assert install.project_commands == (("uv", "sync", "--no-dev", "--frozen"),)
    (tmp_path / "uv.lock").unlink()
    assert nixpacks(tmp_path).commands == (("uv", "pip", "install", "."),)


def test_a_dockerfile_installs_what_its_run_lines_install(tmp_path):
    install = dockerfile(["apt-get update && apt-get install -y git", "uv sync --locked --no-dev --no-editable"])
    assert install.log == ("$ uv sync --locked --no-dev --no-editable",)
    assert install.commands == (("uv", "sync", "--locked", "--no-dev", "--no-editable", "--no-install-project"),)
    assert install.project_commands == (("uv", "sync", "--locked", "--no-dev", "--no-editable"),)
    pip = dockerfile(["pip install --no-cache-dir -r requirements.txt", "python -m pip install ."])
    assert pip.commands == (("uv", "pip", "install", "--no-cache-dir", "-r", "requirements.txt"),
                            ("uv", "pip", "install", "."))
    assert dockerfile(["apt-get install -y git"]) == NOTHING
