"""HTTP policy in one place: what davfs accepts of a request, what it reads from it, and
how it answers errors.

Two stages, because one must run before authentication and one after:

- :func:`target_problem` and :func:`request_facts`, called by the :class:`~davfs.edge.Edge`
  on the raw request: the path and any ``Destination`` must be absolute, UTF-8 and
  pass :func:`~davfs.paths.split_path` (wsgidav would quietly resolve ``..`` or crash
  on bytes that are not UTF-8). Nothing is read from the body. What the provider needs
  later (the Destination's path, ``X-OC-Mtime``, the announced size) is parsed here,
  once, into :class:`RequestFacts` kept in the environ.
- :class:`RequestPolicy`, a wsgidav middleware right after the authenticator: a body
  other than a PUT's is read here, whole, up to :data:`MAX_XML_BODY` (chunked or not;
  more is a 413 and the connection is closed) and refused if it carries a DTD; a
  malformed ``If`` header, ``X-OC-Mtime`` or Content-Length is a 400; COPY and MOVE
  need a Destination, not one above their source; LOCK timeouts are bounded.

:class:`ErrorPages` replaces wsgidav's ``ErrorPrinter``: an error page says the status and
the reason, never a Python exception; an error after the response has started (a block
that fails verification mid-download) cuts the connection with one log line, so the
client sees a short body, never wrong bytes and never a second status line.
"""

from __future__ import annotations

import errno
import io
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import quote, unquote, unquote_to_bytes, urlsplit

from wsgidav import util
from wsgidav.dav_error import (
    ERROR_RESPONSES,
    HTTP_BAD_REQUEST,
    HTTP_INTERNAL_ERROR,
    HTTP_NO_CONTENT,
    HTTP_NOT_MODIFIED,
    DAVError,
    as_DAVError,
    get_http_status_string,
)
from wsgidav.mw.base_mw import BaseMiddleware

from davfs.errors import BadPath, DavfsError, IntegrityError, StoreUnavailable
from davfs.paths import split_path

log = logging.getLogger(__name__)

METHODS = (
    "OPTIONS",
    "GET",
    "HEAD",
    "PROPFIND",
    "PUT",
    "DELETE",
    "MKCOL",
    "COPY",
    "MOVE",
    "PROPPATCH",
    "LOCK",
    "UNLOCK",
)
"""Every method the share answers; others get 405 with this list in Allow."""
FACTS = "davfs.request"
RESERVED_PREFIX = "/.davfs"
"""Not part of the share: davfs's own endpoints (health) live here."""
DIR_BROWSER_ASSETS = "/:dir_browser"
"""Where wsgidav serves the folder listing's stylesheet and icons."""
"""The environ key of a request's :class:`RequestFacts`."""
MAX_XML_BODY = 1024 * 1024
"""Largest request body other than a PUT's (PROPFIND, PROPPATCH, LOCK are small XML);
wsgidav reads them whole into memory."""
LATEST_TIMESTAMP = 253402300799
"""9999-12-31T23:59:59Z: the latest time every client and Python's time functions show."""
LOCK_TIMEOUT_DEFAULT = 3600
"""Seconds a lock lasts when the client asks for Infinite or nothing (wsgidav: a week)."""
LOCK_TIMEOUT_MAX = 24 * 3600
"""Longest lock granted (wsgidav: four weeks): a client that crashed holding a lock must
not keep a file read-only for days. Clients that need longer refresh their locks."""
_DTD = re.compile(rb"<!DOCTYPE", re.IGNORECASE)
_TAG = re.compile(rb"<(/)?[A-Za-z_][^<>]*?(/)?>")
MAX_XML_DEPTH = 64
"""Nesting of a request's XML (the deepest davfs's clients send is 5)."""
_HUGE_NUMBER = re.compile(r"\d{16,}")
_IF_TOKEN = re.compile(r"\s*(<[^<>\s]+>|\(|\)|\[[^\[\]]*\]|Not\b)", re.IGNORECASE)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the provider reads from a request, parsed once."""

    destination: str | None = None
    """COPY/MOVE: the Destination as a path of this server, percent-decoded."""
    mtime: float | None = None
    """PUT: the modification time the client asks for (``X-OC-Mtime``)."""
    expected_size: int | None = None
    """PUT: the size the client announced: Content-Length, or Finder's
    ``X-Expected-Entity-Length`` on a chunked upload (None: unknown)."""


def facts_of(environ: dict[str, Any]) -> RequestFacts:
    facts = environ.get(FACTS)
    return facts if isinstance(facts, RequestFacts) else RequestFacts()


# --- before authentication: the target ---------------------------------------------


def target_problem(environ: dict[str, Any]) -> str | None:
    """Why the request's path or Destination is unacceptable, if it is (a 400)."""
    problem = _path_problem(environ.get("PATH_INFO", "").encode("latin-1", "replace"))
    if problem is not None:
        return problem
    path = environ.get("PATH_INFO", "")
    if path == DIR_BROWSER_ASSETS or path.startswith(DIR_BROWSER_ASSETS + "/"):
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            return "the folder listing's own files are read-only"
    destination = environ.get("HTTP_DESTINATION")
    if environ["REQUEST_METHOD"] in ("COPY", "MOVE") and destination is not None:
        return _destination_problem(destination)
    return None


def request_facts(environ: dict[str, Any]) -> RequestFacts | str:
    """The request's :class:`RequestFacts`, or why its headers are malformed (a 400)."""
    method = environ["REQUEST_METHOD"]
    destination = None
    if method in ("COPY", "MOVE") and environ.get("HTTP_DESTINATION", "").strip():
        destination = unquote(urlsplit(environ["HTTP_DESTINATION"].strip()).path)
    mtime = expected = None
    if method == "PUT":
        text = environ.get("HTTP_X_OC_MTIME")
        if text is not None:
            if not (text.isascii() and text.isdigit() and int(text) <= LATEST_TIMESTAMP):
                return "X-OC-Mtime must be seconds since 1970"
            mtime = float(text)
        chunked = _is_chunked(environ)
        announced = (
            environ.get("HTTP_X_EXPECTED_ENTITY_LENGTH" if chunked else "CONTENT_LENGTH") or ""
        ).strip()
        if announced:
            if not (announced.isascii() and announced.isdigit()):
                return f"bad content length {announced!r}"
            expected = int(announced)
    return RequestFacts(destination, mtime, expected)


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
    path = unquote(parts.path)
    if path.rstrip("/") == RESERVED_PREFIX or path.startswith(RESERVED_PREFIX + "/"):
        return f"{RESERVED_PREFIX}/ is reserved for davfs itself"
    return _path_problem(unquote_to_bytes(parts.path))


# --- after authentication: the rest ------------------------------------------------


class RequestPolicy(BaseMiddleware):  # type: ignore[misc]
    """The checks that may read the request body or depend on the method; they run for
    authenticated requests only, so nobody without a login makes davfs read a body."""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        problem = _method_problem(environ) or _buffer_body(environ)
        if problem is not None:
            return plain_response(start_response, *problem)
        if "HTTP_IF" in environ:
            environ["HTTP_IF"] = if_header_with_paths(environ["HTTP_IF"])
        if environ["REQUEST_METHOD"] == "PUT":
            environ["wsgi.input"] = _UploadBody(environ["wsgi.input"])
        if environ["REQUEST_METHOD"] == "LOCK":
            environ["HTTP_TIMEOUT"] = bounded_lock_timeout(environ.get("HTTP_TIMEOUT", ""))
        if _HUGE_NUMBER.search(environ.get("HTTP_RANGE", "")):
            del environ["HTTP_RANGE"]  # not a range any file has: ignored, as RFC 9110 allows
        body: Iterable[bytes] = self.next_app(environ, start_response)
        return body


def _method_problem(environ: dict[str, Any]) -> tuple[str, str] | None:
    method = environ["REQUEST_METHOD"]
    if method not in METHODS:  # wsgidav logs an ERROR for every one
        return "405 Method Not Allowed", f"{method[:20]!r} is not a method of this server"
    if_header = environ.get("HTTP_IF")
    if if_header is not None and not valid_if_header(if_header):
        return "400 Bad Request", "the If header is malformed (RFC 4918 section 10.4)"
    if method in ("MOVE", "COPY"):
        destination = facts_of(environ).destination
        if destination is None:
            return "400 Bad Request", "COPY and MOVE need a Destination header"
        if environ["PATH_INFO"].rstrip("/").startswith(destination.rstrip("/") + "/"):
            # wsgidav refuses a destination inside the source, but would delete a
            # destination that contains the source (Overwrite: T) before moving it.
            return "403 Forbidden", "the destination contains the source"
    return None


def _if_tokens(value: str) -> list[str] | None:
    tokens: list[str] = []
    position = 0
    while position < len(value.rstrip()):
        match = _IF_TOKEN.match(value, position)
        if match is None:
            return None
        tokens.append(match.group(1))
        position = match.end()
    return tokens


def valid_if_header(value: str) -> bool:
    """RFC 4918's If grammar: optional <resource> tags, each followed by one or more
    lists of (conditions), a condition being [Not] <state-token> or [etag]. wsgidav
    accepts anything and ignores what it cannot read, which would turn a conditional
    request into an unconditional one."""
    tokens = _if_tokens(value)
    if tokens is None:
        return False
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


def if_header_with_paths(value: str) -> str:
    """The (valid) If header with every resource tag as the percent-encoded path
    wsgidav compares it with, in both its folder and file spelling. Clients tag with
    absolute URLs (davfs2, cadaver, neon), which wsgidav never matches: it would skip
    their conditions and let the request through unconditionally."""
    tagged: list[tuple[str | None, list[str]]] = []  # (resource tag, its tokens)
    depth = 0
    for token in _if_tokens(value) or []:
        if token.startswith("<") and depth == 0:
            tagged.append((token, []))
            continue
        if not tagged:
            tagged.append((None, []))
        tagged[-1][1].append(token)
        depth += (token == "(") - (token == ")")
    parts: list[str] = []
    for tag, lists in tagged:
        if tag is None:
            parts.append(" ".join(lists))
            continue
        path = quote(unquote(urlsplit(tag[1:-1]).path)).rstrip("/") or "/"
        for spelling in sorted({path, path + "/"} if path != "/" else {path}):
            parts.append(f"<{spelling}> {' '.join(lists)}")
    return " ".join(parts)


def bounded_lock_timeout(header: str) -> str:
    """The Timeout header of a LOCK, held to :data:`LOCK_TIMEOUT_MAX`."""
    for choice in header.split(","):
        kind, _, seconds = choice.strip().partition("-")
        if kind.lower() == "second" and seconds.isascii() and seconds.isdigit() and len(seconds) < 16:
            return f"Second-{max(1, min(int(seconds), LOCK_TIMEOUT_MAX))}"
    return f"Second-{LOCK_TIMEOUT_DEFAULT}"


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
    if _nesting(body) > MAX_XML_DEPTH:
        return "400 Bad Request", f"XML nested deeper than {MAX_XML_DEPTH} elements is not accepted"
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    return None


def _nesting(body: bytes) -> int:
    """How deep the elements of an XML body nest (tags counted; wsgidav's parsing and
    serializing recurse per level)."""
    depth = deepest = 0
    for tag in _TAG.finditer(body):
        if tag.group(1):
            depth -= 1
        elif not tag.group(2):
            depth += 1
            deepest = max(deepest, depth)
    return deepest


class _UploadBody:
    """A PUT's body as wsgidav reads it: a body cut short or malformed by the client (a
    chunked body with a bad chunk, a dropped connection) is the client's error, a 400,
    not a 500 with a traceback."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)
        except (ValueError, OverflowError, OSError) as exc:
            raise DAVError(
                HTTP_BAD_REQUEST, context_info=f"the upload was cut short or malformed ({exc})"
            ) from None

    def readline(self, size: int = -1) -> bytes:
        try:
            return self._stream.readline(size)
        except (ValueError, OverflowError, OSError) as exc:
            raise DAVError(
                HTTP_BAD_REQUEST, context_info=f"the upload was cut short or malformed ({exc})"
            ) from None


class ClientMistakes(logging.Filter):
    """wsgidav logs every failed PUT body with a full traceback ("PUT: byte copy
    failed"), also when the client cut the upload short or sent a malformed body; that
    is one line at INFO here (the writer has logged what was aborted)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, DAVError) and error.value < 500:
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "PUT refused: %s", (error.context_info or error.value,)
        return True


def plain_response(start_response: Callable[..., Any], status: str, message: str) -> list[bytes]:
    """A short text answer: the status and why."""
    body = f"{status}: {message}\n".encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    if status.startswith("405"):
        headers.append(("Allow", ", ".join(METHODS)))
    start_response(status, headers)
    return [body]


# --- errors ------------------------------------------------------------------------


class ErrorPages(BaseMiddleware):  # type: ignore[misc]
    """Turns exceptions into answers (see the module docstring); in wsgidav's stack in
    place of its ``ErrorPrinter``."""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        held = util.SubAppStartResponse()
        started = False
        try:
            body = self.next_app(environ, held)
            try:
                for piece in body:
                    if not started:
                        start_response(held.status, held.response_headers, held.exc_info)
                        started = True
                    yield piece
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
            if not started:
                start_response(held.status, held.response_headers, held.exc_info)
            return
        except GeneratorExit:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes an answer
            error = exc if isinstance(exc, DAVError) else _as_dav_error(exc)
        if started:
            # Part of the body is out: nothing can be said any more but a cut.
            log.warning(
                "%s %s cut short: %s", environ["REQUEST_METHOD"], environ["PATH_INFO"], _reason(error)
            )
            raise ConnectionAbortedError(errno.ECONNABORTED, "response cut short")
        yield from _error_page(error, start_response)


@contextmanager
def dav_errors() -> Iterator[None]:
    """Translate davfs errors into wsgidav's DAVError: the single place where a davfs
    error gets its HTTP status (and ``Retry-After`` when the store asks to wait)."""
    try:
        yield
    except DAVError:
        raise
    except DavfsError as exc:
        raise _from_davfs(exc) from exc


def _from_davfs(exc: DavfsError) -> DAVError:
    if exc.http_status >= 500 and not isinstance(exc, IntegrityError):  # the reader logged it
        log.error("%s", exc)
    headers = [("Retry-After", str(exc.retry_after))] if isinstance(exc, StoreUnavailable) else None
    return DAVError(exc.http_status, context_info=str(exc), add_headers=headers)


def _as_dav_error(exc: Exception) -> DAVError:
    if isinstance(exc, DavfsError):
        return _from_davfs(exc)
    if isinstance(exc, OSError) and exc.errno == errno.EACCES:
        return DAVError(403, exc.strerror)
    log.exception("internal error")
    return as_DAVError(exc)


def _reason(error: DAVError) -> str:
    return str(error.context_info or ERROR_RESPONSES.get(error.value, "") or error.value)


def _error_page(error: DAVError, start_response: Callable[..., Any]) -> Iterator[bytes]:
    status = get_http_status_string(error)
    if error.value == HTTP_INTERNAL_ERROR and error.src_exception is not None:
        log.error("500 from %r", error.src_exception)
    if error.value in (HTTP_NOT_MODIFIED, HTTP_NO_CONTENT):
        start_response(status, [("Content-Length", "0"), ("Date", util.get_rfc1123_time())])
        yield b""
        return
    if error.err_condition:  # an RFC 4918 precondition: wsgidav's XML is right
        content_type, body = error.get_response_page()
    else:
        reason = error.context_info or ERROR_RESPONSES.get(error.value, "")
        content_type = "text/plain; charset=utf-8"
        body = (f"{status}: {reason}\n" if reason else f"{status}\n").encode()
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Date", util.get_rfc1123_time()),
    ]
    start_response(status, headers + (error.add_headers or []))
    yield body if error.add_body else b""
