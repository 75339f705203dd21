"""The Procfile as Railway's builders read it: a YAML mapping of process type to command.

Nixpacks (serde_yaml) and Railpack (yaml.v2) parse it as YAML, not with the line regex of Heroku,
foreman and honcho. A line those tools accept can therefore fail a Railway build (an unquoted command
containing ": ", a command starting with a quote) or run something else (" #" starts a YAML comment).
The Heroku reading is kept as a lint that names every place where the two disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from emulator.model.plan import BuildError

HEROKU_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


@dataclass(frozen=True)
class Procfile:
    processes: dict[str, str]  # process type -> command, in file order
    lint: tuple[str, ...] = ()  # where Heroku's line-by-line reading differs from the YAML one


def read_procfile(repo_dir: Path) -> Procfile | None:
    path = Path(repo_dir) / "Procfile"
    return parse_procfile(path.read_text()) if path.is_file() else None


def parse_procfile(text: str) -> Procfile:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise BuildError(
            f"Procfile is not valid YAML ({where}{problem}); Railway's builders parse it as YAML. "
            'Quote the command (web: "...") or move it into a script.'
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BuildError("Procfile must map process types to commands, one per line: `web: vault-ingest serve`")
    processes = {}
    for name, command in data.items():
        if isinstance(command, (dict, list)):
            raise BuildError(f"Procfile: `{name}` must be a command on one line, not a YAML {type(command).__name__}")
        # Go's yaml.v2 decodes any scalar into the string map, null as "".
        processes[str(name)] = "" if command is None else str(command)
    return Procfile(processes, _lint(text, processes))


def _lint(text: str, processes: dict[str, str]) -> tuple[str, ...]:
    heroku: dict[str, tuple[int, str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = HEROKU_LINE.match(line)
        if match:
            heroku[match[1]] = (number, match[2])
    notes = []
    for name, (number, command) in heroku.items():
        if name not in processes:
            notes.append(f"Procfile line {number}: Heroku reads `{name}`, the YAML parse has no such process")
        elif processes[name] != command:
            notes.append(f"Procfile line {number}: Heroku runs `{name}` as {command!r}, "
                         f"Railway's YAML parse gives {processes[name]!r}")
    for name in processes:
        if name not in heroku:
            notes.append(f"Procfile: `{name}` exists only in the YAML parse; Heroku, foreman and honcho ignore it")
    return tuple(notes)


class _UniqueKeyLoader(yaml.SafeLoader):
    """Both builders reject a process type defined twice; PyYAML alone would keep the last one."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise BuildError(
                    f"Procfile line {key_node.start_mark.line + 1}: process type {key!r} is defined twice; keep one"
                )
            seen.add(key)
        return super().construct_mapping(node, deep)
