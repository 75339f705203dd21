"""Railway's Watch Paths: which changed files make a push redeploy a service.

Railway (railwayapp/docs c2a634f, content/docs/builds/build-configuration.md, "Configure watch paths"):
watch paths are "gitignore-style patterns that can be used to trigger a new deployment based on what file
paths have changed ... When specified, any changes that don't match the patterns will skip creating a new
deployment. Multiple patterns can be combined, one per line." Patterns "still operate from `/`" whatever the
service's root directory. And (content/docs/deployments/github-autodeploys.md) without Watch Paths every
push to the connected branch redeploys every service linked to the repository.

So: no patterns, every change redeploys; otherwise a change redeploys when at least one changed file
matches by gitignore's rules (git-scm.com/docs/gitignore, "Pattern format": the last matching pattern
wins, `!` negates, a leading `/` anchors at the repository root, `**` spans directories), which
pathspec's GitIgnoreSpec implements.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import pathspec

from emulator.errors import StackError


def compile_watch_paths(patterns: Sequence[str], where: str = "watch_paths") -> pathspec.GitIgnoreSpec:
    """The patterns as one gitignore spec; a pattern that is not a non-empty string is a StackError."""
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern.strip():
            raise StackError(f"{where}: {pattern!r} must be a gitignore-style pattern such as \"/src/**/*.py\"")
    try:
        return pathspec.GitIgnoreSpec.from_lines(patterns)
    except (ValueError, TypeError) as exc:  # pathspec's own complaint names the pattern
        raise StackError(f"{where}: {exc}") from None


def triggering(patterns: Sequence[str], changed: Iterable[str]) -> list[str]:
    """The changed files (repository-relative, `/`-separated) that trigger a deployment under `patterns`:
    all of them when there are none, as on Railway."""
    files = [path.lstrip("/") for path in changed]
    if not patterns:
        return files
    spec = compile_watch_paths(patterns)
    return [path for path in files if spec.match_file(path)]
