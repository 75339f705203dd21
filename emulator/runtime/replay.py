"""A local stand-in for the Hyperliquid API: answers from recorded cassettes, enforces the weight budget.

Serves `GET /Mainnet/vaults` (the stats list) and `POST /info` from vcrpy cassettes (`*.yaml`) or, in a
folder without any, from JSON files, so the worker's flows and the benchmarks run offline. Like the real
API it counts request weight per client address and answers 429 past the budget: Hyperliquid documents
"an aggregated weight limit of 1200 per minute" per IP, with the weights of hyperliquid.md §4 (vaultDetails
20; docs page "Rate limits and user limits", mirrored in dzmbs/hyperliquid-docs @ 24c1248cc18e
docs/for-developers/api/rate-limits-and-user-limits.md), and not whether its minute slides, so the replay takes
the stricter reading: no more than the budget in any window of that length. Faults can be switched on to exercise
retries.

`GET /_replay/stats` (a path no recording can have) reports what the replay counted: requests, 429s, the weight
it admitted and when (`arrivals`, [seconds on its monotonic clock, weight]; `asked`, [the same seconds, the request
body as canonical JSON]) and its budget, so a test can judge the clients by the server's count instead of their own.

A folder of JSON: `<path>.json` answers `GET /<path>` (e.g. `Mainnet/vaults.json`), and each file under
`info/` holds one exchange, `{"request": {"type": "vaultDetails", ...}, "response": ...}`, for `POST /info`.

`python -m emulator.runtime.replay FOLDER PORT` runs it as the emulator's replay service. Its service variables:
REPLAY_DIR (the folder; default `cassettes/` in the repo), REPLAY_LATENCY_SECONDS, REPLAY_ERROR_EVERY,
REPLAY_MALFORMED_EVERY, REPLAY_WEIGHT_PER_MINUTE (default 1200; 0 enforces no budget) and
REPLAY_WINDOW_SECONDS (default 60: the budget is REPLAY_WEIGHT_PER_MINUTE x window / 60 in any window this
long; a shorter window is stricter, so tests of seconds can show that clients share the budget).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import yaml

INFO_WEIGHTS = {"userRole": 60, "l2Book": 2, "allMids": 2, "clearinghouseState": 2, "orderStatus": 2,
                "spotClearinghouseState": 2, "exchangeStatus": 2}
DEFAULT_WEIGHT = 20
REJECTED = b"Failed to deserialize the JSON body into the target type"
STATS_PATH = "/_replay/stats"


@dataclass
class Recorded:
    status: int
    headers: dict[str, str]
    body: bytes


def load_cassettes(folder: Path) -> dict[tuple[str, str, str], Recorded]:
    """(method, path, canonical body) -> the last successful recorded answer (429s are ours to make)."""
    answers: dict[tuple[str, str, str], Recorded] = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        for item in (yaml.safe_load(path.read_text()) or {}).get("interactions", []):
            req, resp = item["request"], item["response"]
            status = resp["status"]["code"]
            key = (req["method"].upper(), urlsplit(req["uri"]).path, _canonical(req.get("body")))
            if status == 429 and key in answers:
                continue
            body = resp["body"].get("string", "")
            headers = {k: v[0] if isinstance(v, list) else v for k, v in (resp.get("headers") or {}).items()}
            answers[key] = Recorded(status, headers, body.encode() if isinstance(body, str) else body)
    return answers


def load_json_folder(folder: Path) -> dict[tuple[str, str, str], Recorded]:
    answers: dict[tuple[str, str, str], Recorded] = {}
    folder = Path(folder)
    for path in sorted(folder.rglob("*.json")):
        relative = path.relative_to(folder)
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if relative.parts[0] == "info":
            if not isinstance(data, dict) or not isinstance(data.get("request"), dict) or "response" not in data:
                raise ValueError(f'{path}: a file under info/ holds {{"request": {{"type": ...}}, "response": ...}}')
            key = ("POST", "/info", _canonical(json.dumps(data["request"])))
            answers[key] = Recorded(200, {}, json.dumps(data["response"]).encode())
        else:
            answers[("GET", "/" + relative.with_suffix("").as_posix(), "")] = Recorded(200, {}, path.read_bytes())
    return answers


def _canonical(body) -> str:
    if not body:
        return ""
    text = body.decode() if isinstance(body, bytes) else str(body)
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return text


@dataclass
class Budget:
    """Weight per client in a sliding window, counted at arrival like a server does. A limit of 0 admits all."""

    limit: int = 1200
    window: float = 60.0
    clock: callable = time.monotonic
    _log: dict[str, deque] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def per_minute(cls, weight_per_minute: int, window: float = 60.0, **kwargs) -> "Budget":
        """The documented rate, counted over any `window` seconds."""
        return cls(round(weight_per_minute * window / 60.0), window, **kwargs)

    def admit(self, client: str, weight: int) -> bool:
        if not self.limit:
            return True
        with self._lock:
            now = self.clock()
            log = self._log.setdefault(client, deque())
            while log and log[0][0] <= now - self.window:
                log.popleft()
            if sum(w for _, w in log) + weight > self.limit:
                return False
            log.append((now, weight))
            return True


@dataclass
class Faults:
    """Switched on per server: added latency, and every Nth info request answered with 500 or garbage."""

    latency: float = 0.0
    error_every: int = 0
    malformed_every: int = 0
    _count: int = 0

    def next(self) -> str | None:
        self._count += 1
        if self.error_every and self._count % self.error_every == 0:
            return "error"
        if self.malformed_every and self._count % self.malformed_every == 0:
            return "malformed"
        return None


class ReplayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, cassettes: Path, port: int = 0, *, budget: Budget | None = None,
                 faults: Faults | None = None, host: str = "127.0.0.1") -> None:
        self.answers = load_cassettes(cassettes) or load_json_folder(cassettes)
        self.budget = budget or Budget()
        self.faults = faults or Faults()
        self.stats = {"requests": 0, "throttled": 0, "admitted_weight": 0}
        self.arrivals: list[tuple[float, int]] = []
        self.asked: list[tuple[float, str]] = []
        super().__init__((host, port), _Handler)

    def report(self) -> dict:
        """What `GET /_replay/stats` answers. A stand-in budget (the benchmarks' judges) may lack limit and window."""
        return {**self.stats, "limit": getattr(self.budget, "limit", None),
                "window": getattr(self.budget, "window", None), "arrivals": list(self.arrivals),
                "asked": list(self.asked)}

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "ReplayServer":
        threading.Thread(target=self.serve_forever, daemon=True, name="hyperliquid-replay").start()
        return self


class _Handler(BaseHTTPRequestHandler):
    server: ReplayServer

    def log_message(self, fmt, *args):  # quiet: the emulator prints its own access lines
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json", headers=None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _replay(self, key) -> None:
        recorded = self.server.answers.get(key)
        if recorded is None and key[0] == "POST" and '"vaultDetails"' in key[2]:
            self._send(200, b"null")  # what the real API answers for a vault it does not know
            return
        if recorded is None:
            self._send(404, f"no recording for {key[0]} {key[1]} {key[2][:200]}".encode(), "text/plain")
            return
        headers = {k: v for k, v in recorded.headers.items()
                   if k.lower() in ("last-modified", "retry-after")}
        ctype = recorded.headers.get("Content-Type") or recorded.headers.get("content-type") or "application/json"
        self._send(recorded.status, recorded.body, ctype, headers)

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == STATS_PATH:
            self._send(200, json.dumps(self.server.report()).encode())
            return
        self.server.stats["requests"] += 1
        self._replay(("GET", path, ""))

    def do_POST(self) -> None:
        server = self.server
        server.stats["requests"] += 1
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            kind = json.loads(raw).get("type")
        except (ValueError, AttributeError):
            self._send(422, REJECTED, "text/plain")
            return
        weight = INFO_WEIGHTS.get(kind, DEFAULT_WEIGHT)
        if not server.budget.admit(self.client_address[0], weight):
            server.stats["throttled"] += 1
            self._send(429, b"null")
            return
        server.stats["admitted_weight"] += weight
        now = server.budget.clock()
        server.arrivals.append((now, weight))
        server.asked.append((now, _canonical(raw)))
        if server.faults.latency:
            time.sleep(server.faults.latency)
        fault = server.faults.next()
        if fault == "error":
            self._send(500, b"Internal Server Error", "text/plain")
        elif fault == "malformed":
            self._send(200, b"<html>upstream error</html>", "text/html")
        else:
            self._replay(("POST", urlsplit(self.path).path, _canonical(raw)))


def _env_number(name: str, kind: type, default):
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = kind(raw)
        if value < 0:
            raise ValueError
    except ValueError:
        raise SystemExit(f"replay: {name}={raw!r} must be a number >= 0") from None
    return value


def main(argv: list[str]) -> None:
    folder, port = Path(argv[0]), int(argv[1])
    if not folder.is_dir():
        raise SystemExit(f"replay: {folder} is not a folder; set REPLAY_DIR to a folder of cassettes or JSON")
    faults = Faults(latency=_env_number("REPLAY_LATENCY_SECONDS", float, 0.0),
                    error_every=_env_number("REPLAY_ERROR_EVERY", int, 0),
                    malformed_every=_env_number("REPLAY_MALFORMED_EVERY", int, 0))
    window = _env_number("REPLAY_WINDOW_SECONDS", float, 60.0)
    if not window:
        raise SystemExit("replay: REPLAY_WINDOW_SECONDS must be more than 0")
    budget = Budget.per_minute(_env_number("REPLAY_WEIGHT_PER_MINUTE", int, 1200), window)
    server = ReplayServer(folder, port, budget=budget, faults=faults)
    print(f"Hyperliquid replay on {server.url}: {len(server.answers)} recorded answers from {folder}, "
          f"budget {budget.limit or 'unlimited'} weight per {budget.window:g}s, faults: latency {faults.latency:g}s, "
          f"500 every {faults.error_every or 'never'}, malformed every {faults.malformed_every or 'never'}",
          flush=True)
    # A stop is SIGTERM to the main process, and a process without a handler keeps running until SIGKILL at
    # the end of the draining period; the replay holds nothing worth draining, so it goes at once.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
