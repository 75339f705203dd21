"""Where every line goes: a honcho-style console plus Railway's separate build and deploy logs per service.

Console: `HH:MM:SS web      | line`, the prefix coloured on a TTY or when forced. Files, without prefix:
`<state>/logs/<service>.build.log`, `<service>.deploy.log`, and `emulator.log` for the emulator's own
lines. Secret values are masked in every line before it reaches the console or a file. A console whose
reader has gone (`| tee` killed by the same Ctrl-C) is dropped; the files keep every line.
"""

from __future__ import annotations

import os
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Iterable, TextIO
from urllib.parse import quote

from emulator.state import StateDir

MASK = "*****"
SYSTEM = "system"
# honcho's palette: cyan, yellow, green, magenta, red, blue, then the bright variants.
_COLOURS = ("36", "33", "32", "35", "31", "34", "1;36", "1;33", "1;32", "1;35", "1;31", "1;34")


class LogSink:
    def __init__(self, state_dir: Path | None, *, console: TextIO | None = sys.stdout,
                 colour: bool | None = None, clock=datetime.now) -> None:
        self.log_dir = StateDir(state_dir).logs if state_dir is not None else None
        self._console = console
        self._colour = _wants_colour(console) if colour is None else colour
        self._clock = clock
        self._lock = threading.Lock()
        self._secrets: list[str] = []
        self._names: list[str] = [SYSTEM]
        self._width = len(SYSTEM)
        self._files: dict[str, TextIO] = {}

    def register(self, names: Iterable[str]) -> None:
        """Fix each service's colour and pad prefixes to the longest name, as honcho does."""
        with self._lock:
            for name in names:
                if name not in self._names:
                    self._names.append(name)
            self._width = max(len(n) for n in self._names)

    def add_secrets(self, values: Iterable[str]) -> None:
        with self._lock:
            found = set(self._secrets)
            for value in values:
                if value:
                    # A password also appears percent-encoded inside URLs such as DATABASE_URL.
                    found.update({value, quote(value, safe="")})
            self._secrets = sorted(found, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def build(self, service: str, text: str) -> None:
        self._emit(service, f"{service}.build.log", text)

    def deploy(self, service: str, text: str) -> None:
        self._emit(service, f"{service}.deploy.log", text)

    def system(self, text: str) -> None:
        self._emit(SYSTEM, "emulator.log", text)

    def path(self, service: str, stream: str) -> Path | None:
        """The file holding `service`'s "build" or "deploy" log."""
        return self.log_dir / f"{service}.{stream}.log" if self.log_dir else None

    def close(self) -> None:
        with self._lock:
            for handle in self._files.values():
                handle.close()
            self._files.clear()

    def _emit(self, name: str, filename: str, text: str) -> None:
        with self._lock:
            lines = self.mask(text).splitlines() or [""]
            handle = self._file(filename)
            if handle:
                handle.write("".join(line + "\n" for line in lines))
            if self._console:
                try:
                    self._console.write("".join(self._prefix(name) + line + "\n" for line in lines))
                    self._console.flush()
                except (OSError, ValueError) as exc:  # ValueError: a console closed under us
                    self._lose_console(exc)

    def _lose_console(self, exc: Exception) -> None:
        """The console's reader is gone: `make emulate | tee` after Ctrl-C, which kills tee at once while
        the services still have to stop, or a closed terminal. Lines go on to the files only, and the
        console's descriptor (and stdout/stderr where they are the same pipe) now points at /dev/null, so
        that no later write fails there either: a print, a traceback, the interpreter's last flush."""
        console, self._console = self._console, None
        try:
            broken = os.fstat(console.fileno())
        except (OSError, ValueError, AttributeError):
            broken = None
        if broken is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            for fd in {console.fileno(), 1, 2}:
                if _same_file(fd, broken):
                    os.dup2(devnull, fd)
            os.close(devnull)
        handle = self._file("emulator.log")
        if handle:
            reason = getattr(exc, "strerror", None) or str(exc)
            handle.write(f"the console stopped taking lines ({reason}); they go on to the log files only\n")

    def _file(self, filename: str) -> TextIO | None:
        if self.log_dir is None:
            return None
        if filename not in self._files:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._files[filename] = open(self.log_dir / filename, "a", encoding="utf-8", buffering=1)
        return self._files[filename]

    def _prefix(self, name: str) -> str:
        prefix = f"{self._clock():%H:%M:%S} {name.ljust(self._width)} | "
        if not self._colour:
            return prefix
        if name not in self._names:
            self._names.append(name)
        colour = _COLOURS[self._names.index(name) % len(_COLOURS)]
        return f"\033[{colour}m{prefix}\033[0m"


def _same_file(fd: int, stat: os.stat_result) -> bool:
    try:
        mine = os.fstat(fd)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (stat.st_dev, stat.st_ino)


def _wants_colour(console: TextIO | None) -> bool:
    if console is None or os.environ.get("NO_COLOR"):
        return False
    return bool(getattr(console, "isatty", lambda: False)())
