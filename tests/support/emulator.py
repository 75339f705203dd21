"""What tests of the emulator share: nothing a failed test started may outlive its module."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path


def kill_service_groups(state: Path) -> None:
    """SIGKILL every service process group `runtime.json` in `state` records; call after `emulator down`,
    for whatever a failed test or a stuck stop left behind."""
    runtime = state / "runtime.json"
    if not runtime.exists():
        return
    for entry in json.loads(runtime.read_text())["services"].values():
        if entry.get("pgid"):
            try:
                os.killpg(entry["pgid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
