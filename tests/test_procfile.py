"""The Procfile as Railway's builders read it (YAML) and as Heroku-style tools read it (one regex per line)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from vault_ingest.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PROCFILE = (ROOT / "Procfile").read_text()
HEROKU_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")  # foreman's and honcho's


def heroku_commands(text: str) -> dict[str, str]:
    return {m[1]: m[2].strip() for line in text.splitlines() if (m := HEROKU_LINE.match(line))}


def test_yaml_and_heroku_lines_give_the_same_commands():
    as_yaml = yaml.safe_load(PROCFILE)
    assert as_yaml == heroku_commands(PROCFILE)
    assert set(as_yaml) == {"web", "worker"}
    assert all(isinstance(command, str) for command in as_yaml.values())


def test_every_line_is_a_process():
    lines = [line for line in PROCFILE.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) == len(heroku_commands(PROCFILE))


def test_web_runs_the_launcher():
    argv = shlex.split(heroku_commands(PROCFILE)["web"])
    assert argv[0] == "vault-ingest"
    assert build_parser().parse_args(argv[1:]).command == "serve"


def test_worker_runs_start_worker():
    argv = shlex.split(heroku_commands(PROCFILE)["worker"])
    assert argv == ["bash", "start_worker.sh"]
    assert (ROOT / "start_worker.sh").is_file()
