"""A Railway volume mounted for one replica: the model (`emulator.model.volumes`) says where, this makes it."""

from __future__ import annotations

import shutil
from pathlib import Path

from emulator.model.volumes import APP_DIR, volume_dir


def mount(state_dir: Path, service: str, mount_path: str, app_dir: Path) -> Path:
    """Create the service's volume directory (kept if it exists) and, for a mount path under /app, its
    symlink in the replica's app directory. Returns the volume directory."""
    local = volume_dir(state_dir, service)
    local.mkdir(parents=True, exist_ok=True)
    if mount_path.startswith(APP_DIR + "/"):
        link = Path(app_dir) / mount_path[len(APP_DIR) + 1:]
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)  # the image's files at the mount path are hidden by the volume, as by a mount
        elif link.exists() or link.is_symlink():
            link.unlink()
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(local, target_is_directory=True)
    return local
