"""Folder listings fast: PROPFIND with Depth 1, written as text in one pass.

wsgidav answers PROPFIND by asking every member for every property through its
generic property machinery and building an ElementTree of the whole response; for a
folder of 5,000 files that is most of half a second, almost all of it per member. A file
manager lists folders all the time (Explorer and Finder on every window), so davfs
answers the common listing itself: the folder's members and their dead properties come
from two catalog queries, and each member's response is formatted straight into the
body. Values come from the same resource methods wsgidav would call, so both paths
agree (``tests/test_listing.py`` compares them).

Handled here: Depth 1 on a folder, with ``allprop`` (or an empty body) or a ``prop``
list of the live properties below. Everything else (``propname``, other properties,
``include``, locks anywhere on or below the folder for ``allprop``, where
``lockdiscovery`` would have to be filled in) goes to wsgidav unchanged.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from xml.etree.ElementTree import ParseError
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from wsgidav import util

if TYPE_CHECKING:
    from davfs.provider import DavfsFile, DavfsFolder, DavfsProvider

DAV = "{DAV:}"
NAMED = (
    "resourcetype",
    "getcontentlength",
    "getlastmodified",
    "creationdate",
    "getetag",
    "displayname",
    "getcontenttype",
)
"""Live properties a named listing may ask for and still be answered here."""

_SUPPORTED_LOCK = (
    "<D:supportedlock><D:lockentry><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/>"
    "</D:locktype></D:lockentry><D:lockentry><D:lockscope><D:shared/></D:lockscope><D:locktype>"
    "<D:write/></D:locktype></D:lockentry></D:supportedlock>"
)


def answer(
    provider: DavfsProvider, environ: dict[str, Any], start_response: Callable[..., Any]
) -> list[bytes] | None:
    """The 207 response for a listing this module handles, or None for wsgidav to answer
    (the request body, if read, is put back for it)."""
    if environ.get("HTTP_DEPTH") != "1":
        return None
    body = _read_body(environ)
    wanted = _wanted(body)
    if wanted is None:
        return None
    folder = provider.get_resource_inst(environ["PATH_INFO"], environ)
    if folder is None or not folder.is_collection:
        return None
    if wanted == "allprop" and _locks_near(provider, folder.get_ref_url()):
        return None
    members = folder.get_member_list()  # two catalog queries: members, their dead props
    text = io.StringIO()
    text.write('<?xml version="1.0" encoding="utf-8" ?>\n<D:multistatus xmlns:D="DAV:">')
    base = folder.get_ref_url().rstrip("/") + "/"
    text.write(_response(folder, base, wanted))
    for member in members:
        href = base + quote(member.name) + ("/" if member.is_collection else "")
        text.write(_response(member, href, wanted))
    text.write("</D:multistatus>")
    data = text.getvalue().encode("utf-8")
    start_response(
        "207 Multi-Status",
        [
            ("Content-Type", "application/xml; charset=utf-8"),
            ("Date", util.get_rfc1123_time()),
            ("Content-Length", str(len(data))),
        ],
    )
    return [data]


def _read_body(environ: dict[str, Any]) -> bytes:
    length = environ.get("CONTENT_LENGTH", "").strip()
    body = environ["wsgi.input"].read(int(length)) if length.isdigit() and int(length) > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)  # wsgidav reads it again if we decline
    return body


def _wanted(body: bytes) -> str | tuple[str, ...] | None:
    """ "allprop", the live property names asked for, or None (not ours to answer)."""
    if not body.strip():
        return "allprop"
    try:
        root = fromstring(body)
    except (ParseError, DefusedXmlException, ValueError):
        return None  # wsgidav gives the precise 400
    if root.tag != f"{DAV}propfind" or len(root) != 1:
        return None
    request = root[0]
    if request.tag == f"{DAV}allprop":
        return "allprop"
    if request.tag != f"{DAV}prop" or len(request) == 0:
        return None
    names = []
    for prop in request:
        if not isinstance(prop.tag, str) or not prop.tag.startswith(DAV) or prop.tag[len(DAV) :] not in NAMED:
            return None
        names.append(prop.tag[len(DAV) :])
    return tuple(dict.fromkeys(names))


def _locks_near(provider: DavfsProvider, ref_url: str) -> bool:
    """Whether a lock covers the folder or anything in it (then lockdiscovery has content).
    wsgidav keys locks by the resources' reference URLs."""
    manager = provider.lock_manager
    if manager is None:
        return False
    url = ref_url.rstrip("/") or "/"
    return bool(manager.get_indirect_url_lock_list(url) or manager.get_url_lock_list(url, recursive=True))


def _response(resource: DavfsFolder | DavfsFile, href: str, wanted: str | tuple[str, ...]) -> str:
    found, missing = _properties(resource, wanted)
    parts = [f"<D:response><D:href>{escape(href)}</D:href>"]
    if found:
        parts.append(
            f"<D:propstat><D:prop>{''.join(found)}</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>"
        )
    if missing:
        empty = "".join(f"<D:{name}/>" for name in missing)
        parts.append(
            f"<D:propstat><D:prop>{empty}</D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>"
        )
    parts.append("</D:response>")
    return "".join(parts)


def _properties(
    resource: DavfsFolder | DavfsFile, wanted: str | tuple[str, ...]
) -> tuple[list[str], list[str]]:
    """(formatted properties that exist, names of those that do not)."""
    values = dict(_live_values(resource))
    if wanted == "allprop":
        found = [_element(name, value) for name, value in values.items()]
        found.append("<D:lockdiscovery/>")
        found.append(_SUPPORTED_LOCK)
        found.extend(resource._dead().values())  # stored as whole elements with their namespace
        return found, []
    found, missing = [], []
    for name in wanted:
        if name in values:
            found.append(_element(name, values[name]))
        else:
            missing.append(name)
    return found, missing


def _live_values(resource: DavfsFolder | DavfsFile) -> Iterator[tuple[str, str | None]]:
    """The live properties a resource has, as wsgidav's DAVResource defines them."""
    if resource.is_collection:
        yield "resourcetype", "<D:collection/>"
    else:
        yield "resourcetype", None
    # Dates, numbers and ETags (hex) are never escaped: their formats hold no markup.
    created = resource.get_creation_date()
    if created is not None:
        yield "creationdate", util.get_rfc3339_time(created)
    if resource.is_collection:
        used, available = resource.drive.quota()
        if used is not None:
            yield "quota-used-bytes", str(used)
        if available is not None:
            yield "quota-available-bytes", str(available)
    else:
        yield "getcontentlength", str(resource.get_content_length())
        yield "getcontenttype", _content_type(resource.name)
    modified = resource.get_last_modified()
    if modified is not None:
        yield "getlastmodified", util.get_rfc1123_time(modified)
    yield "displayname", escape(resource.get_display_name())
    etag = None if resource.is_collection else resource.get_etag()
    if etag is not None:
        yield "getetag", f'"{etag}"'


@functools.lru_cache(maxsize=1024)
def _type_of(name: str) -> str:
    return escape(str(util.guess_mime_type(name)))


def _content_type(name: str) -> str:
    """What ``DavfsFile.get_content_type`` says, looked up once per kind of name: the
    MIME type depends only on the last two suffixes (``.tar.gz``), so ``x`` stands in
    for the rest. Names starting with a dot have no suffix to mimetypes; asked as is."""
    if name.startswith("."):
        return _type_of(name)
    suffixes = name.rsplit(".", 2)[1:]
    return _type_of(".".join(["x", *suffixes]))


def _element(name: str, value: str | None) -> str:
    return f"<D:{name}/>" if value is None else f"<D:{name}>{value}</D:{name}>"
