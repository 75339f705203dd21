"""The local edge against Railway's documented edge (see emulator/runtime/edge.py for the sources)."""

import json
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from tests.support.prefect_server import WEB_AUTH, clean_environ, railway_web_service
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.sync.server import serve

from emulator.runtime.edge import EDGE_SOURCE, POP, Edge, ensure_certificate, trust_bundle
from emulator.runtime.postgres import free_port

PREFECT = str(Path(sys.executable).with_name("prefect"))


class Echo(BaseHTTPRequestHandler):
    """Answers every request with what arrived: method, path, headers, body and the peer's address."""

    protocol_version = "HTTP/1.1"
    seen: list[dict] = []

    def do_GET(self):
        self._answer(b"")

    def do_POST(self):
        if self.headers.get("Transfer-Encoding") == "chunked":
            body = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
        else:
            body = self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(body)

    def _answer(self, body):
        seen = {"method": self.command, "path": self.path, "headers": dict(self.headers.items()),
                "peer": self.client_address[0], "body_length": len(body)}
        self.seen.append(seen)
        answer = body if self.path == "/upload" else json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def backend():
    Echo.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def edge_to(tmp_path):
    edges = []

    def make(target_port):
        edge = Edge(0, target_port, tmp_path / "tls").start()
        edges.append(edge)
        return edge

    yield make
    for edge in edges:
        edge.stop()


def trusting(edge) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(edge.cert_file))


# --- plain HTTP: Railway's 301 ----------------------------------------------------------------------------


def test_plain_http_gets_a_301_to_the_same_url_over_https_and_never_reaches_the_service(backend, edge_to):
    edge = edge_to(backend)
    for host in ("localhost", "127.0.0.1"):
        for method in ("GET", "POST", "DELETE", "PATCH"):
            answer = httpx.request(method, f"http://{host}:{edge.port}/api/flows/filter?limit=1", content=b"{}")
            assert answer.status_code == 301, method
            assert answer.headers["location"] == f"https://{host}:{edge.port}/api/flows/filter?limit=1"
            assert answer.headers["server"] == "railway-edge"
    assert Echo.seen == []


def test_a_post_to_http_arrives_as_a_get_after_the_redirect(backend, edge_to):
    edge = edge_to(backend)
    with httpx.Client(verify=trusting(edge), follow_redirects=True) as client:
        answer = client.post(f"http://{edge.domain}/api/work_pools/filter", json={"limit": 1})
    assert [r.status_code for r in answer.history] == [301]
    assert answer.json()["method"] == "GET" and answer.json()["path"] == "/api/work_pools/filter"
    assert answer.json()["body_length"] == 0  # the body is gone too
    assert [seen["method"] for seen in Echo.seen] == ["GET"]


def test_a_websocket_over_plain_ws_is_redirected_like_any_request(edge_to, backend):
    edge = edge_to(backend)
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{edge.port}/api/events/in", open_timeout=5)
    assert refused.value.response.status_code == 301


def test_plain_http_is_redirected_even_while_the_service_is_down(edge_to):
    edge = edge_to(free_port())
    assert httpx.get(f"http://{edge.domain}/api/health").status_code == 301


def test_garbage_on_the_plain_port_gets_a_400_and_the_edge_keeps_serving(backend, edge_to):
    edge = edge_to(backend)
    with socket.create_connection(("127.0.0.1", edge.port), timeout=5) as raw:
        raw.sendall(b"HELLO\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 400 Bad Request")
    assert httpx.get(f"{edge.url}/", verify=trusting(edge)).status_code == 200


# --- HTTPS: to the service, with Railway's headers ------------------------------------------------------


def test_https_reaches_the_service_with_railways_request_headers(backend, edge_to):
    edge = edge_to(backend)
    before = time.time() * 1000
    forged = {"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "7.7.7.7", "X-Forwarded-Host": "evil.example",
              "X-Forwarded-Proto": "http", "X-Railway-Edge": "fake"}
    answer = httpx.get(f"{edge.url}/api/health?x=1", headers={**forged, "X-Custom": "kept"}, verify=trusting(edge))
    seen = answer.json()
    headers = seen["headers"]
    assert answer.status_code == 200 and seen["path"] == "/api/health?x=1"
    assert headers["Host"] == edge.domain  # unchanged
    assert headers["X-Forwarded-Proto"] == "https"
    assert headers["X-Forwarded-Host"] == edge.domain
    assert headers["X-Real-IP"] == "127.0.0.1"
    assert headers["X-Forwarded-For"] == f"127.0.0.1, {seen['peer']}"  # client, then the edge's hop
    assert headers["X-Railway-Edge"] == POP
    assert before <= int(headers["X-Request-Start"]) <= time.time() * 1000
    assert headers["X-Railway-Request-Id"] and headers["X-Custom"] == "kept"
    assert "6.6.6.6" not in json.dumps(headers) and "evil.example" not in json.dumps(headers)
    # The edge is not the service's loopback, so trusting forwarded headers from 127.0.0.1 alone
    # (uvicorn's default) ignores them here as behind Railway's edge.
    assert seen["peer"] == EDGE_SOURCE


def test_keep_alive_large_and_chunked_bodies_pass_and_each_request_gets_its_headers(backend, edge_to):
    edge = edge_to(backend)
    body = bytes(range(256)) * 8192  # 2 MiB
    with httpx.Client(base_url=edge.url, verify=trusting(edge)) as client:
        for _ in range(2):
            assert client.post("/upload", content=body).content == body
        assert client.post("/upload", content=iter([body[:1000], body[1000:]])).content == body  # chunked
        ids = {client.get("/next").json()["headers"]["X-Railway-Request-Id"] for _ in range(3)}
    assert len(ids) == 3
    assert all(seen["headers"]["X-Forwarded-Proto"] == "https" for seen in Echo.seen)
    assert [seen["body_length"] for seen in Echo.seen[:3]] == [len(body)] * 3


def test_websocket_over_wss_passes(edge_to):
    def echo(ws):
        for message in ws:
            ws.send(message)

    with serve(echo, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        edge = edge_to(server.socket.getsockname()[1])
        with connect(f"wss://localhost:{edge.port}/api/events/in", ssl=trusting(edge)) as ws:
            for n in range(3):
                ws.send(f"tls hello {n}")
                assert ws.recv(timeout=5) == f"tls hello {n}"
        server.shutdown()


def test_502_in_railways_words_when_the_service_is_down(edge_to):
    edge = edge_to(free_port())
    response = httpx.get(f"{edge.url}/api/health", verify=trusting(edge))
    assert response.status_code == 502
    assert response.json()["message"] == "Application failed to respond"
    assert response.headers["server"] == "railway-edge"


def test_the_edge_reaches_a_service_that_starts_later(edge_to):
    port = free_port()
    edge = edge_to(port)
    assert httpx.get(edge.url, verify=trusting(edge)).status_code == 502
    server = ThreadingHTTPServer(("127.0.0.1", port), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert httpx.get(f"{edge.url}/late", verify=trusting(edge)).json()["path"] == "/late"
    finally:
        server.shutdown()
        server.server_close()


def test_a_client_that_refuses_the_certificate_does_not_break_the_edge(backend, edge_to):
    edge = edge_to(backend)
    with pytest.raises(httpx.ConnectError):
        httpx.get(edge.url)  # default trust store: the self-signed certificate is refused
    assert httpx.get(edge.url, verify=False).status_code == 200


def test_an_unreadable_request_over_tls_closes_that_connection_only(backend, edge_to):
    edge = edge_to(backend)
    with socket.create_connection(("127.0.0.1", edge.port), timeout=5) as raw:
        with trusting(edge).wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
            assert tls.recv(100) == b""
    assert httpx.get(edge.url, verify=trusting(edge)).status_code == 200
    assert Echo.seen[-1]["path"] == "/"


# --- the certificate --------------------------------------------------------------------------------------


def test_certificate_is_made_once_and_the_key_is_private(tmp_path):
    cert, key = ensure_certificate(tmp_path / "tls")
    first = cert.read_bytes()
    assert ensure_certificate(tmp_path / "tls") == (cert, key)
    assert cert.read_bytes() == first
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_stop_closes_the_port(backend, tmp_path):
    edge = Edge(0, backend, tmp_path / "tls").start()
    edge.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", edge.port), timeout=1)


def test_the_trust_bundle_makes_https_to_the_edge_work_with_default_settings(backend, edge_to, tmp_path,
                                                                              monkeypatch):
    edge = edge_to(backend)
    bundle = trust_bundle(tmp_path / "tls")
    assert edge.cert_file.read_text() in bundle.read_text()
    assert "BEGIN CERTIFICATE" in bundle.read_text().split(edge.cert_file.read_text())[0]  # the public roots stay
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))  # what the planner gives each service
    assert httpx.get(f"{edge.url}/api/health").status_code == 200  # httpx and so Prefect's client
    with urllib.request.urlopen(f"{edge.url}/api/health", timeout=5) as answer:  # start_worker.sh's wait
        assert answer.status == 200


# --- a real Prefect client through the edge ---------------------------------------------------------------


@pytest.fixture(scope="module")
def web_edge(request, tmp_path_factory):
    """The session's real Prefect `web` service behind an edge, and the trust bundle services get."""
    server = railway_web_service(request).server
    tls = tmp_path_factory.mktemp("web-edge") / "tls"
    edge = Edge(0, server.port, tls).start()
    yield edge, trust_bundle(tls)
    edge.stop()


def prefect_cli(api_url: str, bundle, home, *args: str) -> subprocess.CompletedProcess:
    env = clean_environ(PREFECT_HOME=str(home), PREFECT_API_URL=api_url, PREFECT_API_AUTH_STRING=WEB_AUTH,
                        SSL_CERT_FILE=str(bundle), DO_NOT_TRACK="1")
    return subprocess.run([PREFECT, *args], env=env, capture_output=True, text=True, timeout=120)


def test_prefect_with_an_http_public_url_fails_as_on_railway_and_https_works(web_edge, tmp_path):
    """PREFECT_API_URL=http://<public domain>/api fails: every call is redirected to https://. On Railway
    (80 -> 443) httpx keeps the credentials, reads pass and writes arrive as GETs (405, Railway's
    troubleshooting page). Here both schemes share the domain's port, which httpx counts as another origin
    and drops the Authorization header: the same broken setup, refused one call earlier (401)."""
    edge, bundle = web_edge
    pool = f"edge-{uuid.uuid4().hex[:8]}"
    broken = prefect_cli(f"http://{edge.domain}/api", bundle, tmp_path / "a", "work-pool", "create", pool,
                         "--type", "process")
    output = broken.stdout + broken.stderr
    assert broken.returncode != 0
    assert f"for url 'https://{edge.domain}/api/work_pools/" in output, output  # it followed the redirect
    assert "401 Unauthorized" in output or "405 Method Not Allowed" in output, output
    shipped = prefect_cli(f"https://{edge.domain}/api", bundle, tmp_path / "b", "work-pool", "create", pool,
                          "--type", "process")
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    created = httpx.get(f"{edge.url}/api/work_pools/{pool}", auth=tuple(WEB_AUTH.split(":", 1)),
                        verify=ssl.create_default_context(cafile=str(bundle)))
    assert created.status_code == 200 and created.json()["type"] == "process"
