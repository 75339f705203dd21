"""Railway volumes, and the ephemeral filesystem around them.

On Railway a deployment's filesystem is new at every deploy: only a volume, one per service mounted at a
path the user picks, survives. Railway's docs (railwayapp/docs c2a634f1, 2026-08-21): `content/docs/
volumes/reference.md` (one volume per service, no replicas with a volume), `content/docs/volumes.md`
("Provided variables": `RAILWAY_VOLUME_NAME`, `RAILWAY_VOLUME_MOUNT_PATH`; "Relative paths": the app is in
/app, so `./data` persists with a mount at `/app/data`; "not mounted as overlays": the image's files at the
mount path are hidden; mounted at start, never during the build). The emulator does the same:
each replica gets a fresh app directory and HOME per deployment (so `PREFECT_HOME`, `~/.prefect` by
default, starts empty too), and a service's volume is the directory `<state dir>/volumes/<service slug>`,
which survives redeploys, `down` and `up`; only `reset` deletes it.

A process cannot be given a private `/data` without a container, so the mount path is mapped instead:

- every variable value that names the mount path (`/data`, `/data/leases`, `sqlite:////data/db`) is
  rewritten to the local directory, `RAILWAY_VOLUME_MOUNT_PATH` included, so code that builds its paths
  from variables finds the volume;
- a mount path inside the app directory (Railpack's and Nixpacks' `/app`, e.g. `/app/data`) becomes a
  symlink in the replica's app directory, so relative paths from the working directory reach it too.

A path written into the code itself (`open("/data/x")`) is not rewritten: locally it is the host's /data.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

from emulator.model.variables import slug
from emulator.state import StateDir

APP_DIR = "/app"  # the builders' WORKDIR


def volume_dir(state_dir: Path, service: str) -> Path:
    return StateDir(state_dir).volumes / slug(service)


def volume_variables(service: str, mount_path: str) -> dict[str, str]:
    """What Railway sets on a service with a volume."""
    return {"RAILWAY_VOLUME_NAME": f"{slug(service)}-volume", "RAILWAY_VOLUME_MOUNT_PATH": mount_path}


def map_mount_path(env: Mapping[str, str], mount_path: str, local: Path) -> dict[str, str]:
    """`env` with the mount path, wherever a value names it as a path, replaced by the local directory."""
    pattern = re.compile(rf"(?<![\w.-]){re.escape(mount_path)}(?=/|$|[^\w.-])")
    return {key: pattern.sub(lambda _: str(local), value) for key, value in env.items()}
