"""Progress of a CLI run on a terminal: one line redrawn in place, or nothing when not a TTY."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class TerminalProgress:
    def __init__(self, label: str, stream: TextIO = sys.stderr) -> None:
        self.label = label
        self.stream = stream
        self.started = time.monotonic()
        self.enabled = stream.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total == 0:
            return
        elapsed = time.monotonic() - self.started
        eta = elapsed / done * (total - done) if done else 0
        width = 30
        filled = width * done // total
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total}  eta {eta:4.0f}s")
        if done == total:
            self.stream.write("\n")
        self.stream.flush()
