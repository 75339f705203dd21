import io
import os
from datetime import datetime

from emulator.runtime.logs import MASK, LogSink


def fixed_clock():
    return datetime(2026, 1, 2, 12, 34, 56)


def sink(tmp_path, **kwargs):
    console = io.StringIO()
    return LogSink(tmp_path, console=console, clock=fixed_clock, **kwargs), console


def test_prefix_is_honcho_style_padded_to_the_longest_name(tmp_path):
    logs, console = sink(tmp_path, colour=False)
    logs.register(["web", "postgres"])
    logs.deploy("web", "listening")
    logs.system("web Active")
    assert console.getvalue().splitlines() == [
        "12:34:56 web      | listening",
        "12:34:56 system   | web Active",
    ]


def test_colour_only_when_forced_or_on_a_tty(tmp_path):
    plain, plain_console = sink(tmp_path / "a")  # a StringIO is no TTY
    plain.deploy("web", "x")
    assert "\033[" not in plain_console.getvalue()

    coloured, coloured_console = sink(tmp_path / "b", colour=True)
    coloured.register(["web", "worker"])
    coloured.deploy("web", "x")
    coloured.deploy("worker", "y")
    web_line, worker_line = coloured_console.getvalue().splitlines()
    assert web_line.startswith("\033[") and web_line.endswith("| \033[0mx")
    assert web_line[:8] != worker_line[:8]  # each service its own colour


def test_build_and_deploy_logs_are_separate_files(tmp_path):
    logs, _ = sink(tmp_path)
    logs.build("web", "↳ Found web command in Procfile")
    logs.deploy("web", "Starting Container")
    logs.system("web Active")
    logs.close()
    assert (tmp_path / "logs" / "web.build.log").read_text() == "↳ Found web command in Procfile\n"
    assert (tmp_path / "logs" / "web.deploy.log").read_text() == "Starting Container\n"
    assert (tmp_path / "logs" / "emulator.log").read_text() == "web Active\n"
    assert logs.path("web", "deploy") == tmp_path / "logs" / "web.deploy.log"


def test_secrets_are_masked_in_console_and_files_including_url_encoded(tmp_path):
    logs, console = sink(tmp_path, colour=False)
    logs.add_secrets(["hunter2-long-secret", "p@ss/word", ""])
    logs.deploy("web", "DATABASE_URL=postgresql://postgres:hunter2-long-secret@127.0.0.1:5432/railway")
    logs.build("web", "password p%40ss%2Fword and p@ss/word")
    logs.close()
    written = console.getvalue() + "".join(p.read_text() for p in (tmp_path / "logs").iterdir())
    assert "hunter2" not in written and "p@ss" not in written and "p%40ss" not in written
    assert f"postgres:{MASK}@127.0.0.1" in written
    assert f"password {MASK} and {MASK}" in written


def test_multi_line_text_becomes_prefixed_lines(tmp_path):
    logs, console = sink(tmp_path, colour=False)
    logs.deploy("web", "one\ntwo")
    logs.deploy("web", "")
    assert console.getvalue().splitlines() == ["12:34:56 web    | one", "12:34:56 web    | two", "12:34:56 web    | "]


def test_a_console_whose_reader_is_gone_is_dropped_and_the_files_keep_every_line(tmp_path):
    """`make emulate | tee` after Ctrl-C: tee is gone while the services still have to stop."""
    read, write = os.pipe()
    console = os.fdopen(write, "w")
    logs = LogSink(tmp_path, console=console, colour=False)
    logs.system("before")
    os.close(read)
    logs.system("stopping all services")  # EPIPE on the console: no exception
    logs.deploy("web", "Stopping Container")
    print("a later write", file=console, flush=True)  # the interpreter's last flush, say
    assert os.readlink(f"/proc/self/fd/{write}") == os.devnull
    console.close()
    logs.close()
    assert (tmp_path / "logs" / "emulator.log").read_text() == (
        "before\nstopping all services\nthe console stopped taking lines (Broken pipe); "
        "they go on to the log files only\n")
    assert (tmp_path / "logs" / "web.deploy.log").read_text() == "Stopping Container\n"
