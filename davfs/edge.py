"""What every request passes first: the checks no later layer can do right, a request
id, one access-log line, and the health endpoint a load balancer polls.

Checks, before wsgidav sees the request (which would otherwise quietly resolve ``..``,
crash on a path that is not UTF-8, or leave a chunked body unread for the connection's
next "request" to be parsed from): the path and any ``Destination`` must be absolute,
UTF-8 and pass :func:`~davfs.catalog.split_path`; a request body other than a PUT's
is read here, whole, up to :data:`MAX_XML_BODY` (chunked or not; more is a 413 and the
connection is closed) and refused if it carries a DTD; an unread chunked PUT body is
drained after the response, as cheroot does itself for bodies with a Content-Length.

:class:`Edge` wraps the whole wsgidav application. It gives each request an id (the
client's ``X-Request-ID`` if it is a sane token, else a new one), returns it in the
response and logs one ``key=value`` line per request when its body is done: method,
path, status, bytes, milliseconds, user. Credentials never appear: headers are not
logged. ``/.davfs/health`` answers without authentication and is not part of the share
(nothing under ``/.davfs/`` is): 200 when the catalog answers, 503 when it does not.

The body iterator wraps wsgidav's and keeps only plain values captured before the body
started (first rule: it touches no environ, no catalog, no thread-local).
"""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any
from urllib.parse import unquote_to_bytes, urlsplit

from davfs.catalog import Catalog, split_path
from davfs.errors import BadPath

log = logging.getLogger("davfs.access")

HEALTH_PATH = "/.davfs/health"
RESERVED_PREFIX = "/.davfs"
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_XML_BODY = 1024 * 1024
"""Largest request body other than a PUT's (PROPFIND, PROPPATCH, LOCK are small XML);
wsgidav reads them whole into memory."""
_DTD = re.compile(rb"<!DOCTYPE", re.IGNORECASE)
_HUGE_NUMBER = re.compile(r"\d{16,}")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Edge:
    def __init__(self, app: WsgiApp, catalog: Catalog) -> None:
        self._app = app
        self._catalog = catalog

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        offered = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = offered if _SANE_ID.fullmatch(offered) else secrets.token_hex(8)
        environ["davfs.request_id"] = request_id
        started = time.monotonic()
        line = {
            "id": request_id,
            "method": environ.get("REQUEST_METHOD", ""),
            "path": environ.get("PATH_INFO", ""),
            "status": "",
            "in": environ.get("CONTENT_LENGTH") or "-",
        }

        def respond(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            line["status"] = status.split(" ", 1)[0]
            line["user"] = environ.get("wsgidav.auth.user_name") or "-"
            return start_response(status, [*headers, ("X-Request-ID", request_id)], exc_info)

        path = line["path"]
        if path == RESERVED_PREFIX or path.startswith(RESERVED_PREFIX + "/"):
            return self._reserved(path, respond)
        problem = _request_problem(environ) or _buffer_body(environ)
        if problem is not None:
            status, message = problem
            body = f"{status}: {message}\n".encode()
            respond(
                status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
            )
            return _Logged([body], line, started)
        chunked = _is_chunked(environ)
        unread = environ["wsgi.input"] if chunked else None
        return _Logged(self._app(environ, respond), line, started, drain=unread)

    def _reserved(self, path: str, respond: Callable[..., Any]) -> list[bytes]:
        if path != HEALTH_PATH:
            body = b"404 Not Found: /.davfs/ is reserved for davfs itself\n"
            respond("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]
        try:
            schema = self._catalog.schema_version()
            status, state = "200 OK", {"status": "ok", "catalog_schema": schema}
        except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
            status, state = (
                "503 Service Unavailable",
                {"status": "unavailable", "catalog": type(exc).__name__},
            )
        body = json.dumps(state).encode()
        respond(
            status,
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [body]


def _request_problem(environ: dict[str, Any]) -> tuple[str, str] | None:
    """Why the request line or headers are unacceptable, if they are."""
    path = environ.get("PATH_INFO", "")
    problem = _path_problem(path.encode("latin-1", "replace"))
    if problem is not None:
        return "400 Bad Request", problem
    destination = environ.get("HTTP_DESTINATION")
    if environ["REQUEST_METHOD"] in ("COPY", "MOVE") and destination is not None:
        problem = _destination_problem(destination)
        if problem is not None:
            return "400 Bad Request", problem
    if_header = environ.get("HTTP_IF")
    if if_header is not None and not _valid_if_header(if_header):
        return "400 Bad Request", "the If header is malformed (RFC 4918 section 10.4)"
    if _HUGE_NUMBER.search(environ.get("HTTP_RANGE", "")):
        del environ["HTTP_RANGE"]  # not a range any file has: ignored, as RFC 9110 allows
    return None


def _path_problem(raw: bytes) -> str | None:
    """``raw``: the percent-decoded path bytes as they came."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "the path is not valid UTF-8"
    try:
        split_path(text)
    except BadPath as exc:
        return str(exc)
    return None


def _destination_problem(destination: str) -> str | None:
    try:
        parts = urlsplit(destination)
    except ValueError:
        return "the Destination header is not a URL"
    if parts.scheme and (parts.scheme not in ("http", "https") or not parts.netloc):
        return "the Destination header must be an http(s) URL of this server"
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return "the Destination header has an invalid port"
    if not parts.path.startswith("/"):
        return "the Destination header must be an absolute URL or path"
    return _path_problem(unquote_to_bytes(parts.path))


_IF_TOKEN = re.compile(r"\s*(<[^<>\s]+>|\(|\)|\[[^\[\]]*\]|Not\b)", re.IGNORECASE)


def _valid_if_header(value: str) -> bool:
    """RFC 4918's If grammar: optional <resource> tags, each followed by one or more
    lists of (conditions), a condition being [Not] <state-token> or [etag]. wsgidav
    accepts anything and ignores what it cannot read, which would turn a conditional
    request into an unconditional one."""
    tokens: list[str] = []
    position = 0
    while position < len(value.rstrip()):
        match = _IF_TOKEN.match(value, position)
        if match is None:
            return False
        tokens.append(match.group(1))
        position = match.end()
    lists = 0
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.startswith("<"):  # a resource tag must be followed by a list
            if index + 1 >= len(tokens) or tokens[index + 1] != "(":
                return False
            index += 1
            continue
        if token != "(":
            return False
        index += 1
        conditions = 0
        while index < len(tokens) and tokens[index] != ")":
            if tokens[index].lower() == "not":
                index += 1
            if index >= len(tokens) or not tokens[index].startswith(("<", "[")):
                return False
            conditions += 1
            index += 1
        if index >= len(tokens) or conditions == 0:
            return False
        index += 1  # the ")"
        lists += 1
    return lists > 0


def _is_chunked(environ: dict[str, Any]) -> bool:
    return "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()


def _buffer_body(environ: dict[str, Any]) -> tuple[str, str] | None:
    """Read a non-PUT request body whole (bounded), so wsgidav gets it with a length
    whether it came chunked or not, and refuse XML that declares a DTD."""
    if environ["REQUEST_METHOD"] == "PUT":
        return None
    length = environ.get("CONTENT_LENGTH", "").strip()
    chunked = _is_chunked(environ)
    if not chunked and (not length or length == "0"):
        return None
    too_big = (
        "413 Request Entity Too Large",
        f"request bodies other than PUT are limited to {MAX_XML_BODY} bytes",
    )
    if not chunked:
        if not (length.isascii() and length.isdigit()):
            return "400 Bad Request", "Content-Length is not a number"
        if int(length) > MAX_XML_BODY:
            return too_big  # cheroot closes the connection after a 413: the body is never read
    stream: IO[bytes] = environ["wsgi.input"]
    body = stream.read(MAX_XML_BODY + 1) if chunked else stream.read(int(length))
    if len(body) > MAX_XML_BODY:
        return too_big
    if _DTD.search(body):
        return "400 Bad Request", "XML with a document type declaration (DTD) is not accepted"
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    return None


class _Logged:
    """The response body, passed through; logs the request's line when it is closed."""

    def __init__(
        self, body: Iterable[bytes], line: dict[str, str], started: float, *, drain: IO[bytes] | None = None
    ) -> None:
        self._body = body
        self._line = line
        self._started = started
        self._sent = 0
        self._drain = drain
        """A chunked request body the app may not have read to its end: read after the
        response, or cheroot would parse what is left as the next request."""

    def __iter__(self) -> Iterator[bytes]:
        for piece in self._body:
            self._sent += len(piece)
            yield piece

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
            if self._drain is not None:
                while self._drain.read(1024 * 1024):
                    pass
        finally:
            line = self._line
            milliseconds = (time.monotonic() - self._started) * 1000
            log.info(
                "id=%s method=%s path=%s status=%s in=%s out=%d ms=%.0f user=%s",
                line["id"],
                line["method"],
                json.dumps(line["path"], ensure_ascii=False),
                line["status"] or "-",
                line["in"],
                self._sent,
                milliseconds,
                line.get("user", "-"),
            )
