"""`apt-get` and `apt` inside a service's runtime: installing at start time, for this deployment only.

Railpack's runtime image (debian:trixie-slim) and Nixpacks' (Ubuntu) run the start command as root and keep
apt, so a start script's `apt-get update && apt-get install -y git` works on Railway, again at every
deployment because a container's filesystem is not kept (railway.md §4.5). The emulator never lets a service
install onto the host (NEVER_ON_PATH in emulator/model/planner.py hides every package manager), so it puts this
stand-in in the deployment's own bin directory, which is on the deployment's PATH and goes with its HOME:

- `apt-get update` prints the lines apt prints and marks the lists fetched. Railpack's runtime image deletes
  /var/lib/apt/lists (railwayapp/railpack b5e8058 images/debian/runtime/Dockerfile: `rm -rf
  /var/lib/apt/lists/*`, and its deploy apt step keeps the lists in a build cache, core/generate/
  cache_context.go), so an install before any update fails there with "Unable to locate package", as here.
- `apt-get install PKG...` of a package the emulator knows (PACKAGES) links the host's executables of that
  tool into the deployment's bin directory; an unknown one fails as apt-get does, installing nothing.
- Not root (a Dockerfile's `USER`): apt-get's lock errors, exit 100, as on Debian.
- Without `-y` (or `-qq`, which implies it) apt asks before installing; with no answer on stdin it aborts.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import sys
from pathlib import Path

# Debian package -> the executables it puts on PATH (a subset; the host's copies stand in for them).
PACKAGES: dict[str, tuple[str, ...]] = {
    "git": ("git", "git-*"),
    "curl": ("curl",),
    "wget": ("wget",),
    "openssh-client": ("ssh", "ssh-*", "scp", "sftp"),
    "ca-certificates": (),  # the runtime already trusts the public roots (and the edge's certificate)
}
COMMANDS = ("apt-get", "apt")
_CONFIG = "apt.json"
_UPDATED = "lists-updated"
_OPTIONS_WITH_VALUE = ("-o", "-c", "-t", "--option", "--config-file", "--target-release", "--default-release")
_APT_WARNING = "\nWARNING: apt does not have a stable CLI interface. Use with caution in scripts.\n"
_UPDATE_LINES = (
    "Get:1 http://deb.debian.org/debian trixie InRelease [140 kB]",
    "Get:2 http://deb.debian.org/debian trixie-updates InRelease [47.3 kB]",
    "Get:3 http://deb.debian.org/debian-security trixie-security InRelease [43.4 kB]",
    "Get:4 http://deb.debian.org/debian trixie/main amd64 Packages [9670 kB]",
    "Fetched 9901 kB in 1s (9012 kB/s)",
)
_NOT_ROOT = {
    "update": ("E: Could not open lock file /var/lib/apt/lists/lock - open (13: Permission denied)",
               "E: Unable to lock directory /var/lib/apt/lists/"),
    "install": ("E: Could not open lock file /var/lib/dpkg/lock-frontend - open (13: Permission denied)",
                "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), are you root?"),
}


def install_stand_in(root: Path, *, host_path: str, as_root: bool, python: str = sys.executable) -> Path:
    """Make `root`/bin, the deployment's own bin directory, holding `apt-get` and `apt`; returns it.
    `host_path` is where installed tools come from; `as_root` whether the image runs its command as root."""
    bin_dir = Path(root) / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (Path(root) / _CONFIG).write_text(json.dumps({"host_path": host_path, "root": as_root}))
    for command in COMMANDS:
        script = bin_dir / command
        # -I: the service's PYTHON* variables and working directory must not change which emulator runs.
        script.write_text(f"#!/bin/sh\nexec {shlex.quote(python)} -I -m emulator.runtime.apt {command} "
                          f'{shlex.quote(str(root))} "$@"\n')
        script.chmod(0o755)
    return bin_dir


def main(argv: list[str]) -> int:
    command, root, args = argv[0], Path(argv[1]), argv[2:]
    config = json.loads((root / _CONFIG).read_text())
    if command == "apt" and not sys.stdout.isatty():
        print(_APT_WARNING, file=sys.stderr)
    words, options = _parse(args)
    if not words:
        print(f"{command}: a package manager (the emulator's stand-in); usage: {command} update | install PKG...")
        return 0
    operation, packages = words[0], words[1:]
    quiet = options.count("-q") + 2 * options.count("-qq") + sum(o.startswith(("-q=", "--quiet")) for o in options)
    if operation in ("update", "install", "remove", "purge", "upgrade", "dist-upgrade", "full-upgrade",
                     "autoremove", "clean") and not config["root"]:
        for line in _NOT_ROOT["update" if operation in ("update", "clean") else "install"]:
            print(line, file=sys.stderr)
        return 100
    if operation == "update":
        if quiet < 2:
            print("\n".join(_UPDATE_LINES))
            print("Reading package lists..." + ("" if quiet else " Done"))
        (root / _UPDATED).touch()
        return 0
    if operation == "install":
        yes = bool({"-y", "--yes", "--assume-yes"} & set(options)) or quiet >= 2
        return _install(root, config["host_path"], [p.split("=")[0] for p in packages], yes, quiet)
    if operation in ("remove", "purge"):
        bin_dir = root / "bin"
        for package in packages:
            for entry in list(bin_dir.iterdir()):
                if entry.is_symlink() and any(fnmatch.fnmatchcase(entry.name, p) for p in PACKAGES.get(package, ())):
                    entry.unlink()
        return 0
    if operation in ("upgrade", "dist-upgrade", "full-upgrade", "autoremove", "clean"):
        if quiet < 2:
            print("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.")
        return 0
    print(f"E: Invalid operation {operation}", file=sys.stderr)
    return 100


def _parse(args: list[str]) -> tuple[list[str], list[str]]:
    words, options, skip = [], [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in _OPTIONS_WITH_VALUE:
            skip = True
        elif arg.startswith("-"):
            options.append(arg)
        else:
            words.append(arg)
    return words, options


def _install(root: Path, host_path: str, packages: list[str], yes: bool, quiet: int) -> int:
    if quiet < 2:
        print("Reading package lists...\nBuilding dependency tree...\nReading state information...")
    if not packages:
        print("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.")
        return 0
    updated = (root / _UPDATED).exists()
    unknown = [p for p in packages if not updated or p not in PACKAGES]
    if unknown:
        for package in unknown:
            print(f"E: Unable to locate package {package}", file=sys.stderr)
        if updated:
            print(f"(emulator: its apt-get knows only {', '.join(PACKAGES)}; the rest of Debian is not "
                  "modelled)", file=sys.stderr)
        return 100
    bin_dir = root / "bin"
    present = os.environ.get("PATH", "")
    wanted, found = [], {}
    for package in packages:
        patterns = PACKAGES[package]
        if patterns and _which(patterns[0], present):
            print(f"{package} is already the newest version.")
            continue
        executables = _host_executables(host_path, patterns)
        if patterns and patterns[0] not in executables:
            print(f"E: emulator: this machine has no `{patterns[0]}`, so the stand-in apt-get cannot install "
                  f"{package} into the service; install it on this machine", file=sys.stderr)
            return 100
        wanted.append(package)
        found.update(executables)
    if not wanted:
        print("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.")
        return 0
    if quiet < 2:
        print(f"The following NEW packages will be installed:\n  {' '.join(wanted)}")
        print(f"0 upgraded, {len(wanted)} newly installed, 0 to remove and 0 not upgraded.")
    if not yes:
        print("Do you want to continue? [Y/n] ", end="", flush=True)
        answer = sys.stdin.readline()
        if not answer or answer.strip().lower() not in ("", "y", "yes"):
            print("Abort.")
            return 1
    for name, target in found.items():
        link = bin_dir / name
        if not link.exists():
            link.symlink_to(target)
    for package in wanted:
        if quiet < 2:
            print(f"Setting up {package} ...")
    return 0


def _host_executables(host_path: str, patterns: tuple[str, ...]) -> dict[str, str]:
    """name -> path of the host's executables matching `patterns`, first directory on `host_path` winning;
    never a virtualenv's (as the planner's runtime bin directory)."""
    found: dict[str, str] = {}
    for directory in host_path.split(os.pathsep):
        if not os.path.isabs(directory) or not os.path.isdir(directory) \
                or os.path.isfile(os.path.join(directory, os.pardir, "pyvenv.cfg")):
            continue
        for entry in os.scandir(directory):
            if entry.name not in found and any(fnmatch.fnmatchcase(entry.name, p) for p in patterns) \
                    and entry.is_file() and os.access(entry.path, os.X_OK):
                found[entry.name] = entry.path
    return found


def _which(name: str, path: str) -> bool:
    return any(os.access(os.path.join(d, name), os.X_OK) for d in path.split(os.pathsep) if d)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
