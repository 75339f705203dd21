"""The apt-get stand-in, run as a service's shell runs it. Its messages are apt's own (apt 2.x, Debian trixie:
apt-pkg/contrib/fileutl.cc "Could not open lock file %s - %s (%d: %s)", apt-pkg/deb/debsystem.cc "Unable to
acquire the dpkg frontend lock (%s), are you root?", apt-private/private-install.cc "Unable to locate package
%s"), exit code 100 for an error as apt-get's."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from emulator.runtime.apt import install_stand_in

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="the stand-in links the host's git; none here")


@pytest.fixture
def runtime(tmp_path):
    """A deployment's PATH: its own bin (the stand-in) before a runtime bin that has bash but no git."""
    runtime_bin = tmp_path / "runtime"
    runtime_bin.mkdir()
    for tool in ("bash", "sh", "env", "cat"):
        (runtime_bin / tool).symlink_to(shutil.which(tool))

    def make(as_root: bool = True, name: str = "deployment") -> dict[str, str]:
        own = install_stand_in(tmp_path / name, host_path=os.environ["PATH"], as_root=as_root)
        return {"PATH": f"{own}:{runtime_bin}", "HOME": str(tmp_path / name)}
    return make


def sh(env: dict[str, str], script: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/bash", "-c", script], env=env, capture_output=True, text=True, timeout=60,
                          input=stdin if stdin is not None else "")


def test_update_then_install_makes_git_available(runtime):
    env = runtime()
    assert sh(env, "command -v git").returncode == 1
    done = sh(env, "apt-get update && apt-get install -y git && git --version")
    assert done.returncode == 0, done.stderr
    assert "Reading package lists... Done" in done.stdout and "Setting up git ..." in done.stdout
    assert done.stdout.rstrip().splitlines()[-1].startswith("git version ")
    again = sh(env, "apt-get install -y git")
    assert again.returncode == 0 and "git is already the newest version." in again.stdout


def test_install_before_update_cannot_locate_the_package(runtime):
    """Railpack's runtime image deletes /var/lib/apt/lists, so nothing is locatable before an update."""
    failed = sh(runtime(), "apt-get install -y git")
    assert failed.returncode == 100 and "E: Unable to locate package git" in failed.stderr


def test_an_unknown_package_fails_and_installs_nothing(runtime):
    env = runtime()
    failed = sh(env, "apt-get update -qq && apt-get install -y git no-such-package")
    assert failed.returncode == 100
    assert failed.stderr.splitlines()[0] == "E: Unable to locate package no-such-package"
    assert sh(env, "command -v git").returncode == 1  # apt installs all or nothing


def test_without_yes_and_no_answer_apt_aborts(runtime):
    env = runtime()
    aborted = sh(env, "apt-get update -qq && apt-get install git")
    assert aborted.returncode == 1 and aborted.stdout.rstrip().endswith("Abort.")
    assert sh(env, "command -v git").returncode == 1
    assert sh(env, "apt-get install git", stdin="y\n").returncode == 0  # a `yes |` pipe answers it
    assert "Do you want" not in sh(env, "apt-get install -qq wget curl").stdout  # -qq implies -y


def test_not_root_gets_debians_lock_errors(runtime):
    env = runtime(as_root=False)
    update = sh(env, "apt-get update")
    assert update.returncode == 100 and update.stderr.splitlines() == [
        "E: Could not open lock file /var/lib/apt/lists/lock - open (13: Permission denied)",
        "E: Unable to lock directory /var/lib/apt/lists/"]
    install = sh(env, "apt install -y git")
    assert install.returncode == 100
    assert "are you root?" in install.stderr and "WARNING: apt does not have a stable CLI" in install.stderr


def test_each_deployment_starts_without_what_another_installed(runtime):
    first, second = runtime(name="first"), runtime(name="second")
    assert sh(first, "apt-get update -qq && apt-get install -y -qq git").returncode == 0
    assert sh(first, "command -v git").returncode == 0
    assert sh(second, "command -v git").returncode == 1


def test_the_host_is_untouched(runtime, tmp_path):
    host_dirs = [d for d in os.environ["PATH"].split(os.pathsep) if os.path.isdir(d)]
    before = {d: sorted(os.listdir(d)) for d in host_dirs}
    env = runtime()
    assert sh(env, "apt-get update -qq && apt-get install -y -qq git && apt-get remove -y git").returncode == 0
    assert {d: sorted(os.listdir(d)) for d in host_dirs} == before
    assert sh(env, "command -v git").returncode == 1  # removed from the deployment again
