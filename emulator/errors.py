"""Every error the emulator means to report: one base, so `python -m emulator` catches exactly these.

Each message names what is wrong and how to fix it; anything else that escapes is a bug in the emulator.
"""

from __future__ import annotations


class EmulatorError(Exception):
    """A command cannot do what was asked; the message says why and what to do."""


class StackError(EmulatorError, ValueError):
    """The stack file is invalid; the message names the file, the key path and the fix."""


class BuildError(EmulatorError):
    """A service's build failed, as Railway would fail it (the message is Railway's own where it has one)."""


class SnapshotError(EmulatorError):
    """git could not snapshot the working tree."""


class SupervisorError(EmulatorError):
    """The services cannot run: another emulator holds the state dir, a port is taken, a process survived."""


class StepError(EmulatorError):
    """A step after the services are Active failed; the message says which and where to look. `record` is
    what the step found before it failed (e.g. its flow run), for `status`."""

    def __init__(self, message: str, record: dict | None = None) -> None:
        super().__init__(message)
        self.record = record or {}
