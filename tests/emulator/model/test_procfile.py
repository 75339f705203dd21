from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from emulator.model.plan import BuildError
from emulator.model.procfile import parse_procfile, read_procfile

REPO_PROCFILE = Path(__file__).resolve().parents[3] / "Procfile"
DOCUMENTED = "web: vault-ingest serve\nworker: bash start_worker.sh\n"
YAML_WORDS = {"yes", "no", "on", "off", "true", "false", "null", "y", "n"}  # YAML 1.1 reads these as non-strings


def test_the_documented_procfile_reads_the_same_as_yaml_and_as_heroku_lines(tmp_path):
    (tmp_path / "Procfile").write_text(DOCUMENTED)
    procfile = read_procfile(tmp_path)
    assert procfile.processes == {"web": "vault-ingest serve", "worker": "bash start_worker.sh"}
    assert procfile.lint == ()


@pytest.mark.skipif(not REPO_PROCFILE.exists(), reason="the repo has no Procfile yet")
def test_the_repo_procfile_reads_the_same_as_yaml_and_as_heroku_lines():
    procfile = read_procfile(REPO_PROCFILE.parent)
    assert {"web", "worker"} <= set(procfile.processes)
    assert procfile.lint == ()


def test_no_procfile_is_none(tmp_path):
    assert read_procfile(tmp_path) is None


def test_a_yaml_invalid_procfile_fails_the_build_naming_the_procfile_and_line():
    with pytest.raises(BuildError, match=r"Procfile is not valid YAML \(line 2: mapping values"):
        parse_procfile('web: vault-ingest serve\nworker: python -c "print(1)": oops\n')


def test_a_command_starting_with_a_quote_is_valid_heroku_but_not_yaml():
    with pytest.raises(BuildError, match="Procfile is not valid YAML"):
        parse_procfile('web: "./bin/server" --port $PORT\n')


def test_a_process_defined_twice_fails_like_both_builders():
    with pytest.raises(BuildError, match="line 2: process type 'web' is defined twice"):
        parse_procfile("web: a\nweb: b\n")


@pytest.mark.parametrize("text", ["- web: a\n", "just words\n"])
def test_a_procfile_that_is_not_a_mapping_fails(text):
    with pytest.raises(BuildError, match="must map process types to commands"):
        parse_procfile(text)


def test_a_comment_after_the_command_is_where_the_two_readings_disagree():
    procfile = parse_procfile("# processes\nweb: serve --port $PORT #keep\n")
    assert procfile.processes == {"web": "serve --port $PORT"}
    assert procfile.lint == ("Procfile line 2: Heroku runs `web` as 'serve --port $PORT #keep', "
                             "Railway's YAML parse gives 'serve --port $PORT'",)


def test_a_flow_style_entry_exists_only_for_yaml():
    assert parse_procfile("{web: serve}\n").lint == (
        "Procfile: `web` exists only in the YAML parse; Heroku, foreman and honcho ignore it",
    )


def test_an_empty_entry_is_an_empty_command():
    assert parse_procfile("web:\nworker: run\n").processes == {"web": "", "worker": "run"}


names = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
commands = st.from_regex(r"[a-z][a-z0-9_./-]{0,10}( [a-z0-9$_./=-]{1,10}){0,3}", fullmatch=True)


@given(st.dictionaries(names, commands, min_size=1, max_size=5))
def test_plain_commands_read_the_same_both_ways(processes):
    assume(not YAML_WORDS & set(processes))
    assume(all(command not in YAML_WORDS for command in processes.values()))
    procfile = parse_procfile("".join(f"{name}: {command}\n" for name, command in processes.items()))
    assert procfile.processes == processes
    assert procfile.lint == ()
