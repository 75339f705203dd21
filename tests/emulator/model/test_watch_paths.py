"""Watch Paths against the examples in Railway's docs (railwayapp/docs c2a634f,
content/docs/builds/build-configuration.md, "Configure watch paths") and gitignore's own rules."""

import pytest

from emulator.errors import StackError
from emulator.model.stack import load_stack
from emulator.model.watch_paths import triggering
from tests.emulator.model.test_stack import SHIPPED


@pytest.mark.parametrize("patterns, changed, expected", [
    # "Match all TypeScript files under src/"
    (["/src/**/*.ts"], ["src/a.ts", "src/deep/b.ts", "lib/src/c.ts", "src/d.js"], ["src/a.ts", "src/deep/b.ts"]),
    # "Match Go files in the root, but not in subdirectories"
    (["/*.go"], ["main.go", "cmd/main.go"], ["main.go"]),
    # "Ignore all markdown files" -- as the docs write it: everything, then the root's *.md negated
    (["**", "!/*.md"], ["README.md", "flows/sync.py"], ["flows/sync.py"]),
    (["**", "!/*.md"], ["README.md", "CHANGELOG.md"], []),
    # gitignore: the last matching pattern wins, so a later pattern re-includes
    (["!/docs/**", "/docs/keep.md"], ["docs/keep.md", "docs/other.md"], ["docs/keep.md"]),
    # gitignore: a name without a slash matches at any depth; a directory matches what is under it
    (["uv.lock", "vault_ingest/"], ["uv.lock", "sub/uv.lock", "vault_ingest/flows/a.py", "tests/x.py"],
     ["uv.lock", "sub/uv.lock", "vault_ingest/flows/a.py"]),
])
def test_railway_examples(patterns, changed, expected):
    assert triggering(patterns, changed) == expected


def test_no_watch_paths_means_every_change_redeploys():
    """Railway redeploys every service linked to the repo on a push unless Watch Paths say otherwise."""
    assert triggering([], ["README.md", "a/b.py"]) == ["README.md", "a/b.py"]


def test_leading_slash_in_changed_paths_is_ignored():
    assert triggering(["/*.go"], ["/main.go"]) == ["main.go"]


def _stack(tmp_path, body: str):
    path = tmp_path / "railway.stack.toml"
    path.write_text('[project]\nname = "p"\n[services.worker]\nsource = "repo"\n' + body)
    return path


def test_stack_file_reads_watch_paths(tmp_path):
    stack = load_stack(_stack(tmp_path, 'watch_paths = ["/uv.lock", "/start_worker.sh"]\n'))
    assert stack.services["worker"].watch_paths == ("/uv.lock", "/start_worker.sh")


@pytest.mark.parametrize("value, words", [
    ('"/uv.lock"', "must be a list"),
    ('["/uv.lock", ""]', "gitignore-style pattern"),
    ("[1]", "gitignore-style pattern"),
])
def test_bad_watch_paths_name_the_key_and_the_fix(tmp_path, value, words):
    with pytest.raises(StackError, match="watch_paths") as caught:
        load_stack(_stack(tmp_path, f"watch_paths = {value}\n"))
    assert words in str(caught.value)


def test_watch_paths_only_on_repo_services(tmp_path):
    path = tmp_path / "railway.stack.toml"
    path.write_text('[project]\nname = "p"\n[services.Postgres]\nsource = "postgres"\nwatch_paths = ["**"]\n')
    with pytest.raises(StackError, match="watch_paths"):
        load_stack(path)


def test_the_shipped_workers_watch_paths_skip_flow_code_and_catch_its_dependencies():
    """Flow code reaches runs through git_clone; the lock, the start script, `vault-ingest worker` and the image
    need a new worker."""
    worker = load_stack(SHIPPED).services["worker"]
    assert triggering(worker.watch_paths, ["vault_ingest/flows.py", "vault_ingest/ingest.py", "README.md",
                                           "docs/railway.md", "tests/test_flows.py"]) == []
    for file in ("uv.lock", "pyproject.toml", "start_worker.sh", "vault_ingest/worker.py", "railpack.json",
                 "Dockerfile.worker"):
        assert triggering(worker.watch_paths, [file]) == [file]
