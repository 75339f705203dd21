import json
import socket
import ssl
import stat
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from websockets.sync.client import connect
from websockets.sync.server import serve

from emulator.edge import Edge, ensure_certificate, trust_bundle
from emulator.postgres import free_port


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self._answer(json.dumps({"path": self.path, "host": self.headers["Host"]}).encode())

    def do_POST(self):
        self._answer(self.rfile.read(int(self.headers["Content-Length"])))

    def _answer(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def backend():
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


def test_plain_http_and_https_on_the_same_port(backend, edge_to):
    edge = edge_to(backend)
    plain = httpx.get(f"http://localhost:{edge.port}/api/health?x=1")
    assert plain.status_code == 200
    assert plain.json() == {"path": "/api/health?x=1", "host": f"localhost:{edge.port}"}
    for host in ("localhost", "127.0.0.1"):
        secure = httpx.get(f"https://{host}:{edge.port}/api/health", verify=trusting(edge))
        assert secure.status_code == 200 and secure.json()["path"] == "/api/health"
    assert httpx.get(f"{edge.url}/ui-settings", verify=False).json()["path"] == "/ui-settings"


def test_keep_alive_and_large_bodies_pass_through(backend, edge_to):
    edge = edge_to(backend)
    body = bytes(range(256)) * 8192  # 2 MiB
    with httpx.Client(base_url=edge.url, verify=trusting(edge)) as client:
        for _ in range(3):
            assert client.post("/upload", content=body).content == body


def test_websocket_echo_through_ws_and_wss(edge_to):
    def echo(ws):
        for message in ws:
            ws.send(message)

    with serve(echo, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        edge = edge_to(server.socket.getsockname()[1])
        with connect(f"ws://localhost:{edge.port}/api/events/in") as ws:
            ws.send("plain hello")
            assert ws.recv(timeout=5) == "plain hello"
        with connect(f"wss://localhost:{edge.port}/api/events/in", ssl=trusting(edge)) as ws:
            for n in range(3):
                ws.send(f"tls hello {n}")
                assert ws.recv(timeout=5) == f"tls hello {n}"
        server.shutdown()


def test_502_in_railways_words_when_the_service_is_down(edge_to):
    edge = edge_to(free_port())
    for url in (f"http://localhost:{edge.port}/", f"{edge.url}/api/health"):
        response = httpx.get(url, verify=False)
        assert response.status_code == 502
        assert response.json()["message"] == "Application failed to respond"


def test_the_edge_reaches_a_service_that_starts_later(edge_to):
    port = free_port()
    edge = edge_to(port)
    assert httpx.get(f"http://localhost:{edge.port}/").status_code == 502
    server = ThreadingHTTPServer(("127.0.0.1", port), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert httpx.get(f"{edge.url}/late", verify=False).json()["path"] == "/late"
    finally:
        server.shutdown()
        server.server_close()


def test_a_client_that_refuses_the_certificate_does_not_break_the_edge(backend, edge_to):
    edge = edge_to(backend)
    with pytest.raises(httpx.ConnectError):
        httpx.get(edge.url)  # default trust store: the self-signed certificate is refused
    assert httpx.get(edge.url, verify=False).status_code == 200


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
