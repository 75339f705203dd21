import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from emulator.runtime.healthcheck import HEALTHCHECK_HOST, go_duration, wait_healthy

HEADER = ["====================", "Starting Healthcheck", "====================", ""]


class FakeTime:
    """A clock that moves only when the healthcheck sleeps or a probe takes time."""

    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def scripted(answers, time, took=1.0):
    answers = iter(answers)

    def probe(url):
        time.now += took
        return next(answers)

    return probe


@pytest.mark.parametrize("seconds, text", [
    (300, "5m0s"), (289.7, "4m49s"), (29.9, "29s"), (60, "1m0s"), (3600, "1h0m0s"), (0.3, "300ms"), (0, "0s"),
])
def test_durations_print_like_go(seconds, text):
    assert go_duration(seconds) == text


def test_success_after_failures_prints_railways_lines():
    time, lines = FakeTime(), []
    probe = scripted([(None, ""), (503, "starting\n"), (200, "true")], time)
    assert wait_healthy(4200, "/api/health", 300, lines.append, probe=probe, clock=time.clock, sleep=time.sleep)
    assert lines == HEADER + [
        "Path: /api/health",
        "Retry window: 5m0s",
        "",
        "Attempt #1 failed with service unavailable. Continuing to retry for 4m59s",
        "Attempt #2 failed with status 503: starting. Continuing to retry for 4m57s",
        "",
        "[1/1] Healthcheck succeeded!",
    ]


def test_timeout_fails_with_railways_lines_and_growing_intervals():
    time, lines = FakeTime(), []
    probe = scripted(iter(lambda: (None, ""), object()), time, took=0.5)
    ok = wait_healthy(4200, "/api/health", 30, lines.append, probe=probe, clock=time.clock, sleep=time.sleep,
                      first_interval=1, max_interval=8)
    assert not ok
    assert lines[:7] == HEADER + ["Path: /api/health", "Retry window: 30s", ""]
    assert lines[7] == "Attempt #1 failed with service unavailable. Continuing to retry for 29s"
    assert lines[-3:] == ["", "1/1 replicas never became healthy!", "Healthcheck failed!"]
    assert time.sleeps[:4] == [1, 2, 4, 8] and max(time.sleeps) == 8
    assert time.now == pytest.approx(30, abs=1)


def test_a_stop_ends_the_check_quietly():
    time, lines = FakeTime(), []
    calls = []
    ok = wait_healthy(4200, "/", 300, lines.append, probe=lambda url: calls.append(url) or (None, ""),
                      clock=time.clock, sleep=time.sleep, stopped=lambda: len(calls) >= 2)
    assert not ok
    assert calls == ["http://127.0.0.1:4200/"] * 2
    assert "Healthcheck failed!" not in lines


def test_real_probe_sends_railways_host_header_to_the_port_and_path():
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers["Host"]))
            self.send_response(200 if self.path == "/api/health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        lines = []
        assert wait_healthy(server.server_address[1], "/api/health", 5, lines.append)
        assert seen == [("/api/health", HEALTHCHECK_HOST)]
        assert lines[-1] == "[1/1] Healthcheck succeeded!"
    finally:
        server.shutdown()
        server.server_close()
