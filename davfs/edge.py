"""What every request passes first: a request id, one access-log line, the health
endpoint a load balancer polls, and the checks of the target that must come before
anything else reads the request (:mod:`davfs.http_policy`).

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

import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from davfs.drive import Drive
from davfs.http_policy import FACTS, RESERVED_PREFIX, plain_response, request_facts, target_problem

log = logging.getLogger("davfs.access")

HEALTH_PATH = RESERVED_PREFIX + "/health"
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Edge:
    def __init__(self, app: WsgiApp, drive: Drive) -> None:
        self._app = app
        self._drive = drive

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        offered = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = offered if _SANE_ID.fullmatch(offered) else secrets.token_hex(8)
        environ["davfs.request_id"] = request_id
        started = time.monotonic()
        line = {
            "id": request_id,
            "method": environ.get("REQUEST_METHOD", ""),
            "path": _readable(environ.get("PATH_INFO", "")),
            "status": "",
            "in": environ.get("CONTENT_LENGTH") or "-",
        }

        def respond(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            line["status"] = status.split(" ", 1)[0]
            line["user"] = environ.get("wsgidav.auth.user_name") or "-"
            return start_response(status, [*headers, ("X-Request-ID", request_id)], exc_info)

        path = environ.get("PATH_INFO", "")
        if path == RESERVED_PREFIX or path.startswith(RESERVED_PREFIX + "/"):
            return self._reserved(path, respond)
        facts = target_problem(environ) or request_facts(environ)
        if isinstance(facts, str):
            return _Logged(plain_response(respond, "400 Bad Request", facts), line, started)
        environ[FACTS] = facts
        return _Logged(self._app(environ, respond), line, started)

    def _reserved(self, path: str, respond: Callable[..., Any]) -> list[bytes]:
        if path != HEALTH_PATH:
            body = b"404 Not Found: /.davfs/ is reserved for davfs itself\n"
            respond("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]
        try:
            status, state = "200 OK", self._drive.health()
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


def _readable(raw_path: str) -> str:
    """A WSGI path (its bytes as Latin-1 characters) as the name users see: UTF-8."""
    return raw_path.encode("latin-1", "replace").decode("utf-8", "replace")


class _Logged:
    """The response body, passed through; logs the request's line when it is closed."""

    def __init__(self, body: Iterable[bytes], line: dict[str, str], started: float) -> None:
        self._body = body
        self._line = line
        self._started = started
        self._sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for piece in self._body:
            self._sent += len(piece)
            yield piece

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
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
