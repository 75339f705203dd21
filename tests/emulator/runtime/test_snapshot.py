import subprocess
from pathlib import Path

import pytest

from emulator.runtime.snapshot import SnapshotError, snapshot


def git(*args, cwd) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A user's checkout: one commit, then an edit, a new file and a staged change of its own."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", "-b", "dev", cwd=repo)
    (repo / ".gitignore").write_text(".venv/\n.emulator/\n*.log\n")
    (repo / "flows.py").write_text("committed\n")
    (repo / "staged.py").write_text("old\n")
    git("add", "-A", cwd=repo)
    git("-c", "user.name=u", "-c", "user.email=u@example.com", "commit", "-qm", "first", cwd=repo)
    (repo / "flows.py").write_text("edited, not committed\n")
    (repo / "new.py").write_text("untracked\n")
    (repo / "staged.py").write_text("staged\n")
    git("add", "staged.py", cwd=repo)
    (repo / "run.log").write_text("ignored\n")
    (repo / ".venv").mkdir()
    (repo / ".venv" / "python").write_text("ignored\n")
    return repo


def clone(url, branch, into) -> Path:
    subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", branch, url, str(into)], check=True)
    return into


def test_the_snapshot_is_the_working_tree_uncommitted_changes_included(checkout, tmp_path):
    taken = snapshot(checkout, tmp_path / "state" / "source.git")
    copy = clone(taken.url, taken.branch, tmp_path / "clone")  # as git_clone pulls it
    assert (copy / "flows.py").read_text() == "edited, not committed\n"
    assert (copy / "new.py").read_text() == "untracked\n"
    assert (copy / "staged.py").read_text() == "staged\n"
    assert not (copy / "run.log").exists() and not (copy / ".venv").exists()  # .gitignore holds


def repository_state(repo) -> dict[str, str]:
    views = {"status": ("status", "--porcelain"), "head": ("rev-parse", "HEAD"), "refs": ("for-each-ref",),
             "stash": ("stash", "list"), "index": ("ls-files", "--stage")}
    return {name: git(*args, cwd=repo) for name, args in views.items()}


def test_the_users_repository_is_not_touched(checkout, tmp_path):
    before = repository_state(checkout)
    snapshot(checkout, tmp_path / "source.git")
    assert repository_state(checkout) == before


def test_an_unchanged_tree_is_the_same_commit_and_a_change_a_new_one(checkout, tmp_path):
    first = snapshot(checkout, tmp_path / "source.git")
    again = snapshot(checkout, tmp_path / "source.git")
    assert (again.commit, again.changed) == (first.commit, False)
    (checkout / "new.py").write_text("changed\n")
    third = snapshot(checkout, tmp_path / "source.git")
    assert third.changed and third.commit != first.commit
    assert git("--git-dir", str(tmp_path / "source.git"), "rev-parse", f"{third.commit}^", cwd=tmp_path) == \
        first.commit
    head = git("rev-parse", "--short", "HEAD", cwd=checkout)
    message = git("--git-dir", str(tmp_path / "source.git"), "log", "-1", "--format=%s", cwd=tmp_path)
    assert f"at {head}, uncommitted changes included" in message


def test_a_folder_that_is_not_a_git_checkout_works_too(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "flows.py").write_text("x\n")
    taken = snapshot(folder, tmp_path / "source.git")
    assert (clone(taken.url, taken.branch, tmp_path / "clone") / "flows.py").read_text() == "x\n"


def test_a_state_dir_inside_the_checkout_must_be_ignored(checkout):
    snapshot(checkout, checkout / ".emulator" / "source.git")  # ignored: fine
    with pytest.raises(SnapshotError, match="not in .gitignore"):
        snapshot(checkout, checkout / "state" / "source.git")
