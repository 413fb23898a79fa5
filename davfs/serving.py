"""cheroot, extended through its own classes, so that no client can hold the server
without logging in.

cheroot hands every accepted connection straight to a worker thread, which then blocks
reading the request head; 64 silent connections stopped the server, and a slowloris (a
partial head, then silence) pinned a worker per connection. Here:

- :class:`HeadFirstConnections` keeps a connection in cheroot's selector until its
  whole request head has arrived (looked at with ``MSG_PEEK``, so cheroot still parses
  it from the socket), and closes one whose head takes longer than
  :data:`HEAD_TIMEOUT`. Idle and slow connections cost a file descriptor, not a thread.
  Past :data:`MAX_WAITING` waiting connections the longest-idle ones are closed.
  (A TLS connection cannot be peeked at: it goes to a worker when readable, which then
  gives the head at most :data:`HEAD_TIMEOUT`.)
- :class:`DavfsRequest` answers ``Expect: 100-continue`` only when the application
  first reads the body, that is after authentication (cheroot answered it at once, so
  an anonymous client got to send its body), and closes the connection rather than
  reading a body the application left unread beyond :data:`DRAIN_LIMIT` (cheroot read
  and discarded 200 MiB of an unauthenticated PUT before answering 401), or any unread
  chunked body (whose rest cheroot would parse as the next request).
"""

from __future__ import annotations

import logging
import resource
import selectors
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

from cheroot import errors, wsgi
from cheroot.connections import ConnectionManager
from cheroot.server import HTTPConnection, HTTPRequest
from cheroot.ssl.builtin import BuiltinSSLAdapter

log = logging.getLogger(__name__)

HEAD_TIMEOUT = 10.0
"""Seconds a request head may take from its first byte (real clients: milliseconds)."""
MAX_HEAD = 64 * 1024
"""Largest request line plus headers; Windows' longest If: headers are far below this."""
MAX_WAITING = 4096
"""Connections waiting for a request at once; past it the longest-idle are closed."""
DRAIN_LIMIT = 64 * 1024
"""Unread request body the server still reads to keep a connection; more: it closes."""
_RECHECK = 0.05
"""Seconds before a connection with a partial head is looked at again."""
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _ContinueOnRead:
    """The connection's input for one request: sends ``100 Continue`` before the first
    read of the body, if the client waits for it."""

    def __init__(self, stream: Any, request: DavfsRequest) -> None:
        self._stream = stream
        self._request = request

    def _go_ahead(self) -> None:
        request = self._request
        if request.waits_for_continue and not request.sent_headers:
            request.waits_for_continue = False
            try:
                request.conn.wfile.write(_CONTINUE)
            except OSError as exc:
                if exc.args[0] not in errors.socket_errors_to_ignore:
                    raise

    def read(self, size: int = -1) -> bytes:
        self._go_ahead()
        return bytes(self._stream.read(size))

    def readline(self, size: int = -1) -> bytes:
        self._go_ahead()
        return bytes(self._stream.readline(size))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _HoldExpect:
    """cheroot's header reader, taking ``Expect: 100-continue`` out of what cheroot
    sees, so cheroot does not answer it, and noting it on the request."""

    def __init__(self, reader: Any, request: DavfsRequest) -> None:
        self._reader = reader
        self._request = request

    def __call__(self, rfile: Any, hdict: dict[bytes, bytes] | None = None) -> dict[bytes, bytes]:
        headers: dict[bytes, bytes] = self._reader(rfile, hdict)
        if headers.get(b"Expect", b"").lower() == b"100-continue":
            del headers[b"Expect"]
            self._request.waits_for_continue = True
        return headers


class DavfsRequest(HTTPRequest):
    """cheroot's request, with 100-continue and unread bodies handled as above."""

    def __init__(self, server: Any, conn: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(server, conn, *args, **kwargs)
        self.waits_for_continue = False
        self.header_reader = _HoldExpect(self.header_reader, self)

    def parse_request(self) -> None:
        """Read the head within :data:`HEAD_TIMEOUT`, then allow the body the server's
        (long) timeout."""
        self.conn.socket.settimeout(HEAD_TIMEOUT)
        try:
            super().parse_request()
        finally:
            self.conn.socket.settimeout(self.server.timeout)

    def respond(self) -> None:
        stream = self.conn.rfile
        self.conn.rfile = _ContinueOnRead(stream, self)
        try:
            super().respond()
        finally:
            self.conn.rfile = stream

    def send_headers(self) -> None:
        if self.waits_for_continue or _unread(self):
            self.close_connection = True  # never read (or wait for) a body nobody wants
        super().send_headers()


def _unread(request: DavfsRequest) -> bool:
    rfile = getattr(request, "rfile", None)
    if request.chunked_read:
        return rfile is not None and not getattr(rfile, "closed", True)
    return int(getattr(rfile, "remaining", 0) or 0) > DRAIN_LIMIT


class DavfsConnection(HTTPConnection):
    RequestHandlerClass = DavfsRequest


class HeadFirstConnections(ConnectionManager):
    """cheroot's connection manager, handing a connection to a worker only once its
    request head is complete (see the module docstring)."""

    if TYPE_CHECKING:  # what cheroot's stubs leave out of ConnectionManager
        _selector: Any
        _stop_requested: bool

        def _remove_invalid_sockets(self) -> None: ...
        def _from_server_socket(self, server_socket: Any) -> Any: ...
        def _expire(self, threshold: float) -> None: ...

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        self._parked: list[tuple[float, Any]] = []
        self._leaving = False

    def leave(self) -> None:
        """End the serving loop with KeyboardInterrupt at its next turn (flags only)."""
        self._leaving = True
        self._stop_requested = True

    def put(self, conn: Any) -> None:
        """A connection waiting for its next request (new, or kept alive)."""
        conn.last_used = time.time()
        conn.davfs_head_since = None
        sock = conn.socket
        if conn.rfile.has_data() or (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            self.server.process_conn(conn)  # already read off the socket: the selector cannot see it
        else:
            self._selector.register(conn.socket.fileno(), selectors.EVENT_READ, data=conn)

    def _run(self, expiration_interval: float) -> None:
        last_expiration_check = time.time()
        while not self._stop_requested:
            timeout = _RECHECK if self._parked else expiration_interval
            try:
                active = self._selector.select(timeout=timeout)
            except OSError:
                self._remove_invalid_sockets()
                continue
            for fd, conn in active:
                if conn is self.server:
                    accepted = self._from_server_socket(self.server.socket)
                    if accepted is not None:
                        self._make_room()
                        self.put(accepted)
                else:
                    self._selector.unregister(fd)
                    self._ready(conn)
            self._unpark()
            now = time.time()
            if now - last_expiration_check > expiration_interval:
                self._expire(threshold=now - self.server.timeout)
                last_expiration_check = now
        if self._leaving:
            raise KeyboardInterrupt

    def _ready(self, conn: Any) -> None:
        """A waiting connection has bytes (or an end): a worker's, once the head is in."""
        head = _peek(conn.socket)
        if head is None or head == b"" or b"\r\n\r\n" in head or len(head) >= MAX_HEAD:
            self.server.process_conn(conn)  # TLS, the peer's close, a whole head, or too long
            return
        now = time.time()
        started = conn.davfs_head_since = getattr(conn, "davfs_head_since", None) or now
        if now - started > HEAD_TIMEOUT:
            log.info(
                "closed a connection from %s: its request head took over %.0f s", _peer(conn), HEAD_TIMEOUT
            )
            conn.close()
            return
        self._parked.append((now + _RECHECK, conn))

    def _unpark(self) -> None:
        now = time.time()
        due = [conn for when, conn in self._parked if when <= now]
        self._parked = [(when, conn) for when, conn in self._parked if when > now]
        for conn in due:
            try:
                self._selector.register(conn.socket.fileno(), selectors.EVENT_READ, data=conn)
            except (OSError, ValueError):
                conn.close()

    def _make_room(self) -> None:
        """Close the longest-idle waiting connections past :data:`MAX_WAITING`."""
        waiting = [
            (conn.last_used, fd, conn) for fd, conn in self._selector.connections if conn is not self.server
        ]
        excess = len(waiting) + len(self._parked) - MAX_WAITING + 1
        if excess <= 0:
            return
        for _, fd, conn in sorted(waiting, key=lambda item: item[0])[:excess]:
            self._selector.unregister(fd)
            conn.close()

    def close(self) -> None:
        for _, conn in self._parked:
            conn.close()
        self._parked = []
        super().close()


def _peek(sock: Any) -> bytes | None:
    """What has arrived of the next request, left in place; None if it cannot be seen."""
    if isinstance(sock, ssl.SSLSocket):
        return None
    try:
        return bytes(sock.recv(MAX_HEAD, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return b"\r\n\r\n"  # nothing after all: let the worker find out
    except OSError:
        return b""


def _peer(conn: Any) -> str:
    return str(getattr(conn, "remote_addr", None) or "?")


class DavfsServer(wsgi.Server):
    """cheroot's WSGI server with davfs's connections and requests."""

    ConnectionClass = DavfsConnection

    def request_stop(self) -> None:
        """Make :meth:`serve` raise KeyboardInterrupt at the next turn of its loop (it
        only sets flags, so a signal handler may call it); :meth:`stop` then shuts down."""
        connections: HeadFirstConnections = getattr(self, "_connections")  # noqa: B009
        connections.leave()

    def prepare(self) -> None:
        _more_file_descriptors()
        super().prepare()
        cheroots: Any = getattr(self, "_connections")  # noqa: B009 - untyped in cheroot's stubs
        self._connections = HeadFirstConnections(self)
        cheroots._selector.close()


class ShortHandshakeSSLAdapter(BuiltinSSLAdapter):
    """cheroot's TLS adapter with the handshake held to :data:`HEAD_TIMEOUT` (it runs
    on the thread that accepts connections)."""

    def wrap(self, sock: socket.socket) -> Any:
        sock.settimeout(HEAD_TIMEOUT)  # cheroot sets its own timeout on the wrapped socket
        return super().wrap(sock)  # type: ignore[no-untyped-call]


def _more_file_descriptors() -> None:
    """Raise the open-files limit to its maximum: every waiting connection holds one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(
                resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard)
            )
        except (ValueError, OSError):
            pass
