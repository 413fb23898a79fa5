"""The server as WebDAV clients see it, for the client replays: a logged-in session
(``dav``, a fixture every test module can use) and raw requests that send exactly the
headers a client sends."""

from __future__ import annotations

import http.client
import io
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
import requests
from requests.auth import HTTPBasicAuth, HTTPDigestAuth

if TYPE_CHECKING:
    from tests.conftest import RunningServer


@dataclass
class Dav:
    """The server under test, and the session every test sends its requests through."""

    url: str
    """Base URL, ending in '/'."""
    http: requests.Session
    """Holds the credentials, if the server wants any."""

    def raw_headers(self, method: str, path: str) -> dict[str, str]:
        """What lets in a request sent past ``http`` (requests cannot send a PUT without
        Content-Length, nor hold a body back for 100 Continue): the session's
        Authorization, if it has credentials. Digest adds it only once the session holds
        a nonce, which the fixture's first request gets."""
        auth = self.http.auth
        if auth is None:
            return {}
        if isinstance(auth, tuple):
            auth = HTTPBasicAuth(*auth)
        request = requests.Request(method, self.url.rstrip("/") + path).prepare()
        auth(request)
        authorization = request.headers["Authorization"]
        assert isinstance(authorization, str)
        return {"Authorization": authorization}

    def connect(self) -> socket.socket:
        """A new connection to the server (TLS for https; test certificates are self-signed)."""
        parts = urlsplit(self.url)
        assert parts.hostname is not None and parts.port is not None
        sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        if parts.scheme == "https":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock, server_hostname=parts.hostname)
        return sock


@pytest.fixture(params=["plain", "encrypted"])
def dav(start_server: Callable[..., RunningServer], request: pytest.FixtureRequest) -> Iterator[Dav]:
    """The one server every test here uses: a user logged in with Digest, as Windows does
    over http; 1 MiB chunks (so a few MiB span several chunks); every client replay runs
    on a plain and on an encrypted drive."""
    sealed = (
        {"encryption": True, "passphrase": "client replay passphrase"} if request.param == "encrypted" else {}
    )
    server = start_server(chunk_size="1MiB", users={"DOMAIN-user": "client-pass"}, **sealed)
    with requests.Session() as session:
        session.auth = HTTPDigestAuth("DOMAIN-user", "client-pass")
        # One request before the tests' own: an authenticating session then holds what it
        # needs to authenticate later requests up front, which chunked bodies (they cannot
        # be sent twice) and raw requests rely on.
        assert session.request("PROPFIND", server.url, headers={"Depth": "0"}).status_code == 207
        yield Dav(server.url, session)


@dataclass
class RawResponse:
    interim: list[int]
    """Statuses of the 1xx responses that came before the final one."""
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def raw_request(
    dav: Dav, method: str, path: str, headers: dict[str, str], body: bytes = b"", *, expect_100: bool = False
) -> RawResponse:
    """Send exactly these headers (plus Host and credentials), nothing added: no
    Content-Length unless given. With ``expect_100``, the body is held back until the
    server's interim response, as Cyberduck and litmus' expect100 do."""
    sock = dav.connect()
    try:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {urlsplit(dav.url).netloc}"]
        lines += [f"{name}: {value}" for name, value in {**headers, **dav.raw_headers(method, path)}.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        interim: list[int] = []
        if expect_100:
            head = _read_head(sock)
            status = int(head.split(b" ", 2)[1])
            if status >= 200:  # a final answer instead of 100 Continue: the body is not wanted
                message = http.client.parse_headers(io.BytesIO(head.split(b"\r\n", 1)[1]))
                return RawResponse(interim, status, message, b"")
            interim.append(status)
        sock.sendall(body)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        return RawResponse(interim, response.status, response.headers, response.read())
    finally:
        sock.close()


def _read_head(sock: socket.socket) -> bytes:
    """One response head, byte by byte, so nothing after it is consumed."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, f"connection closed after {head!r}"
        head += byte
        assert len(head) < 65536
    return head
