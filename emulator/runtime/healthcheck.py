"""Railway's deploy-time healthcheck: poll `$PORT` + path until HTTP 200 or the retry window closes.

It runs once per deployment (there is no ongoing monitoring) and prints Railway's own lines, which land
in the build log, as on Railway. Railway retries at growing intervals; locally they are shorter and stop
growing at 1 s: every service that references this one waits for it to be Active, and a 2 s cap added up
to 2 s to each deploy.
"""

from __future__ import annotations

import time
from typing import Callable

import httpx

HEALTHCHECK_HOST = "healthcheck.railway.app"
_BODY_CHARS = 200

Probe = Callable[[str], tuple[int | None, str]]


def go_duration(seconds: float) -> str:
    """Seconds as Go's time.Duration prints them once rounded down to the second: 5m0s, 4m49s, 29s."""
    if seconds < 1:
        return f"{int(seconds * 1000)}ms" if seconds > 0 else "0s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def http_probe(url: str, timeout: float = 5.0) -> tuple[int | None, str]:
    """(status, body) of one GET with Railway's Host header; (None, "") when nothing answers."""
    try:
        response = httpx.get(url, headers={"Host": HEALTHCHECK_HOST}, timeout=timeout)
    except httpx.HTTPError:
        return None, ""
    return response.status_code, response.text[:_BODY_CHARS]


def wait_healthy(port: int, path: str, timeout: float, log: Callable[[str], None], *,
                 probe: Probe = http_probe, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep, stopped: Callable[[], bool] = lambda: False,
                 first_interval: float = 0.25, max_interval: float = 1.0) -> bool:
    """True at the first 200; False when the window closes (after Railway's failure lines) or on `stopped()`."""
    for line in ("====================", "Starting Healthcheck", "====================", "",
                 f"Path: {path}", f"Retry window: {go_duration(timeout)}", ""):
        log(line)
    url = f"http://127.0.0.1:{port}{path}"
    deadline = clock() + timeout
    interval = first_interval
    attempt = 0
    while True:
        if stopped():
            return False
        attempt += 1
        status, body = probe(url)
        if status == 200:
            log("")
            log("[1/1] Healthcheck succeeded!")
            return True
        remaining = deadline - clock()
        if remaining <= 0:
            break
        reason = "service unavailable" if status is None else f"status {status}: {body.strip()}"
        log(f"Attempt #{attempt} failed with {reason}. Continuing to retry for {go_duration(remaining)}")
        sleep(min(interval, remaining))
        interval = min(interval * 2, max_interval)
    log("")
    log("1/1 replicas never became healthy!")
    log("Healthcheck failed!")
    return False
