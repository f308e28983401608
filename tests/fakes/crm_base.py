"""What the fake CRM servers (HubSpot, Salesforce) share: a loopback aiohttp server on port 0
(optionally HTTPS with a throw-away self-signed certificate), bearer-token checks, scripted
failures (429 with ``Retry-After``, 5xx) and a record of every request."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True, slots=True)
class Received:
    """One request the fake answered: method, path, query, JSON or form body, bearer token."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    token: str | None
    status: int


@dataclass(slots=True)
class _Failure:
    status: int
    retry_after: str | None
    body: Any


def closed_port() -> int:
    """A loopback port nothing listens on (a CRM that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, written to ``folder`` (PEM).

    Returns:
        ``(cert_file, key_file)``; the certificate is its own CA (pass it as ``verify``).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@dataclass
class FakeCrmServer:
    """Base of the fakes: subclasses add routes in :meth:`routes` and answer through
    :meth:`guard` (token check, scripted failure, recording).

    Attributes:
        token: the bearer token the API accepts.
        tls: serve HTTPS (Salesforce's SDK speaks only HTTPS).
        received: every API request, in order.
    """

    token: str = "test-crm-token"
    tls: bool = False
    received: list[Received] = field(default_factory=list)
    _failures: deque[_Failure] = field(default_factory=deque)
    _runner: web.AppRunner | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    base_url: str = ""
    ca_file: str | None = None

    def routes(self, app: web.Application) -> None:
        """Add the API's routes."""
        raise NotImplementedError

    def unauthorized(self) -> web.Response:
        """The API's answer to a missing or wrong token."""
        raise NotImplementedError

    def fail_next(self, status: int, *, retry_after: str | None = None, body: Any = None) -> None:
        """Answer the next API request with ``status`` (and ``Retry-After`` when given)."""
        self._failures.append(_Failure(status, retry_after, body))

    def requests_to(self, path_part: str) -> list[Received]:
        """The recorded requests whose path contains ``path_part``."""
        return [r for r in self.received if path_part in r.path]

    async def guard(self, request: web.Request, body: Any = None) -> web.Response | None:
        """Record ``request``; the failure to answer with, or None to go on."""
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None
        status = 200
        answer: web.Response | None = None
        if self._failures:
            f = self._failures.popleft()
            headers = {"Retry-After": f.retry_after} if f.retry_after is not None else {}
            answer = web.json_response(
                f.body or {"error": "scripted"}, status=f.status, headers=headers
            )
        elif token != self.token:
            answer = self.unauthorized()
        if answer is not None:
            status = answer.status
        self.received.append(
            Received(request.method, request.path, dict(request.query), body, token, status)
        )
        return answer

    async def __aenter__(self) -> Self:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        context: ssl.SSLContext | None = None
        if self.tls:
            self._tmp = tempfile.TemporaryDirectory(prefix="fake-crm-")
            cert, key = self_signed(Path(self._tmp.name))
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            self.ca_file = str(cert)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.base_url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._tmp is not None:
            self._tmp.cleanup()
