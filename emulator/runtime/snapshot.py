"""`railway up` for the local stack: the working tree as a commit in a bare repository under the state dir.

Railway builds what `railway up` uploads: the directory as it is, uncommitted changes included, minus what
.gitignore names. Here that snapshot becomes a commit on `main` in a local bare repository, which the
deployments' `git_clone` step pulls from as it would pull from GitHub.

Git works with the bare repository's object store and an index file of its own, and only reads the
checkout, so the user's repository, index, stash and branches are never touched. The checkout does not
even have to be a git repository. An unchanged tree gives the same commit again.
"""

from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from emulator.errors import SnapshotError

BRANCH = "main"
SOURCE_REPO = "source.git"  # the bare repository, under the state dir
_IDENTITY = {"GIT_AUTHOR_NAME": "Railway emulator", "GIT_AUTHOR_EMAIL": "emulator@localhost",
             "GIT_COMMITTER_NAME": "Railway emulator", "GIT_COMMITTER_EMAIL": "emulator@localhost"}


@dataclass(frozen=True)
class Snapshot:
    url: str  # file:// URL of the bare repository, what `git_clone` clones
    branch: str
    commit: str
    changed: bool  # False when the tree was the same as the last snapshot's
    tree: str = ""  # the commit's tree id: the same files give the same id


_ONE_AT_A_TIME = threading.Lock()  # `up`'s steps and a `deploy` share the index file


def snapshot(repo_dir: Path, bare_dir: Path, branch: str = BRANCH) -> Snapshot:
    with _ONE_AT_A_TIME:
        return _snapshot(repo_dir, bare_dir, branch)


def _snapshot(repo_dir: Path, bare_dir: Path, branch: str) -> Snapshot:
    repo_dir, bare_dir = Path(repo_dir).resolve(), Path(bare_dir).resolve()
    if not (bare_dir / "HEAD").is_file():
        bare_dir.parent.mkdir(parents=True, exist_ok=True)
        _git(["init", "--quiet", "--bare", f"--initial-branch={branch}", str(bare_dir)])
    env = {**os.environ, **_IDENTITY, "GIT_DIR": str(bare_dir), "GIT_WORK_TREE": str(repo_dir),
           # Kept between snapshots, so git rehashes only the files whose stat changed.
           "GIT_INDEX_FILE": str(bare_dir / "snapshot.index")}
    config = []
    user_excludes = repo_dir / ".git" / "info" / "exclude"
    if user_excludes.is_file():  # the checkout's own ignore list, which this git would not read otherwise
        config = ["-c", f"core.excludesFile={user_excludes}"]
    if bare_dir.is_relative_to(repo_dir) and not _git([*config, "check-ignore", str(bare_dir)], env, check=False):
        raise SnapshotError(f"{bare_dir} is inside {repo_dir} and not in .gitignore, so the snapshot would "
                            "contain itself; add the state dir to .gitignore or pass --state-dir elsewhere")
    _git([*config, "add", "--all", "--", "."], env)
    tree = _git(["write-tree"], env)
    ref = f"refs/heads/{branch}"
    parent = _git(["rev-parse", "--quiet", "--verify", f"{ref}^{{commit}}"], env, check=False)
    if parent and _git(["rev-parse", f"{parent}^{{tree}}"], env) == tree:
        return Snapshot(bare_dir.as_uri(), branch, parent, changed=False, tree=tree)
    message = f"Snapshot of {repo_dir}{_describe_head(repo_dir)}"
    commit = _git(["commit-tree", tree, *(["-p", parent] if parent else []), "-m", message], env)
    _git(["update-ref", ref, commit], env)
    return Snapshot(bare_dir.as_uri(), branch, commit, changed=True, tree=tree)


def _describe_head(repo_dir: Path) -> str:
    head = _git(["-C", str(repo_dir), "rev-parse", "--short", "HEAD"], check=False)
    return f" at {head}, uncommitted changes included" if head else ""


def _git(args: list[str], env: dict[str, str] | None = None, check: bool = True) -> str:
    try:
        result = subprocess.run(["git", *args], env=env, capture_output=True, text=True)
    except FileNotFoundError:
        raise SnapshotError("git is not installed; the emulator needs it to snapshot the working tree") from None
    if result.returncode != 0:
        if not check:
            return ""
        raise SnapshotError(f"git {args[0]} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip()
