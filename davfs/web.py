"""The pages people use in a browser to undo: the trash (``<folder>/?davfs=trash``)
and a file's previous versions (``<file>?davfs=versions``), each with restore buttons.

They sit behind the same login as the share (this layer runs right after
authentication; read-only users get the pages but not the buttons' POST). A restore is
a POST, accepted only from a page of this server: the form carries a token derived
from the user's name and a secret in the catalog (another site cannot read it), and
the browser's ``Origin`` (or ``Referer``, or ``Sec-Fetch-Site``) must name this host.
Browsers resend Basic and Digest credentials to any page that posts here, so both
checks matter.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable
from html import escape
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from wsgidav.mw.base_mw import BaseMiddleware

from davfs.catalog.trash import TrashItem
from davfs.drive import Drive
from davfs.errors import DavfsError
from davfs.http_policy import DIR_BROWSER_ASSETS, plain_response

VIEWS = ("trash", "versions")
MAX_FORM = 4096
"""Bytes a restore form may send (it sends two short fields)."""


class UndoPages(BaseMiddleware):  # type: ignore[misc]
    """Answers ``?davfs=trash`` and ``?davfs=versions``; everything else passes on."""

    def __init__(self, wsgidav_app: Any, next_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, next_app, config)
        self._key: bytes | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        query_string = environ.get("QUERY_STRING", "")
        query = parse_qs(query_string) if "davfs=" in query_string else {}  # every request passes here
        view = (query.get("davfs") or [""])[0]
        method = environ["REQUEST_METHOD"]
        if view not in VIEWS or method not in ("GET", "HEAD", "POST"):
            body: Iterable[bytes] = self.next_app(environ, start_response)
            return body
        drive: Drive = self.wsgidav_app.provider_map["/"].drive
        path = environ["PATH_INFO"] or "/"
        user = environ.get("wsgidav.auth.user_name") or ""
        token = self._token(drive, user)
        try:
            if method == "POST":
                return self._restore(environ, start_response, drive, view, path, token)
            page = (
                _trash_page(drive, path, token, query)
                if view == "trash"
                else _versions_page(drive, path, token, query)
            )
        except DavfsError as exc:
            return plain_response(
                start_response, f"{exc.http_status} {HTTPStatus(exc.http_status).phrase}", str(exc)
            )
        data = page.encode("utf-8")
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Content-Length", str(len(data))),
                ("Cache-Control", "no-store"),
                ("X-Frame-Options", "DENY"),  # no clicking its buttons through another site's frame
                ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"),
            ],
        )
        return [] if method == "HEAD" else [data]

    def _token(self, drive: Drive, user: str) -> str:
        if self._key is None:
            self._key = drive.catalog.db.secret("web-forms")
        return hmac.new(self._key, f"restore\0{user}".encode(), hashlib.sha256).hexdigest()

    def _restore(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        drive: Drive,
        view: str,
        path: str,
        token: str,
    ) -> list[bytes]:
        if not _same_origin(environ):
            return plain_response(
                start_response, "403 Forbidden", "a restore must come from this server's own page"
            )
        form = _form(environ)
        if form is None:
            return plain_response(start_response, "400 Bad Request", "the form is missing or too big")
        if not hmac.compare_digest(form.get("token", ""), token):
            return plain_response(
                start_response, "403 Forbidden", "the form's token is wrong (reload the page)"
            )
        if view == "trash":
            item = form.get("item", "")
            if not item.isdigit():
                return plain_response(start_response, "400 Bad Request", "which trash item?")
            at = drive.catalog.trash.restore(int(item))
            back = {"davfs": "trash", "restored": at}
        else:
            number = form.get("number", "")
            if not number.isdigit():
                return plain_response(start_response, "400 Bad Request", "which version?")
            drive.restore_version(path, int(number))
            back = {"davfs": "versions", "restored": number}
        location = quote(path) + "?" + urlencode(back)
        start_response("303 See Other", [("Location", location), ("Content-Length", "0")])
        return []


def _same_origin(environ: dict[str, Any]) -> bool:
    host = environ.get("HTTP_HOST", "")
    for header in ("HTTP_ORIGIN", "HTTP_REFERER"):
        value = environ.get(header)
        if value is not None:
            return bool(host) and urlsplit(value).netloc == host
    return environ.get("HTTP_SEC_FETCH_SITE", "same-origin") in ("same-origin", "none")


def _form(environ: dict[str, Any]) -> dict[str, str] | None:
    length = environ.get("CONTENT_LENGTH") or ""
    if not length.isdigit() or int(length) > MAX_FORM:
        return None
    body = environ["wsgi.input"].read(int(length))
    return {key: values[0] for key, values in parse_qs(body.decode("utf-8", "replace")).items()}


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} – davfs</title>"
        f'<link rel="stylesheet" href="{DIR_BROWSER_ASSETS}/style.css"></head><body>'
        f'<header><span class="brand">davfs</span><h1>{escape(title)}</h1>'
        f'<nav><a href="./">Back to the folder</a></nav></header>{body}</body></html>'
    )


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _button(token: str, field: str, value: int, label: str) -> str:
    return (
        f'<form method="post" class="restore"><input type="hidden" name="token" value="{token}">'
        f'<input type="hidden" name="{field}" value="{value}">'
        f'<button type="submit">{escape(label)}</button></form>'
    )


def _kind(item: TrashItem) -> str:
    if not item.is_dir:
        return "File"
    return f"Folder, {item.files} file{'' if item.files == 1 else 's'}"


def _trash_page(drive: Drive, folder: str, token: str, query: dict[str, list[str]]) -> str:
    items = drive.trash_items(folder)
    rows = "".join(
        f'<tr class="{"directory" if item.is_dir else "file"}">'
        f"<td>{escape(item.path)}{'/' if item.is_dir else ''}</td>"
        f"<td>{_kind(item)}</td>"
        f'<td class="size" title="{item.size:,d} bytes">{item.size:,d}</td><td>{_stamp(item.deleted_at)}</td>'
        f"<td>{_button(token, 'item', item.id, 'Restore')}</td></tr>"
        for item in items
    )
    done = query.get("restored")
    note = (
        f'<p class="note">Restored to <a href="{escape(quote(done[0]))}">{escape(done[0])}</a>.</p>'
        if done
        else ""
    )
    days = drive.config.trash_days
    body = (
        f"{note}<p>Deleted files and folders are kept {days} days, then deleted for good. "
        "A restore puts an item back where it was; if that name is taken, it gets a new one.</p>"
        '<table class="dir-listing"><thead><tr><th>Was at</th><th>Type</th><th class="size">Bytes</th>'
        f"<th>Deleted</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
    )
    if not items:
        body += '<p class="empty">The trash holds nothing from here.</p>'
    return _page(f"Trash of {folder}", body)


def _versions_page(drive: Drive, path: str, token: str, query: dict[str, list[str]]) -> str:
    kept = drive.versions(path)
    rows = "".join(
        f"<tr><td>{v.number}</td><td class='size' title='{v.size:,d} bytes'>{v.size:,d}</td>"
        f"<td>{_stamp(v.written)}</td>"
        + (
            "<td>current</td><td></td>"
            if v.replaced is None
            else f"<td>replaced {_stamp(v.replaced)}</td>"
            f"<td>{_button(token, 'number', v.number, 'Restore')}</td>"
        )
        + "</tr>"
        for v in kept
    )
    done = query.get("restored")
    note = f'<p class="note">Version {escape(done[0])} is the current content again.</p>' if done else ""
    body = (
        f"{note}<p>Earlier contents of this file (the newest {drive.config.versions_keep}, for "
        f"{drive.config.version_days} days). A restore keeps the content it replaces as a version too.</p>"
        '<table class="dir-listing"><thead><tr><th>#</th><th class="size">Bytes</th><th>Written</th>'
        f"<th>State</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
    )
    return _page(f"Versions of {path}", body)
