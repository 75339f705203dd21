"""The control channel between `python -m emulator deploy` and the running `up`: files in `<state>/deploys/`.

The client writes `<id>.json` (the request) atomically; the `up` process claims it by renaming it to
`<id>.taken`, appends progress lines to `<id>.log` and ends with `<id>.done.json` ({"code": N}). Files, not a
socket, because the state dir is already where every other command finds the running stack, and a request
left by a client that was interrupted harms nothing.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Callable, TextIO

from emulator.errors import EmulatorError
from emulator.state import StateDir, read_json, write_json

REQUESTS = "deploys"
_POLL = 0.2

Handler = Callable[[dict, Callable[[str], None]], int]  # (request, say) -> exit code


def submit(state: StateDir, request: dict, out: TextIO, alive: Callable[[], bool], timeout: float) -> int:
    """Send `request` to the running `up`, print its progress to `out` as it comes; its exit code."""
    folder = state.root / REQUESTS
    ident = f"{time.time_ns()}-{os.getpid()}"
    write_json(folder / f"{ident}.json", request)
    log, done = folder / f"{ident}.log", folder / f"{ident}.done.json"
    offset, deadline, taken = 0, time.monotonic() + timeout, False
    while True:
        finished = read_json(done)
        if log.is_file():
            with open(log, encoding="utf-8", errors="replace") as handle:
                handle.seek(offset)
                text = handle.read()
                offset = handle.tell()
            out.write(text)
            out.flush()
        if finished is not None:
            return int(finished["code"])
        taken = taken or (folder / f"{ident}.taken").exists()
        if not alive():
            (folder / f"{ident}.json").unlink(missing_ok=True)
            raise EmulatorError(f"the emulator running from {state.root} stopped before the deploy "
                                f"{'finished' if taken else 'began'}; see {state.logs / 'emulator.log'}")
        if time.monotonic() > deadline:
            raise EmulatorError(f"no answer after {timeout:g}s; the deploy may still go on: "
                                "`python -m emulator status` and `logs --build SERVICE` show it")
        time.sleep(_POLL)


class RequestWatcher:
    """Claims each request as it appears and hands it to `handler`, one at a time, in a thread of its own."""

    def __init__(self, state: StateDir, handler: Handler) -> None:
        self.folder = state.root / REQUESTS
        self._handler = handler
        self._thread: threading.Thread | None = None

    def start(self, stopped: Callable[[], bool]) -> "RequestWatcher":
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.iterdir():  # from an earlier `up`: nobody waits for those any more
            old.unlink(missing_ok=True)
        self._thread = threading.Thread(target=self._run, args=(stopped,), name="deploy-requests", daemon=True)
        self._thread.start()
        return self

    def _run(self, stopped: Callable[[], bool]) -> None:
        while not stopped():
            for request in sorted(self.folder.glob("*.json")):
                if request.name.endswith(".done.json") or stopped():
                    continue
                ident = request.name.removesuffix(".json")
                taken = self.folder / f"{ident}.taken"
                try:
                    request.rename(taken)
                except FileNotFoundError:  # withdrawn by its client
                    continue
                self._serve(ident, read_json(taken) or {})
            time.sleep(_POLL)

    def _serve(self, ident: str, request: dict) -> None:
        with open(self.folder / f"{ident}.log", "a", encoding="utf-8") as log:
            def say(line: str) -> None:
                log.write(line + "\n")
                log.flush()

            try:
                code = self._handler(request, say)
            except EmulatorError as exc:
                say(f"error: {exc}")
                code = 1
            except Exception as exc:  # noqa: BLE001 - the stack keeps running; the client hears what broke
                say(f"error: the deploy failed inside the emulator: {exc!r}")
                code = 1
        write_json(self.folder / f"{ident}.done.json", {"code": code})
