"""Bad input from clients, item by item from the hardening list: request limits, XML that
must not expand, paths and Destination headers that must not escape or smuggle names,
read-only users on COPY/MOVE, error bodies without internals, secrets kept out of the log.

Every refusal must be a 4xx whose body shows no traceback, file path or Python exception,
and afterwards the server must still serve with nothing changed. Raw sockets are used
where requests or http.client would normalise the input (``..``, NUL, invalid UTF-8,
oversized heads). Where davfs does not yet do what a storage product should, the check
sits in a test of its own, so that one failure does not hide the others.
"""

from __future__ import annotations

import base64
import re
import select
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, urlsplit

import pytest
import requests
from requests.auth import HTTPBasicAuth, HTTPDigestAuth

from davfs.auth import password_hash
from davfs.serving import MAX_HEAD as MAX_REQUEST_HEAD
from tests.conftest import REPO, RunningServer, ServerProcess

MiB = 1024 * 1024
PRECIOUS = b"precious bytes that no bad request may change"
METHODS = ("PROPFIND", "PROPPATCH", "LOCK")
MAX_XML_BODY = MiB
"""The README's limit on request bodies other than PUT's."""
LOCK_TIMEOUT_MAX = 24 * 3600
"""The longest lock davfs grants (a day; wsgidav alone would grant four weeks)."""

NO_TRACE = re.compile(rb'Traceback|File "/|\.py"|site-packages')
"""What a traceback or a source location looks like in a response body."""
EXCEPTION_TEXT = re.compile(rb"Source exception|\b[A-Z][A-Za-z]*(?:Error|Exception|Forbidden)\(")
"""A Python exception's repr (``ParseError(…)``, ``EntitiesForbidden(…)``) in a body."""

LOCKINFO = (
    b'<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
    b"<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
    b"<D:owner>tester</D:owner></D:lockinfo>"
)
PROPPATCH = (
    b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:X="urn:x">'
    b"<D:set><D:prop><X:colour>red</X:colour></D:prop></D:set></D:propertyupdate>"
)
PROPFIND = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'
SEED_PROPPATCH = PROPPATCH.replace(b"colour>red</X:colour", b"origin>seed</X:origin")


# --- raw HTTP ------------------------------------------------------------------------


@dataclass
class Reply:
    """One HTTP response as it came off the wire; status 0 when none came."""

    status: int
    headers: dict[str, str]
    body: bytes

    def __str__(self) -> str:
        """The status and the telling part of the body (an error page's paragraph)."""
        found = re.search(rb"<p>(.*?)</p>", self.body, re.DOTALL)
        return f"{self.status} {(found.group(1) if found else self.body)[:300]!r}"


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _answered(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def _read_reply(sock: socket.socket) -> Reply:
    """Read one response: the head, then Content-Length bytes or up to the close."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
        length = re.search(rb"\r\ncontent-length:\s*(\d+)", data.partition(b"\r\n\r\n")[0], re.IGNORECASE)
        while length is None or len(data.partition(b"\r\n\r\n")[2]) < int(length.group(1)):
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    except OSError:
        pass  # reset or timed out: keep what arrived
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    status_line = lines[0].split(" ")
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
    return Reply(status, headers, body)


def _statuses(data: bytes) -> list[int]:
    """The status of every response in bytes read off one connection, in order (each
    body skipped by its Content-Length, so statuses inside a multistatus do not count)."""
    statuses = []
    while data.startswith(b"HTTP/1.1 "):
        head, _, rest = data.partition(b"\r\n\r\n")
        statuses.append(int(head[9:12]))
        length = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
        data = rest[int(length.group(1)) :] if length else b""
    return statuses


def send_raw(url: str, request: bytes, *, timeout: float = 30) -> Reply:
    """Send bytes as they are; stop sending as soon as the server answers (it may refuse
    a request before reading it whole) and read its response."""
    with socket.create_connection(_address(url), timeout=timeout) as sock:
        try:
            for start in range(0, len(request), 64 * 1024):
                if start and _answered(sock):
                    break
                sock.sendall(request[start : start + 64 * 1024])
        except OSError:
            pass  # the server answered and closed before reading everything
        return _read_reply(sock)


def exchange(
    url: str,
    method: str,
    target: bytes | str,
    headers: dict[str, str | bytes] | None = None,
    body: bytes | None = None,
) -> Reply:
    """One request with the target and header values sent byte for byte."""
    host, port = _address(url)
    fields: dict[str, str | bytes] = {"Host": f"{host}:{port}", "Connection": "close"}
    fields.update(headers or {})
    if body is not None:
        fields.setdefault("Content-Length", str(len(body)))
    raw_target = target.encode() if isinstance(target, str) else target
    lines = [method.encode() + b" " + raw_target + b" HTTP/1.1"]
    for name, value in fields.items():
        lines.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode("latin-1")))
    return send_raw(url, b"\r\n".join(lines) + b"\r\n\r\n" + (body or b""))


# --- what must hold after every bad request ---------------------------------------------


def tree(server: RunningServer) -> dict[str, tuple[bool, int, str | None]]:
    """Every node of the share with its size and content ETag, from the catalog."""
    return {path: (node.is_dir, node.size, node.etag) for path, node in server.app.drive.catalog.tree.walk()}


def dead_props(server: RunningServer, *path: str) -> dict[str, str]:
    node = server.app.drive.catalog.tree.resolve(list(path))
    assert node is not None, path
    return dict(server.app.drive.catalog.tree.dead_props(node.id))


def assert_no_trace(server: RunningServer, reply: Reply | requests.Response) -> None:
    """No traceback, source file or server path in a response body."""
    body = reply.body if isinstance(reply, Reply) else reply.content
    assert not NO_TRACE.search(body), body[:2000]
    for path in (str(REPO), str(server.config.data_dir)):
        assert path.encode() not in body, body[:2000]


def assert_refused(server: RunningServer, reply: Reply, *allowed: int) -> None:
    """A clean 4xx (one of ``allowed`` if given)."""
    assert 400 <= reply.status < 500, str(reply)
    if allowed:
        assert reply.status in allowed, str(reply)
    assert_no_trace(server, reply)


def assert_still_serving(server: RunningServer, auth: requests.auth.AuthBase | None = None) -> None:
    """A normal PUT and GET work afterwards (and the probe is removed again)."""
    probe = server.url + "still-serving.txt"
    assert requests.put(probe, data=b"alive", auth=auth, timeout=30).status_code == 201
    assert requests.get(probe, auth=auth, timeout=30).content == b"alive"
    assert requests.delete(probe, auth=auth, timeout=30).status_code == 204


@pytest.fixture
def seeded(start_server: Callable[..., RunningServer]) -> RunningServer:
    """An anonymous server holding /d/f.txt (PRECIOUS, with a dead property) and /top.txt."""
    server = start_server()
    assert requests.request("MKCOL", server.url + "d", timeout=30).status_code == 201
    assert requests.put(server.url + "d/f.txt", data=PRECIOUS, timeout=30).status_code == 201
    assert requests.put(server.url + "top.txt", data=b"top", timeout=30).status_code == 201
    assert (
        requests.request("PROPPATCH", server.url + "d/f.txt", data=SEED_PROPPATCH, timeout=30).status_code
        == 207
    )
    return server


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback TCP port that must never be connected to (external entities, DTDs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.settimeout(0.3)
        yield sock


def nobody_connected(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except TimeoutError:
        return True
    conn.close()
    return False


class PeakRss:
    """The highest resident set size of this process (the in-process server) while open."""

    def __enter__(self) -> PeakRss:
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def growth(self) -> int:
        return self.peak - self.base


def _rss() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) * 1024


# --- 1. request heads -------------------------------------------------------------------


def test_oversized_request_heads_are_refused_and_the_server_keeps_serving(seeded: RunningServer) -> None:
    """cheroot reads the whole head before anything else runs; 64 KiB must be the end
    of it however the bytes are spread (one line, one header, many headers, no end)."""
    before = tree(seeded)
    over = MAX_REQUEST_HEAD + 1024
    many_headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(over // 100))
    tiny_headers = b"".join(b"X-%d: v\r\n" % i for i in range(over // 8))
    cases = [
        (b"PUT /" + b"a" * over + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx", (414,)),
        (
            b"PUT /big.txt HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * over + b"\r\nContent-Length: 1\r\n\r\nx",
            (413, 431),
        ),
        (b"PUT /big.txt HTTP/1.1\r\nHost: x\r\n" + many_headers + b"Content-Length: 1\r\n\r\nx", (413, 431)),
        (b"PUT /big.txt HTTP/1.1\r\nHost: x\r\n" + tiny_headers + b"Content-Length: 1\r\n\r\nx", (413, 431)),
        (b"PUT /big.txt HTTP/1.1\r\nHost: x\r\nX-Endless: " + b"e" * (4 * over), (400, 413, 431)),
    ]
    for request, allowed in cases:
        started = time.monotonic()
        reply = send_raw(seeded.url, request)
        assert_refused(seeded, reply, *allowed)
        assert time.monotonic() - started < 5, "refused only after a wait"
    assert tree(seeded) == before
    assert_still_serving(seeded)


# --- 2. XML body size -------------------------------------------------------------------


def _padded(body: bytes, size: int) -> bytes:
    """The XML document grown to exactly ``size`` bytes by whitespace before its root end."""
    cut = body.rindex(b"</")
    return body[:cut] + b" " * (size - len(body)) + body[cut:]


@pytest.mark.parametrize("method", METHODS)
def test_xml_bodies_over_1_mib_are_413(seeded: RunningServer, method: str) -> None:
    """wsgidav reads XML bodies whole into memory, so davfs refuses them above 1 MiB
    before reading; exactly 1 MiB is still a request like any other."""
    before, props = tree(seeded), dead_props(seeded, "d", "f.txt")
    document = {"PROPFIND": PROPFIND, "PROPPATCH": PROPPATCH, "LOCK": LOCKINFO}[method]
    headers: dict[str, str | bytes] = {"Depth": "0", "Content-Type": "text/xml"}
    reply = exchange(seeded.url, method, "/d/f.txt", headers, _padded(document, MAX_XML_BODY + 1))
    assert_refused(seeded, reply, 413)
    reply = exchange(seeded.url, method, "/top.txt", headers, _padded(document, MAX_XML_BODY))
    assert reply.status in (200, 207), str(reply)
    if method == "LOCK":
        assert (
            exchange(seeded.url, "UNLOCK", "/top.txt", {"Lock-Token": reply.headers["lock-token"]}).status
            == 204
        )
    assert tree(seeded) == before and dead_props(seeded, "d", "f.txt") == props
    assert_still_serving(seeded)


def _stream_chunked(url: str, method: str, target: str, limit: int) -> tuple[Reply, int]:
    """Send an endless chunked XML body (no Content-Length) until the server answers or
    ``limit`` bytes are out; returns the reply and how much was sent."""
    host, port = _address(url)
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\nDepth: 0\r\n"
        "Content-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    opening = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
    filler = b"<D:getetag/>" * 20000
    sent = 0
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(head)
        sock.settimeout(2)
        try:
            piece = opening
            while sent < limit and not _answered(sock):
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
                piece = filler
        except OSError:
            pass  # the server answered and closed the connection
        sock.settimeout(30)
        return _read_reply(sock), sent


@pytest.mark.parametrize("method", METHODS)
def test_a_huge_chunked_xml_body_is_not_read_into_memory(seeded: RunningServer, method: str) -> None:
    """Without a Content-Length the 1 MiB check cannot look at a header; the body must
    still not be read whole. (wsgidav treats a body without Content-Length as empty.)"""
    before, props = tree(seeded), dead_props(seeded, "d", "f.txt")
    limit = 64 * MiB
    with PeakRss() as rss:
        reply, sent = _stream_chunked(seeded.url, method, "/d/f.txt", limit)
    assert 0 < reply.status < 500, str(reply)
    assert_no_trace(seeded, reply)
    assert sent < limit, "the server read the whole endless body before answering"
    assert rss.growth < 32 * MiB, f"server memory grew by {rss.growth / MiB:.0f} MiB"
    assert tree(seeded) == before and dead_props(seeded, "d", "f.txt") == props
    assert_still_serving(seeded)


@pytest.mark.parametrize("method", METHODS)
def test_a_huge_chunked_xml_body_is_refused(seeded: RunningServer, method: str) -> None:
    """A body that is not read must not be answered as if it had asked for something
    else: an endless chunked body is a 4xx (413, 411 or 400), not a 207 for allprop."""
    reply, _ = _stream_chunked(seeded.url, method, "/d/f.txt", 64 * MiB)
    assert_refused(seeded, reply)
    assert_still_serving(seeded)


@pytest.mark.parametrize("method", ["PROPFIND", "PROPPATCH", "LOCK", "GET", "DELETE", "MKCOL"])
def test_an_unread_chunked_body_is_never_run_as_a_request(seeded: RunningServer, method: str) -> None:
    """wsgidav never reads a chunked body it did not expect, and cheroot neither drains
    nor closes after such a request (it only drains Content-Length bodies), so the body
    bytes are parsed as the next request on the connection: request smuggling."""
    smuggled = b"PUT /smuggled.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    target = b"/newcol" if method == "MKCOL" else b"/top.txt"
    request = (
        method.encode() + b" " + target + b" HTTP/1.1\r\nHost: x\r\nDepth: 0\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + smuggled
    )
    with socket.create_connection(_address(seeded.url), timeout=30) as sock:
        sock.sendall(request)
        received = b""
        try:
            while piece := sock.recv(65536):
                received += piece
        except OSError:
            pass
    assert_no_trace(seeded, Reply(0, {}, received))
    answers = _statuses(received)
    assert seeded.app.drive.catalog.tree.resolve(["smuggled.txt"]) is None, (
        f"the body ran as a request; answers: {answers}"
    )
    assert_still_serving(seeded)


def test_a_chunked_body_does_not_desynchronise_the_connection(seeded: RunningServer) -> None:
    """A well-formed chunked PROPFIND followed by a pipelined GET on the same connection:
    the GET must get its 200 (body read) or the connection must close after the first
    answer. Today the GET is answered with ``400 Malformed Request-Line``, the chunk
    size line having been taken for the next request line."""
    body = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>'
    first = (
        b"PROPFIND /top.txt HTTP/1.1\r\nHost: x\r\nDepth: 0\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    )
    second = b"GET /top.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(_address(seeded.url), timeout=30) as sock:
        sock.sendall(first + second)
        received = b""
        try:
            while piece := sock.recv(65536):
                received += piece
        except OSError:
            pass
    statuses = _statuses(received)
    assert statuses[:1] == [207], received[:300]
    assert statuses[1:] in ([], [200]), f"answers on one connection: {statuses}: {received[-120:]!r}"


# --- 3. PROPFIND Depth: infinity --------------------------------------------------------


@pytest.mark.parametrize(
    "target, depth",
    [("/", "Infinity"), ("/d/", "INFINITY"), ("/d", None), ("/d/", "infinity")],
)
def test_propfind_depth_infinity_on_a_folder_is_403_finite_depth(
    seeded: RunningServer, target: str, depth: str | None
) -> None:
    """A whole-tree walk is off by default (davfs.propfind_infinity), in any spelling, on
    any folder, and a missing Depth means infinity (RFC 4918 9.1)."""
    headers: dict[str, str | bytes] = {"Depth": depth} if depth is not None else {}
    reply = exchange(seeded.url, "PROPFIND", target, headers, PROPFIND)
    assert_refused(seeded, reply, 403)
    error = ET.fromstring(reply.body)
    assert error.tag == "{DAV:}error" and error.find("{DAV:}propfind-finite-depth") is not None
    on_a_file = exchange(seeded.url, "PROPFIND", "/d/f.txt", {"Depth": "infinity"}, PROPFIND)
    assert on_a_file.status == 207, str(on_a_file)
    assert_still_serving(seeded)


# --- 4. lock timeouts -------------------------------------------------------------------


def _granted_seconds(reply: Reply) -> int:
    """The timeout of the lock in a LOCK response's lockdiscovery, in seconds."""
    timeout = ET.fromstring(reply.body).find(".//{DAV:}activelock/{DAV:}timeout")
    assert timeout is not None and timeout.text is not None, str(reply)
    assert timeout.text.startswith("Second-"), f"granted {timeout.text!r}"
    return int(timeout.text.removeprefix("Second-"))


@pytest.mark.parametrize("asked", ["Second-999999999", "Second-" + "9" * 40, "Second-4294967296", "infinite"])
def test_lock_grants_and_refreshes_stay_bounded(seeded: RunningServer, asked: str) -> None:
    """A forgotten lock blocks its file until it expires, so neither the grant nor any
    refresh (which test_http does not cover) may exceed LOCK_TIMEOUT_MAX (a day)."""
    reply = exchange(seeded.url, "LOCK", "/top.txt", {"Timeout": asked}, LOCKINFO)
    assert reply.status == 200, str(reply)
    assert 0 < _granted_seconds(reply) <= LOCK_TIMEOUT_MAX
    token = reply.headers["lock-token"]
    for again in ("Infinite", "Second-999999999999", "Infinite, Second-4100000000", asked):
        refreshed = exchange(seeded.url, "LOCK", "/top.txt", {"Timeout": again, "If": f"({token})"})
        assert refreshed.status == 200, str(refreshed)
        assert 0 < _granted_seconds(refreshed) <= LOCK_TIMEOUT_MAX
    assert exchange(seeded.url, "UNLOCK", "/top.txt", {"Lock-Token": token}).status == 204
    assert_still_serving(seeded)


def test_a_lock_timeout_with_a_huge_number_is_not_a_500(seeded: RunningServer) -> None:
    """Python refuses to convert more than 4300 digits; that must be the client's 400 (or
    a capped lock), not an internal error that shows the ValueError."""
    before = tree(seeded)
    reply = exchange(seeded.url, "LOCK", "/top.txt", {"Timeout": "Second-" + "9" * 5000}, LOCKINFO)
    assert reply.status < 500, str(reply)
    assert not EXCEPTION_TEXT.search(reply.body), str(reply)
    assert tree(seeded) == before
    assert_still_serving(seeded)


# --- 5. XML bombs and external entities -------------------------------------------------


def _laughs(root: bytes, use: bytes) -> bytes:
    entities = b'<!ENTITY lol0 "lol">' + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10) for i in range(1, 10)
    )
    return (
        b'<?xml version="1.0"?><!DOCTYPE '
        + root
        + b" ["
        + entities
        + b"]>"
        + use.replace(b"ENTITY", b"&lol9;")
    )


def _attacks(port: int) -> dict[str, Callable[[bytes, bytes], bytes]]:
    """Ways to make a parser expand or fetch, each applied to a body whose text has
    the placeholder ENTITY where the entity is used."""
    url = f"http://127.0.0.1:{port}".encode()

    def declared(declaration: bytes) -> Callable[[bytes, bytes], bytes]:
        def body(root: bytes, use: bytes) -> bytes:
            return b'<?xml version="1.0"?><!DOCTYPE %s [%s]>%s' % (
                root,
                declaration,
                use.replace(b"ENTITY", b"&e;"),
            )

        return body

    return {
        "billion-laughs": _laughs,
        "quadratic-blowup": lambda root, use: declared(b'<!ENTITY e "' + b"A" * 50000 + b'">')(
            root, use.replace(b"ENTITY", b"ENTITY" * 2000)
        ),
        "external-file": declared(b'<!ENTITY e SYSTEM "file:///etc/passwd">'),
        "external-http": declared(b'<!ENTITY e SYSTEM "' + url + b'/xxe">'),
        "parameter-entity": declared(b'<!ENTITY % p SYSTEM "' + url + b'/p.dtd"> %p; <!ENTITY e "x">'),
    }


BODIES_WITH_AN_ENTITY = {
    "PROPFIND": (
        b"D:propfind",
        b'<D:propfind xmlns:D="DAV:"><D:prop><D:getetag>ENTITY</D:getetag></D:prop></D:propfind>',
    ),
    "PROPPATCH": (
        b"D:propertyupdate",
        b'<D:propertyupdate xmlns:D="DAV:" xmlns:X="urn:x"><D:set><D:prop><X:colour>ENTITY</X:colour>'
        b"</D:prop></D:set></D:propertyupdate>",
    ),
    "LOCK": (
        b"D:lockinfo",
        b'<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
        b"<D:locktype><D:write/></D:locktype><D:owner>ENTITY</D:owner></D:lockinfo>",
    ),
}


@pytest.mark.parametrize(
    "attack", ["billion-laughs", "quadratic-blowup", "external-file", "external-http", "parameter-entity"]
)
@pytest.mark.parametrize("method", METHODS)
def test_entity_declarations_are_refused_without_expansion(
    seeded: RunningServer, listener: socket.socket, method: str, attack: str
) -> None:
    """Entities are refused before anything is expanded or fetched: the answer is a
    small, fast 4xx, no file's content comes back, no URL is fetched, nothing is set or
    locked."""
    before, props = tree(seeded), dead_props(seeded, "d", "f.txt")
    root, use = BODIES_WITH_AN_ENTITY[method]
    body = _attacks(listener.getsockname()[1])[attack](root, use)
    started = time.monotonic()
    reply = exchange(seeded.url, method, "/d/f.txt", {"Depth": "0", "Content-Type": "text/xml"}, body)
    assert time.monotonic() - started < 2
    assert_refused(seeded, reply)
    assert len(reply.body) < 4096 and b"root:" not in reply.body and b"lollol" not in reply.body
    assert nobody_connected(listener)
    assert tree(seeded) == before and dead_props(seeded, "d", "f.txt") == props
    assert requests.put(seeded.url + "d/f.txt", data=PRECIOUS, timeout=30).status_code == 204  # not locked
    assert_still_serving(seeded)


DTD_BODIES = {
    "PROPFIND": PROPFIND,
    "PROPPATCH": PROPPATCH,
    "LOCK": LOCKINFO,
}


def _with_dtd(body: bytes, kind: str, port: int) -> bytes:
    root = re.search(rb"<(D:\w+)", body)
    assert root is not None
    dtd = (
        b"<!DOCTYPE %s [<!ELEMENT %s ANY>]>" % (root.group(1), root.group(1))
        if kind == "internal"
        else b'<!DOCTYPE %s SYSTEM "http://127.0.0.1:%d/x.dtd">' % (root.group(1), port)
    )
    return body.replace(b"?>", b"?>" + dtd, 1)


@pytest.mark.parametrize("method", METHODS)
def test_an_external_dtd_is_never_fetched(
    seeded: RunningServer, listener: socket.socket, method: str
) -> None:
    """A DTD that names a URL must not make the server connect anywhere (SSRF)."""
    body = _with_dtd(DTD_BODIES[method], "external", listener.getsockname()[1])
    reply = exchange(seeded.url, method, "/top.txt", {"Depth": "0", "Content-Type": "text/xml"}, body)
    assert reply.status < 500, str(reply)
    assert_no_trace(seeded, reply)
    assert nobody_connected(listener)
    assert_still_serving(seeded)


@pytest.mark.parametrize("kind", ["internal", "external"])
@pytest.mark.parametrize("method", METHODS)
def test_a_dtd_in_a_request_body_is_refused(
    seeded: RunningServer, listener: socket.socket, method: str, kind: str
) -> None:
    """No WebDAV client sends a DTD; a body with one is refused like any entity trick,
    and nothing is set or locked by it."""
    before, props = tree(seeded), dead_props(seeded, "d", "f.txt")
    body = _with_dtd(DTD_BODIES[method], kind, listener.getsockname()[1])
    reply = exchange(seeded.url, method, "/d/f.txt", {"Depth": "0", "Content-Type": "text/xml"}, body)
    if method == "LOCK" and "lock-token" in reply.headers:
        exchange(seeded.url, "UNLOCK", "/d/f.txt", {"Lock-Token": reply.headers["lock-token"]})
    assert_refused(seeded, reply)
    assert tree(seeded) == before and dead_props(seeded, "d", "f.txt") == props
    assert_still_serving(seeded)


# --- 6. malformed XML -------------------------------------------------------------------

MALFORMED = {
    "truncated": b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/>',
    "not-xml": b"hello, this is not XML",
    "json": b'{"propfind": "allprop"}',
    "binary": bytes(range(256)),
    "whitespace": b"   \r\n  ",
    "wrong-namespace": b'<?xml version="1.0"?><D:propfind xmlns:D="urn:not-dav"><D:allprop/></D:propfind>',
    "no-namespace": b'<?xml version="1.0"?><propfind><allprop/></propfind>',
    "wrong-root": b'<?xml version="1.0"?><D:multistatus xmlns:D="DAV:"><D:allprop/></D:multistatus>',
    "unbound-prefix": b'<?xml version="1.0"?><D:propfind><D:allprop/></D:propfind>',
    "unknown-encoding": b'<?xml version="1.0" encoding="klingon"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>',
    "invalid-utf8": b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:\xff\xfe/></D:propfind>',
}


@pytest.mark.parametrize("method", METHODS)
def test_malformed_xml_is_400(seeded: RunningServer, method: str) -> None:
    """Broken or foreign XML is the client's mistake: 400, nothing set or locked."""
    before, props = tree(seeded), dead_props(seeded, "d", "f.txt")
    wrong = []
    for name, body in MALFORMED.items():
        reply = exchange(seeded.url, method, "/d/f.txt", {"Depth": "0", "Content-Type": "text/xml"}, body)
        assert_no_trace(seeded, reply)
        if reply.status != 400:
            wrong.append(f"{name}: {reply}")
    assert not wrong, wrong
    assert tree(seeded) == before and dead_props(seeded, "d", "f.txt") == props
    assert requests.put(seeded.url + "d/f.txt", data=PRECIOUS, timeout=30).status_code == 204  # not locked
    assert_still_serving(seeded)


def test_xml_errors_do_not_echo_python_exceptions(seeded: RunningServer, listener: socket.socket) -> None:
    """wsgidav puts the parser's exception (``ParseError(ExpatError(…))``,
    ``EntitiesForbidden(name=…, system_id='file:///etc/passwd')``) into the 400 page; an
    error body says what is wrong with the request, not which Python class noticed."""
    port = listener.getsockname()[1]
    bodies = dict(MALFORMED)
    for attack, build in _attacks(port).items():
        bodies[attack] = build(*BODIES_WITH_AN_ENTITY["PROPFIND"])
    leaks = []
    for method in METHODS:
        for name, body in bodies.items():
            reply = exchange(seeded.url, method, "/d/f.txt", {"Depth": "0", "Content-Type": "text/xml"}, body)
            if EXCEPTION_TEXT.search(reply.body):
                found = EXCEPTION_TEXT.search(reply.body)
                assert found is not None
                leaks.append(
                    f"{method} {name}: {reply.status} …{reply.body[found.start() : found.start() + 120]!r}"
                )
    assert not leaks, "\n".join(leaks)


# --- 7. paths ---------------------------------------------------------------------------

ESCAPING = [
    b"/../escaped.txt",
    b"/d/../../escaped.txt",
    b"/%2e%2e/escaped.txt",
    b"/d/%2E%2E/%2e%2e/escaped.txt",
    b"/d/.%2e/%2e./escaped.txt",
    b"/d/%2e%2e/../%2E./escaped.txt",
]


def test_dot_dot_that_escapes_the_share_is_400_and_creates_nothing(seeded: RunningServer) -> None:
    """``..`` above the root, raw, percent-encoded or mixed, is a 400 for every method;
    nothing is created, read or deleted."""
    before = tree(seeded)
    for target in ESCAPING:
        for method, body in (
            ("GET", None),
            ("PUT", b"EVIL"),
            ("MKCOL", None),
            ("DELETE", None),
            ("PROPFIND", None),
        ):
            headers: dict[str, str | bytes] = {"Depth": "0"} if method == "PROPFIND" else {}
            reply = exchange(seeded.url, method, target, headers, body)
            assert_refused(seeded, reply, 400)
        move = exchange(seeded.url, "MOVE", target, {"Destination": seeded.url + "moved.txt"})
        assert_refused(seeded, move, 400)
    assert tree(seeded) == before
    assert_still_serving(seeded)


def test_dot_dot_inside_the_share_is_refused(seeded: RunningServer) -> None:
    """The hardening list: path normalisation *rejects* ``..``. davfs (wsgidav) resolves
    a ``..`` that stays inside the share instead, so ``PUT /d/../x`` writes ``/x`` and a
    Destination of ``/d/../x`` lands there too. Every ``..`` should be a 400."""
    before = tree(seeded)
    wrong = []
    for target in (b"/d/../new.txt", b"/d/%2e%2e/new.txt", b"/d/.%2E/new.txt", b"/d/../d/f.txt"):
        for method, body in (("GET", None), ("PUT", b"EVIL"), ("MKCOL", None), ("DELETE", None)):
            reply = exchange(seeded.url, method, target, {}, body)
            assert_no_trace(seeded, reply)
            if reply.status != 400:
                wrong.append(f"{method} {target.decode()}: {reply.status}")
            _restore(seeded, before)
    for destination in ("/d/../new.txt", seeded.url + "d/%2e%2e/new.txt"):
        for method in ("COPY", "MOVE"):
            reply = exchange(seeded.url, method, "/top.txt", {"Destination": destination})
            if reply.status != 400:
                wrong.append(f"{method} Destination {destination}: {reply.status}")
            _restore(seeded, before)
    assert not wrong, "\n".join(wrong)
    assert tree(seeded) == before


def test_nul_anywhere_in_a_path_is_400(seeded: RunningServer) -> None:
    """NUL ends a name in C; no name may contain it, in any segment, for any method."""
    before = tree(seeded)
    for target in (b"/d%00/f.txt", b"/d/f.txt%00", b"/d/%00", b"/%00/x", b"/d/f.txt%00.exe"):
        for method, body in (
            ("GET", None),
            ("PUT", b"EVIL"),
            ("MKCOL", None),
            ("DELETE", None),
            ("PROPFIND", None),
        ):
            headers: dict[str, str | bytes] = {"Depth": "0"} if method == "PROPFIND" else {}
            assert_refused(seeded, exchange(seeded.url, method, target, headers, body), 400)
    assert tree(seeded) == before
    assert_still_serving(seeded)


def test_invalid_utf8_in_a_path_is_400(seeded: RunningServer) -> None:
    """Percent-escapes that decode to invalid UTF-8 (stray bytes, overlong ``..``, a
    surrogate, Latin-1) must be a 400 and create nothing. Today wsgidav raises
    UnicodeDecodeError, cheroot cannot send its 500 and drops the connection."""
    before = tree(seeded)
    wrong = []
    for target in (b"/%ff%fe", b"/d/%c0%ae%c0%ae/x", b"/d/%ed%a0%80.txt", b"/d/caf%e9.txt"):
        for method, body in (("GET", None), ("PUT", b"EVIL"), ("MKCOL", None)):
            reply = exchange(seeded.url, method, target, {}, body)
            assert_no_trace(seeded, reply)
            if reply.status != 400:
                wrong.append(f"{method} {target.decode()}: {reply.status or 'no response'}")
    assert not wrong, "\n".join(wrong)
    assert tree(seeded) == before
    assert_still_serving(seeded)


def test_invalid_utf8_raw_in_the_request_line_is_400(seeded: RunningServer) -> None:
    """Raw (unescaped) non-ASCII bytes in the request line are refused by cheroot."""
    before = tree(seeded)
    for method, body in (("GET", None), ("PUT", b"EVIL")):
        assert_refused(seeded, exchange(seeded.url, method, b"/d/\xff\xfe", {}, body), 400)
    assert tree(seeded) == before
    assert_still_serving(seeded)


def test_names_longer_than_255_bytes_are_refused(seeded: RunningServer) -> None:
    """Every client file system (NTFS, APFS, ext4 under davfs2 or rclone) stops at 255
    per name; a longer one can be stored but never copied back out. davfs accepts them
    (a name is bounded only by the 64 KiB request head)."""
    longest = "é" * 127 + "x"  # 255 bytes of UTF-8
    assert requests.put(seeded.url + longest, data=b"ok", timeout=30).status_code == 201
    wrong = []
    for first in "pmc":  # a name of its own for PUT, MKCOL and COPY
        for name in (first + "a" * 255, first + "é" * 127 + "x", first + "b" * 3999):
            size = len(name.encode())
            if first == "c":
                destination = seeded.url + "d/" + quote(name)
                reply = exchange(seeded.url, "COPY", "/top.txt", {"Destination": destination})
            else:
                method, body = ("PUT", b"EVIL") if first == "p" else ("MKCOL", None)
                reply = exchange(seeded.url, method, "/d/" + quote(name), {}, body)
            assert_no_trace(seeded, reply)
            if reply.status not in (400, 414):
                wrong.append(
                    f"{'PUT' if first == 'p' else 'MKCOL' if first == 'm' else 'COPY'} {size}-byte name: {reply}"
                )
    assert not wrong, "\n".join(wrong)
    assert {p for p in tree(seeded) if p.startswith("/d/")} == {"/d/f.txt"}


def test_backslashes_in_names_are_refused(seeded: RunningServer) -> None:
    """Windows reads ``\\`` as a folder separator: a name like ``..\\..\\x.bat`` listed to
    Explorer or synced by rclone on Windows walks out of its folder on the client. davfs
    stores such names as they come (raw or as %5C)."""
    wrong = []
    for target in (b"/d\\..\\x.txt", b"/d/a%5c..%5cb.txt", b"/d/a\\b.txt"):
        for method, body in (("PUT", b"EVIL"), ("MKCOL", None)):
            path = target.replace(b".txt", b"-folder") if method == "MKCOL" else target
            reply = exchange(seeded.url, method, path, {}, body)
            assert_no_trace(seeded, reply)
            if reply.status not in (400, 404):
                wrong.append(f"{method} {path.decode()}: {reply.status}")
    assert not wrong, "\n".join(wrong)
    assert not [p for p in tree(seeded) if "\\" in p]


# --- 8. Destination ---------------------------------------------------------------------


def _restore(server: RunningServer, before: dict[str, tuple[bool, int, str | None]]) -> None:
    """Undo what a request that should have been refused did to the seeded tree."""
    catalog = server.app.drive.catalog
    for path in sorted(set(tree(server)) - set(before), key=len):
        node = catalog.tree.resolve(path.strip("/").split("/"))
        if node is not None:
            catalog.tree.delete(node, recursive=True)
    if "/d/f.txt" not in tree(server) or tree(server)["/d/f.txt"] != before["/d/f.txt"]:
        requests.put(server.url + "d/f.txt", data=PRECIOUS, timeout=30)
        requests.request("PROPPATCH", server.url + "d/f.txt", data=SEED_PROPPATCH, timeout=30)
    if "/top.txt" not in tree(server) or tree(server)["/top.txt"] != before["/top.txt"]:
        requests.put(server.url + "top.txt", data=b"top", timeout=30)


def _destination_refused(server: RunningServer, destination: str | bytes, *allowed: int) -> list[str]:
    """COPY and MOVE of /d/f.txt to ``destination``; what went wrong, if anything."""
    before = tree(server)
    wrong = []
    for method in ("COPY", "MOVE"):
        reply = exchange(server.url, method, "/d/f.txt", {"Destination": destination})
        assert_no_trace(server, reply)
        if reply.status not in allowed:
            wrong.append(f"{method} Destination {destination!r}: {reply}")
        if tree(server) != before:
            wrong.append(
                f"{method} Destination {destination!r} changed {sorted(set(tree(server)) ^ set(before))}"
            )
            _restore(server, before)
    return wrong


def test_destination_on_another_server_is_refused(seeded: RunningServer) -> None:
    """RFC 4918 9.8.5/9.9.4: another server (host, port or scheme) is 502 Bad Gateway;
    400 or 403 would do as well. The source stays, nothing appears."""
    host, port = _address(seeded.url)
    wrong: list[str] = []
    for destination in (
        "http://evil.example/x",
        "http://evil.example/d/g.txt",
        f"https://{host}:{port}/g.txt",
        f"http://{host}:{port + 1}/g.txt",
        f"ftp://{host}:{port}/g.txt",
        f"http://localhost:{port}/g.txt",
        "//evil.example/g.txt",
    ):
        wrong += _destination_refused(seeded, destination, 400, 403, 502)
    assert not wrong, "\n".join(wrong)
    assert requests.get(seeded.url + "d/f.txt", timeout=30).content == PRECIOUS
    assert_still_serving(seeded)


def test_destination_escaping_the_share_is_400(seeded: RunningServer) -> None:
    """A Destination whose ``..`` climbs above the root, absolute or path-only."""
    base = seeded.url.rstrip("/")
    wrong: list[str] = []
    for destination in (
        "/../g.txt",
        "../g.txt",
        f"{base}/../g.txt",
        f"{base}/d/../../g.txt",
        f"{base}/%2e%2e/g.txt",
        f"{base}/d/%2E%2E/.%2e/g.txt",
    ):
        wrong += _destination_refused(seeded, destination, 400)
    assert not wrong, "\n".join(wrong)
    assert_still_serving(seeded)


def test_destination_with_nul_is_400(seeded: RunningServer) -> None:
    base = seeded.url.rstrip("/")
    wrong: list[str] = []
    for destination in (f"{base}/g%00.txt", f"{base}/d%00/g.txt", "/g.txt%00"):
        wrong += _destination_refused(seeded, destination, 400)
    assert not wrong, "\n".join(wrong)
    assert_still_serving(seeded)


def test_destination_that_is_not_a_url_is_400(seeded: RunningServer) -> None:
    """RFC 4918 10.3: Destination is an absolute URI or an absolute path. davfs takes
    ``g.txt`` or ``not a url`` as a name in the root (201), an empty one as a 409, a
    URL without a host as a path, a bad port as another host (502)."""
    host, port = _address(seeded.url)
    wrong: list[str] = []
    for destination in (
        "g.txt",
        "not a url",
        "",
        "   ",
        "http:///g.txt",
        "\x7f",
        f"http://{host}:{port}:abc/g.txt",
    ):
        wrong += _destination_refused(seeded, destination, 400)
    assert not wrong, "\n".join(wrong)
    assert_still_serving(seeded)


def test_an_unparsable_destination_is_not_a_500(seeded: RunningServer) -> None:
    """``http://[::1/g`` makes urllib raise ValueError; that is the client's 400, not an
    internal error whose page names the exception."""
    wrong = _destination_refused(seeded, "http://[::1/g", 400)
    assert not wrong, "\n".join(wrong)
    reply = exchange(seeded.url, "COPY", "/d/f.txt", {"Destination": "http://[::1/g"})
    assert not EXCEPTION_TEXT.search(reply.body), str(reply)
    assert_still_serving(seeded)


def test_destination_with_invalid_utf8_is_400(seeded: RunningServer) -> None:
    """``%ff%fe`` in a Destination is decoded with replacement characters today, so COPY
    creates a file named ``\\ufffd\\ufffd`` that no client asked for."""
    base = seeded.url.rstrip("/")
    wrong: list[str] = []
    for destination in (f"{base}/%ff%fe", f"{base}/caf%e9.txt", f"{base}/%c0%ae%c0%ae/g.txt"):
        wrong += _destination_refused(seeded, destination, 400)
    assert not wrong, "\n".join(wrong)
    assert not [p for p in tree(seeded) if "\ufffd" in p]


# --- 9. read-only users and COPY/MOVE destinations ----------------------------------------

RW, RO = HTTPDigestAuth("rw", "pw"), HTTPDigestAuth("ro", "pw")


@pytest.fixture
def shared(start_server: Callable[..., RunningServer]) -> RunningServer:
    server = start_server(users={"rw": "pw", "ro": {"password": "pw", "read_only": True}})
    assert requests.request("MKCOL", server.url + "d", auth=RW, timeout=30).status_code == 201
    assert requests.put(server.url + "d/f.txt", data=PRECIOUS, auth=RW, timeout=30).status_code == 201
    assert requests.put(server.url + "other.txt", data=b"other", auth=RW, timeout=30).status_code == 201
    return server


def test_a_read_only_user_cannot_copy_or_move_to_any_destination(shared: RunningServer) -> None:
    """Reading the source is allowed, so the destination side must be what refuses:
    a new name, an existing file (Overwrite: T), a folder tree, another host, a path
    above the root; nothing appears, nothing changes, the source stays."""
    before = tree(shared)
    url = shared.url
    wrong = []
    cases = [
        ("COPY", "d/f.txt", {"Destination": url + "new.txt"}),
        ("COPY", "d/f.txt", {"Destination": url + "other.txt", "Overwrite": "T"}),
        ("COPY", "d", {"Destination": url + "d2"}),
        ("COPY", "d/f.txt", {"Destination": url + "d/../new.txt"}),
        ("COPY", "d/f.txt", {"Destination": "http://evil.example/new.txt"}),
        ("MOVE", "d/f.txt", {"Destination": url + "new.txt"}),
        ("MOVE", "d/f.txt", {"Destination": url + "other.txt", "Overwrite": "T"}),
        ("MOVE", "d", {"Destination": url + "d2"}),
        ("MOVE", "other.txt", {"Destination": url + "d/f.txt", "Overwrite": "T"}),
    ]
    for method, source, headers in cases:
        reply = requests.request(method, url + source, headers=headers, auth=RO, timeout=30)
        assert_no_trace(shared, reply)
        destination = headers["Destination"]
        allowed = (403, 502) if "evil" in destination else (400, 403) if ".." in destination else (403,)
        if reply.status_code not in allowed:
            wrong.append(f"{method} {source} → {headers}: {reply.status_code}")
    assert not wrong, "\n".join(wrong)
    assert tree(shared) == before
    assert requests.get(url + "d/f.txt", auth=RO, timeout=30).content == PRECIOUS
    copy = requests.request(
        "COPY", url + "d/f.txt", headers={"Destination": url + "new.txt"}, auth=RW, timeout=30
    )
    assert copy.status_code == 201  # the same request from a writer works
    anonymous = requests.request(
        "COPY", url + "d/f.txt", headers={"Destination": url + "anon.txt"}, timeout=30
    )
    assert anonymous.status_code == 401
    assert shared.app.drive.catalog.tree.resolve(["anon.txt"]) is None
    assert_still_serving(shared, RW)


# --- 10. error paths without internals ----------------------------------------------------


def test_bad_headers_never_cause_a_5xx_or_a_traceback(seeded: RunningServer) -> None:
    """Every header davfs parses, given garbage: the answer is < 500, without traceback
    or exception text, and the data is unchanged."""
    base = seeded.url.rstrip("/")
    before, props = tree(seeded), dead_props(seeded, "d", "f.txt")
    cases: list[tuple[str, str, dict[str, str | bytes], bytes | None, tuple[int, ...]]] = [
        ("PROPFIND", "/d", {"Depth": "2"}, None, (400,)),
        ("PROPFIND", "/d", {"Depth": "abc"}, None, (400,)),
        ("PROPFIND", "/d", {"Depth": ""}, None, (400,)),
        ("PROPFIND", "/d", {"Depth": "-1"}, None, (400,)),
        ("PROPFIND", "/d/f.txt", {"Depth": "9" * 30}, None, (400,)),
        ("COPY", "/d", {"Depth": "1", "Destination": f"{base}/e"}, None, (400,)),
        ("COPY", "/d", {"Depth": "abc", "Destination": f"{base}/e"}, None, (400,)),
        ("MOVE", "/d", {"Depth": "0", "Destination": f"{base}/e"}, None, (400,)),
        ("DELETE", "/d", {"Depth": "0"}, None, (400,)),
        ("LOCK", "/d", {"Depth": "1"}, LOCKINFO, (400,)),
        ("GET", "/d/f.txt", {"Range": "bytes=abc"}, None, ()),
        ("GET", "/d/f.txt", {"Range": "bytes=-"}, None, ()),
        ("GET", "/d/f.txt", {"Range": "bytes=5-2"}, None, ()),
        ("GET", "/d/f.txt", {"Range": "items=0-1"}, None, ()),
        ("GET", "/d/f.txt", {"Range": "bytes=--5"}, None, ()),
        ("GET", "/d/f.txt", {"Range": "bytes=1-2-3"}, None, ()),
        ("GET", "/d/f.txt", {"Range": "bytes=" + "9" * 30 + "-"}, None, ()),
        ("GET", "/d/f.txt", {"Range": "bytes=" + ",".join(["0-0"] * 2000)}, None, ()),
        ("GET", "/d/f.txt", {"Range": "bytes=0-1", "If-Range": "garbage"}, None, ()),
        ("GET", "/d/f.txt", {"If-Modified-Since": "Mon, 32 Foo 99999 99:99:99 GMT"}, None, ()),
        ("GET", "/d/f.txt", {"If-None-Match": '"' * 100}, None, ()),
        ("COPY", "/d/f.txt", {"Destination": f"{base}/top.txt", "Overwrite": "X"}, None, (400,)),
        ("COPY", "/d/f.txt", {"Destination": f"{base}/top.txt", "Overwrite": ""}, None, (400,)),
        ("MOVE", "/d/f.txt", {"Destination": f"{base}/top.txt", "Overwrite": "yes"}, None, (400,)),
        ("MOVE", "/d/f.txt", {"Destination": f"{base}/new.txt", "Overwrite": "TT"}, None, (400,)),
        ("PUT", "/d/f.txt", {"Content-Range": "bytes 0-2/3"}, b"NEW", (400,)),
        ("PUT", "/d/f.txt", {"Content-Range": "garbage"}, b"NEW", (400,)),
        ("PUT", "/d/f.txt", {"Content-Range": "bytes 5-7/*"}, b"NEW", (400,)),
        ("PUT", "/d/f.txt", {"Content-Length": "abc"}, None, (400,)),
        ("PUT", "/d/f.txt", {"Content-Length": "-1"}, None, (400,)),
        ("PROPFIND", "/d/f.txt", {"Content-Length": "-5", "Depth": "0"}, None, (400,)),
        ("PUT", "/d/f.txt", {"If-Match": "garbage"}, b"NEW", (412,)),
        ("PUT", "/d/f.txt", {"If-Match": '"'}, b"NEW", (412,)),
        ("PUT", "/d/f.txt", {"Transfer-Encoding": "chunked", "X-Expected-Entity-Length": "-1"}, None, (400,)),
        ("PROPPATCH", "/d/f.txt", {"Content-Length": "0"}, None, (400,)),
        ("MKCOL", "/newcol", {"Content-Type": "text/xml"}, b"<x/>", (415,)),
        ("UNLOCK", "/d/f.txt", {}, None, (400,)),
        ("UNLOCK", "/d/f.txt", {"Lock-Token": "garbage"}, None, (400, 409)),
        ("UNLOCK", "/d/f.txt", {"Lock-Token": "<opaquelocktoken:nope>"}, None, (400, 409)),
        ("LOCK", "/d/f.txt", {"If": "(<opaquelocktoken:nope>)"}, None, (412,)),
        ("LOCK", "/d/f.txt", {}, None, (400,)),
        ("LOCK", "/d/f.txt", {"Timeout": "Second-abc, garbage"}, LOCKINFO, ()),
        ("GET", "/:dir_browser/../../etc/passwd", {}, None, (400, 404)),
        ("GET", "/:dir_browser/%2e%2e/%2e%2e/%2e%2e/etc/passwd", {}, None, (400, 404)),
        ("PUT", "/.davfs/x", {}, b"x", (403, 404)),
    ]
    wrong = []
    for method, target, headers, body, allowed in cases:
        reply = exchange(seeded.url, method, target, headers, body)
        assert_no_trace(seeded, reply)
        if "lock-token" in reply.headers:
            exchange(seeded.url, "UNLOCK", target, {"Lock-Token": reply.headers["lock-token"]})
        if (
            not 0 < reply.status < 500
            or (allowed and reply.status not in allowed)
            or EXCEPTION_TEXT.search(reply.body)
        ):
            wrong.append(f"{method} {target} {headers}: {reply}")
        assert b"root:" not in reply.body
    assert not wrong, "\n".join(wrong)
    assert tree(seeded) == before and dead_props(seeded, "d", "f.txt") == props
    assert_still_serving(seeded)


@pytest.mark.parametrize(
    "method", ["POST", "PATCH", "TRACE", "CONNECT", "SEARCH", "REPORT", "ACL", "BIND", "FOO"]
)
def test_methods_davfs_does_not_serve_are_405(seeded: RunningServer, method: str) -> None:
    """TRACE in particular must not echo the request (and its Authorization) back."""
    before = tree(seeded)
    reply = exchange(seeded.url, method, "/d/f.txt", {"Authorization": "Basic c2VjcmV0OnNlY3JldA=="}, b"<x/>")
    assert_refused(seeded, reply, 405, 501)
    assert b"c2VjcmV0" not in reply.body
    assert tree(seeded) == before
    assert_still_serving(seeded)


def test_a_malformed_if_header_is_400_and_changes_nothing(seeded: RunningServer) -> None:
    """An If header makes a write conditional (RFC 4918 10.4); one that cannot be parsed
    must not be read as "no condition". wsgidav ignores it and the PUT or DELETE goes
    through."""
    wrong = []
    for method, target, value in (
        ("PUT", "/d/f.txt", "(<garbage"),
        ("PUT", "/d/f.txt", "garbage"),
        ("PUT", "/d/f.txt", "(["),
        ("PUT", "/d/f.txt", "<" + "a" * 5000),
        ("DELETE", "/d/f.txt", "(<opaquelocktoken:x>"),
        ("DELETE", "/top.txt", f"<{seeded.url}top.txt> (<opaquelocktoken:x>"),
    ):
        before = tree(seeded)
        reply = exchange(seeded.url, method, target, {"If": value}, b"EVIL" if method == "PUT" else None)
        assert_no_trace(seeded, reply)
        if reply.status != 400 or tree(seeded) != before:
            wrong.append(f"{method} {target} If: {value[:40]}: {reply.status}")
        requests.put(seeded.url + "d/f.txt", data=PRECIOUS, timeout=30)
        requests.put(seeded.url + "top.txt", data=b"top", timeout=30)
    assert not wrong, "\n".join(wrong)


def test_a_range_with_a_huge_number_is_not_a_500(seeded: RunningServer) -> None:
    """A 5000-digit range bound hits Python's int conversion limit; that must be a 416
    (or the whole file), not an internal error naming the ValueError."""
    reply = exchange(seeded.url, "GET", "/d/f.txt", {"Range": "bytes=" + "9" * 5000 + "-"})
    assert reply.status in (200, 206, 400, 416), str(reply)
    assert not EXCEPTION_TEXT.search(reply.body), str(reply)
    assert_still_serving(seeded)


# --- 11. malformed credentials -----------------------------------------------------------


def test_malformed_authorization_is_401_and_changes_nothing(shared: RunningServer) -> None:
    """Whatever arrives in Authorization, the answer is a 401 (or 413 for a head over
    64 KiB): never a 500, never a write."""
    challenge = requests.get(shared.url, timeout=30).headers["WWW-Authenticate"]
    nonce = re.search(r'nonce="([^"]+)"', challenge)
    assert nonce is not None

    def digest(**fields: str | None) -> str:
        values: dict[str, str | None] = {
            "username": '"rw"',
            "realm": '"davfs"',
            "nonce": f'"{nonce.group(1)}"',
            "uri": '"/d/f.txt"',
            "algorithm": "MD5",
            "response": '"' + "0" * 32 + '"',
            "qop": "auth",
            "nc": "00000001",
            "cnonce": '"abc"',
        }
        values.update(fields)
        return "Digest " + ", ".join(f"{k}={v}" for k, v in values.items() if v is not None)

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    headers = [
        "Digest",
        digest(username=None),
        digest(nonce=None),
        digest(response=None),
        digest(uri=None),
        digest(realm=None),
        digest(nonce='"bogus"'),
        digest(nonce=f'"{b64(b"9" * 5000 + b" x")}"'),
        digest(nonce=f'"{b64(bytes(range(256)))}"'),
        digest(qop="auth-int"),
        digest(nc="9" * 5000),
        digest(algorithm="SHA-999"),
        digest(realm='"other"'),
        digest(username='"mallory"'),
        digest(username='"rw\x00"'),
        digest(uri='"/elsewhere"'),
        digest(uri='"/../../etc/passwd"'),
        digest(cnonce='"' + "a" * 30000 + '"'),
        'Digest username="rw, realm="davfs',
        "Basic !!!",
        "Basic " + b64(b"rwpw"),
        "Basic " + b64(b"r\xe9:p\xff"),
        "Basic ",
        "Basic " + b64(b"rw:wrong"),
        "Basic " + b64(b":pw"),
        "Basic " + b64(b"rw\x00:pw"),
        "Basic " + b64(b"rw:" + b"a" * 30000),
        "Bearer abc",
        "NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAGAbEdAAAADw==",
        "garbage",
        "",
    ]
    before = tree(shared)
    wrong = []
    for value in headers:
        for method, body in (("GET", None), ("PUT", b"EVIL"), ("DELETE", None)):
            reply = exchange(shared.url, method, "/d/f.txt", {"Authorization": value.encode("latin-1")}, body)
            assert_no_trace(shared, reply)
            if reply.status != 401:
                wrong.append(f"{method} Authorization: {value[:60]!r}: {reply}")
    huge = exchange(
        shared.url, "PUT", "/d/f.txt", {"Authorization": "Basic " + "A" * (MAX_REQUEST_HEAD + 10)}, b"x"
    )
    assert_refused(shared, huge, 413, 431)
    assert not wrong, "\n".join(wrong)
    assert tree(shared) == before
    assert_still_serving(shared, RW)


def test_a_digest_uri_that_is_not_a_url_is_401_not_500(shared: RunningServer) -> None:
    """The Digest ``uri`` field goes to urlsplit, which raises on ``http://[::1/x``;
    an unauthenticated client must not be able to provoke a 500 (and a logged traceback)."""
    challenge = requests.get(shared.url, timeout=30).headers["WWW-Authenticate"]
    nonce = re.search(r'nonce="([^"]+)"', challenge)
    assert nonce is not None
    value = (
        f'Digest username="rw", realm="davfs", nonce="{nonce.group(1)}", uri="http://[::1/x", '
        f'algorithm=MD5, response="{"0" * 32}", qop=auth, nc=00000001, cnonce="abc"'
    )
    reply = exchange(shared.url, "GET", "/d/f.txt", {"Authorization": value})
    assert reply.status == 401, str(reply)
    assert not EXCEPTION_TEXT.search(reply.body)
    assert_still_serving(shared, RW)


# --- 12. secrets and the log -------------------------------------------------------------

SECRET = "s3cret-pw"


def _secret_forms() -> list[str]:
    """The password, its Basic encoding and its stored hash (HA1)."""
    return [
        SECRET,
        base64.b64encode(f"alice:{SECRET}".encode()).decode(),
        password_hash("alice", SECRET),
    ]


@pytest.fixture
def logged_server(server_process: Callable[..., ServerProcess]) -> ServerProcess:
    return server_process(env={"DAVFS_USERS": f'{{"alice": "{SECRET}"}}', "DAVFS_ANONYMOUS": "false"})


def test_passwords_and_their_hashes_never_reach_the_log(logged_server: ServerProcess) -> None:
    """Right and wrong passwords, Basic and Digest, malformed headers, an error: the log
    names requests and users but never a password, its Basic encoding or its HA1."""
    url = logged_server.url
    basic, digest = HTTPBasicAuth("alice", SECRET), HTTPDigestAuth("alice", SECRET)
    assert requests.put(url + "f.txt", data=b"x", auth=basic, timeout=30).status_code == 201
    assert requests.put(url + "g.txt", data=b"x", auth=digest, timeout=30).status_code == 201
    assert requests.get(url + "missing.txt", auth=digest, timeout=30).status_code == 404
    for wrong in (
        HTTPBasicAuth("alice", SECRET + "-wrong"),
        HTTPDigestAuth("alice", SECRET + "-wrong"),
        HTTPBasicAuth("bob", SECRET),
        HTTPDigestAuth("bob", SECRET),
        HTTPBasicAuth("alice", SECRET + "é"),
    ):
        assert requests.get(url + "f.txt", auth=wrong, timeout=30).status_code == 401
    encoded = _secret_forms()[1]
    for value in (
        "Basic " + encoded + "!",
        "Basic " + encoded[:-2],
        f'Digest username="alice", password="{SECRET}"',
    ):
        assert requests.get(url + "f.txt", headers={"Authorization": value}, timeout=30).status_code == 401
    host = url.removeprefix("http://")
    copy = requests.request(
        "COPY",
        url + "f.txt",
        headers={"Destination": f"http://alice:{SECRET}@{host}h.txt"},
        auth=digest,
        timeout=30,
    )
    assert copy.status_code in (201, 400, 403, 502)
    assert requests.get(url + f"f.txt?token={SECRET}", auth=digest, timeout=30).status_code == 200
    time.sleep(0.5)  # access lines are written when the response is closed
    logged_server.stop()
    log = logged_server.log()
    assert "method=PUT" in log  # the log is there, and it is the access log
    for secret in _secret_forms():
        assert secret not in log, f"{secret!r} is in the server log"


def test_a_password_typed_as_the_user_name_is_not_logged(logged_server: ServerProcess) -> None:
    """People type the password into the user field; wsgidav's warning for the failed
    login quotes the user name as sent (``failed for user 's3cret-pw'``), so the password
    lands in the log. Unknown user names should not be logged verbatim."""
    for auth in (HTTPBasicAuth(SECRET, SECRET), HTTPDigestAuth(SECRET, "x")):
        assert requests.get(logged_server.url, auth=auth, timeout=30).status_code == 401
    time.sleep(0.5)
    logged_server.stop()
    log = logged_server.log()
    leaked = [line for line in log.splitlines() if SECRET in line]
    assert not leaked, "\n".join(leaked)
