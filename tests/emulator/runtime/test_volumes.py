"""The ephemeral filesystem and volumes: planned directly, then through `python -m emulator up`/`down`/`up`
with a throwaway repository whose service counts its starts in and outside its volume."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.model.stack import load_stack
from emulator.model.volumes import map_mount_path
from emulator.runtime.build import prepare_stack, remove_homes
from tests.support.emulator import kill_service_groups
from tests.support.prefect_server import clean_environ, wait_until


@pytest.mark.parametrize("value, mapped", [
    ("/data", "/v"),
    ("/data/leases", "/v/leases"),
    ("sqlite+aiosqlite:////data/prefect.db", "sqlite+aiosqlite:////v/prefect.db"),
    ("a:/data:b", "a:/v:b"),
    ("/database", "/database"),
    ("/srv/data", "/srv/data"),
    ("data", "data"),
])
def test_values_naming_the_mount_path_point_at_the_local_volume(value, mapped):
    assert map_mount_path({"X": value}, "/data", Path("/v")) == {"X": mapped}


def plan_app(tmp_path: Path, volume: str):
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "main.py").write_text("")
    (repo / "data").mkdir(exist_ok=True)
    (repo / "data" / "from-image.txt").write_text("hidden by the mount")
    stack = tmp_path / "stack.toml"
    stack.write_text(f'[project]\nname = "t"\n[services.app]\nvolume = "{volume}"\n'
                     '[services.app.variables]\nLEASES = "${{RAILWAY_VOLUME_MOUNT_PATH}}/leases"\n')
    return prepare_stack(load_stack(stack), repo, tmp_path / "state")["app"]


def test_only_the_volume_survives_a_redeploy(tmp_path):
    first = plan_app(tmp_path, "/data")
    volume = Path(first.env["RAILWAY_VOLUME_MOUNT_PATH"])
    assert volume == tmp_path / "state" / "volumes" / "app" and volume.is_dir()
    assert first.env["RAILWAY_VOLUME_NAME"] == "app-volume" and first.env["LEASES"] == f"{volume}/leases"
    for place in (first.cwd, Path(first.env["HOME"]), volume):
        (place / "written.txt").write_text("by the first deployment")
    remove_homes(tmp_path / "state", {"app": first})  # the first deployment is gone
    second = plan_app(tmp_path, "/data")
    assert not (second.cwd / "written.txt").exists() and not (Path(second.env["HOME"]) / "written.txt").exists()
    assert (volume / "written.txt").read_text() == "by the first deployment"


def test_a_mount_path_under_app_is_reached_by_relative_paths(tmp_path):
    plan = plan_app(tmp_path, "/app/data")
    volume = tmp_path / "state" / "volumes" / "app"
    assert (plan.cwd / "data").resolve() == volume.resolve()
    assert not (plan.cwd / "data" / "from-image.txt").exists()  # a mount hides what the image had there
    assert plan.env["RAILWAY_VOLUME_MOUNT_PATH"] == str(volume)


COUNTER = """\
import os, pathlib, time
for place in (os.environ["RAILWAY_VOLUME_MOUNT_PATH"], ".", os.environ["HOME"]):
    path = pathlib.Path(place) / "starts"
    path.write_text(str(int(path.read_text()) + 1 if path.exists() else 1))
    print(f"starts in {place}: {path.read_text()}", flush=True)
while True:
    time.sleep(1)
"""


@pytest.mark.e2e
def test_through_the_emulator_a_redeploy_keeps_only_the_volume(tmp_path):
    repo, state = tmp_path / "repo", tmp_path / "state"
    repo.mkdir()
    (repo / "main.py").write_text(COUNTER)
    (repo / "railway.stack.toml").write_text('[project]\nname = "t"\n[services.app]\nvolume = "/data"\n')

    def emulator(*args):
        return subprocess.run([sys.executable, "-m", "emulator", "--state-dir", str(state), *args], cwd=repo,
                              env=clean_environ(), capture_output=True, text=True, timeout=120)

    def starts():
        log = (state / "logs" / "app.deploy.log").read_text() if (state / "logs" / "app.deploy.log").exists() else ""
        return [line.rsplit(": ", 1)[1] for line in log.splitlines() if "starts in" in line]

    try:
        for deploy in (1, 2):
            result = emulator("up", "--detach", "--no-deploy")
            assert result.returncode == 0, result.stdout + result.stderr
            seen = wait_until(lambda: starts() if len(starts()) >= 3 * deploy else None, timeout=60,
                              what="the service to count its start")
            assert emulator("down").returncode == 0
        # The volume counts both deployments; the app directory and HOME were new at the second.
        assert seen[3:] == ["2", "1", "1"], seen
        runtime = json.loads((state / "runtime.json").read_text())
        assert runtime["services"]["app"]["state"] == "Removed"
    finally:
        emulator("down")
        kill_service_groups(state)
