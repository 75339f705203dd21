"""Where `secret()` values live: files under the state dir, written the first time a stack is planned.

The model (`emulator.model.variables`) only asks a SecretSource; this one is the runtime's, the one place
they are stored.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from emulator.model.variables import SecretSource
from emulator.state import StateDir


def secret_store(state_dir: Path) -> SecretSource:
    """`secret()` values kept under `state_dir`, so a password stays the same across runs, and changes
    only when the state (and with it the Postgres volume) is wiped."""

    def secret(namespace: str, variable: str, length: int, alphabet: str) -> str:
        path = StateDir(state_dir).secrets / f"{namespace}.{variable}"
        if path.is_file():
            return path.read_text()
        path.parent.mkdir(parents=True, exist_ok=True)
        value = "".join(secrets.choice(alphabet) for _ in range(length))
        path.write_text(value)
        path.chmod(0o600)
        return value

    return secret
