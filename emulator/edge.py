"""Railway's edge for one public domain: `127.0.0.1:<port>`, HTTPS and plain HTTP, piped to the service.

The domain is an IP address, not `localhost`: a scheme-less URL such as `127.0.0.1:<port>/api` must resolve
as a relative path in a browser, as `my-app.up.railway.app/api` does, and `localhost:<port>/api` would parse
as a URL with the scheme `localhost:` instead (a string starting with a digit cannot be a scheme).

The first byte of a connection tells a TLS handshake (0x16) from plain HTTP, so both work on one port.
TLS ends here, with a self-signed certificate for localhost/127.0.0.1 kept in the state dir; the bytes
after that go unchanged to `127.0.0.1:<service port>`, so WebSockets pass through. When nothing
listens there the edge answers 502 in Railway's words.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import secrets
import socket
import ssl
import threading
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TLS_DIR = "tls"  # under the state dir
CERT_FILE, KEY_FILE, TRUST_FILE = "edge.crt", "edge.key", "trust.pem"
_TLS_HANDSHAKE = 0x16
_FIRST_BYTE_TIMEOUT = 30.0  # browsers open spare connections and may send nothing for a while
_HEAD_LIMIT = 64 * 1024
_CHUNK = 64 * 1024
EDGE_HOST = "127.0.0.1"


def edge_domain(port: int) -> str:
    return f"{EDGE_HOST}:{port}"


def ensure_certificate(cert_dir: Path) -> tuple[Path, Path]:
    """The edge's certificate and key in `cert_dir`, made once and reused until a day before expiry."""
    cert_dir = Path(cert_dir)
    cert_path, key_path = cert_dir / CERT_FILE, cert_dir / KEY_FILE
    now = datetime.datetime.now(datetime.timezone.utc)
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if cert.not_valid_after_utc - now > datetime.timedelta(days=1):
            return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Railway emulator")])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]), critical=False)
        # Self-signed and its own trust anchor, so `verify=<edge.crt>` works in httpx, curl and OpenSSL.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_dir.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def trust_bundle(cert_dir: Path) -> Path:
    """The public CA roots plus the edge's certificate, for SSL_CERT_FILE: what a browser's store does for
    Railway's publicly signed domains, this does for the edge's self-signed one inside the stack."""
    cert_path, _ = ensure_certificate(cert_dir)
    bundle = Path(cert_dir) / TRUST_FILE
    content = Path(certifi.where()).read_bytes().rstrip(b"\n") + b"\n" + cert_path.read_bytes()
    if not bundle.is_file() or bundle.read_bytes() != content:
        tmp = bundle.with_suffix(".tmp")
        tmp.write_bytes(content)
        os.replace(tmp, bundle)  # a running service may be reading the old one
    return bundle


def bad_gateway() -> bytes:
    body = json.dumps({"status": "error", "code": 502, "message": "Application failed to respond",
                       "request_id": secrets.token_urlsafe(16)}).encode()
    head = (f"HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


class Edge:
    """Listens on EDGE_HOST:`port` (0 picks one) and forwards to 127.0.0.1:`target_port`."""

    def __init__(self, port: int, target_port: int, cert_dir: Path) -> None:
        cert, key = ensure_certificate(cert_dir)
        self.cert_file = cert
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(cert, key)
        self._tls.set_alpn_protocols(["http/1.1"])  # bytes go to an HTTP/1.1 backend as they are
        self.target_port = target_port
        self._listener = socket.create_server((EDGE_HOST, port))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._main: asyncio.Task | None = None
        self._thread: threading.Thread | None = None

    @property
    def domain(self) -> str:
        return edge_domain(self.port)

    @property
    def url(self) -> str:
        return f"https://{self.domain}"

    def start(self) -> "Edge":
        self._main = self._loop.create_task(self._serve())
        self._thread = threading.Thread(target=self._run, name=f"edge-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            self._listener.close()
            return
        self._loop.call_soon_threadsafe(self._main.cancel)
        self._thread.join(timeout=10)
        self._loop.close()
        self._thread = None

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main)
        except asyncio.CancelledError:
            pass  # stop() ends the edge by cancelling it

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        connections: set[asyncio.Task] = set()
        try:
            while True:
                conn, _ = await loop.sock_accept(self._listener)
                task = loop.create_task(self._handle(conn))
                connections.add(task)
                task.add_done_callback(connections.discard)
        finally:
            self._listener.close()
            for task in connections:
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)

    async def _handle(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        try:
            first = await asyncio.wait_for(_peek(conn), _FIRST_BYTE_TIMEOUT)
            if not first:
                conn.close()
                return
            reader, writer = await _streams(conn, self._tls if first[0] == _TLS_HANDSHAKE else None)
        except (OSError, ssl.SSLError, asyncio.TimeoutError):
            conn.close()  # a client that went away or refused our certificate
            return
        try:
            backend = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            await _answer_bad_gateway(reader, writer)
            return
        await _splice((reader, writer), backend)


async def _peek(conn: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    while True:
        try:
            return conn.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            readable = loop.create_future()
            loop.add_reader(conn.fileno(), lambda: readable.done() or readable.set_result(None))
            try:
                await readable
            finally:
                loop.remove_reader(conn.fileno())


async def _streams(conn: socket.socket, tls: ssl.SSLContext | None):
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_HEAD_LIMIT)
    protocol = asyncio.StreamReaderProtocol(reader)
    transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn, ssl=tls,
                                                      ssl_handshake_timeout=10 if tls else None)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def _answer_bad_gateway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        # Read the request head first: closing on unread data would reset the connection under the answer.
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(bad_gateway())
        await writer.drain()
    except (OSError, ssl.SSLError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        await _close(writer)


async def _splice(client, backend) -> None:
    (client_reader, client_writer), (backend_reader, backend_writer) = client, backend
    upstream = asyncio.ensure_future(_pipe(client_reader, backend_writer))
    downstream = asyncio.ensure_future(_pipe(backend_reader, client_writer))
    try:
        done, _ = await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
        # The client finished sending: pass the half-close on and let the answer come back.
        if upstream in done and upstream.result() and backend_writer.can_write_eof():
            backend_writer.write_eof()
            await downstream
    except OSError:
        pass
    finally:
        for task in (upstream, downstream):
            task.cancel()
        await asyncio.gather(upstream, downstream, return_exceptions=True)
        await _close(backend_writer)
        await _close(client_writer)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Copy until end of stream; True if it ended cleanly, False if a side broke."""
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        return True
    except (OSError, ssl.SSLError):
        return False


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 2)
    except (OSError, ssl.SSLError, asyncio.TimeoutError):
        pass
