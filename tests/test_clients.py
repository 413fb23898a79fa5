"""Real WebDAV clients replayed request for request, with their own headers and bodies:
Windows Explorer (the mini-redirector), macOS Finder, davfs2, GNOME gvfs and Cyberduck
(rclone runs for real in test_rclone.py). Each test asserts the statuses, the headers
the client reads and the bytes stored (read back and compared).

The requests follow shared/notes/webdav-client-quirks.md (its item numbers are cited)
and the clients' sources: davfs2's webdav.c and neon for davfs2, gvfsbackenddav.c for
gvfs, Cyberduck's DAV features and sardine, and Apple's webdavfs traces for Finder.

Every test talks to the server through the one ``dav`` fixture (tests/dav_client.py),
so making that fixture an authenticated user runs the whole file as that user.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import xml.etree.ElementTree as ET
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote

import pytest
import requests

from tests.conftest import MiB
from tests.dav_client import Dav, raw_request

DAV = "{DAV:}"
WIN32 = "{urn:schemas-microsoft-com:}"
RFC1123 = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
    r"\d\d:\d\d:\d\d GMT"
)
ISO8601 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")

# --- the clients: user agents and the bodies they send ------------------------------

EXPLORER = {"User-Agent": "Microsoft-WebDAV-MiniRedir/10.0.19045", "Translate": "f"}
"""Every request of the Windows mini-redirector carries both (appendix)."""
EXPLORER_LOCKINFO = (
    '<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
    "</D:lockscope><D:locktype><D:write/></D:locktype><D:owner><D:href>DOMAIN\\user</D:href></D:owner>"
    "</D:lockinfo>"
)
EXPLORER_LOCK = {**EXPLORER, "Timeout": "Second-3600", "Content-Type": 'text/xml; charset="utf-8"'}
"""No Depth header: Windows leaves it out, and it must mean infinity (item 11)."""


def win32_proppatch(**values: str) -> str:
    """Explorer's PROPPATCH body (copyparty #910): Win32 times and attributes."""
    props = "".join(f"<Z:{name}>{value}</Z:{name}>" for name, value in values.items())
    return (
        '<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:" '
        f'xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop>{props}</D:prop></D:set></D:propertyupdate>'
    )


FINDER = {"User-Agent": "WebDAVFS/3.0.0 (03008000) Darwin/22.1.0 (x86_64)"}
FINDER_LOCKINFO = (
    '<?xml version="1.0" encoding="utf-8"?>\n<D:lockinfo xmlns:D="DAV:">\n'
    "<D:lockscope><D:exclusive/></D:lockscope>\n<D:locktype><D:write/></D:locktype>\n"
    "<D:owner>\n<D:href>http://www.apple.com/webdav_fs/</D:href>\n</D:owner>\n</D:lockinfo>\n"
)
FINDER_LOCK = {**FINDER, "Depth": "0", "Timeout": "Second-600", "Content-Type": 'text/xml; charset="utf-8"'}
FINDER_PROPFIND = (
    '<?xml version="1.0" encoding="utf-8"?>\n<D:propfind xmlns:D="DAV:" '
    'xmlns:A="http://www.apple.com/webdav_fs/props/">\n<D:prop>\n<D:getlastmodified/>\n'
    "<D:getcontentlength/>\n<D:creationdate/>\n<D:resourcetype/>\n<A:appledoubleheader/>\n"
    "</D:prop>\n</D:propfind>\n"
)

DAVFS2 = {"User-Agent": "davfs2/1.7.0 neon/0.32.5"}
DAVFS2_PROPFIND = (
    '<?xml version="1.0" encoding="utf-8"?>\n<propfind xmlns="DAV:"><prop>\n'
    '<resourcetype xmlns="DAV:"/>\n<getcontentlength xmlns="DAV:"/>\n<getetag xmlns="DAV:"/>\n'
    '<getlastmodified xmlns="DAV:"/>\n<displayname xmlns="DAV:"/>\n'
    '<executable xmlns="http://apache.org/dav/props/"/>\n</prop></propfind>\n'
)
"""neon's ne_propfind_named with davfs2's properties (a default namespace, no prefixes)."""
DAVFS2_QUOTA = (
    '<?xml version="1.0" encoding="utf-8"?>\n<propfind xmlns="DAV:"><prop>\n'
    '<quota-available-bytes xmlns="DAV:"/>\n<quota-used-bytes xmlns="DAV:"/>\n</prop></propfind>\n'
)
DAVFS2_LOCKINFO = (
    '<?xml version="1.0" encoding="utf-8"?>\n<lockinfo xmlns=\'DAV:\'>\n'
    " <lockscope><exclusive/></lockscope>\n"
    "<locktype><write/></locktype><owner>davfs2 1.7.0</owner>\n</lockinfo>\n"
)
DAVFS2_LOCK = {**DAVFS2, "Depth": "0", "Timeout": "Second-1800", "Content-Type": "application/xml"}

GVFS = {"User-Agent": "gvfs/1.50.2"}
GVFS_PROPFIND = (
    '<?xml version="1.0" encoding="utf-8" ?>\n<D:propfind xmlns:D="DAV:">\n<D:prop>\n'
    + "".join(
        f"<D:{name}/>\n"
        for name in (
            "creationdate",
            "displayname",
            "getcontentlength",
            "getcontenttype",
            "getetag",
            "getlastmodified",
            "resourcetype",
        )
    )
    + "</D:prop>\n</D:propfind>\n"
)

CYBERDUCK = {"User-Agent": "Cyberduck/8.7.1.40770 (Mac OS X/14.1.1) (aarch64)"}
CYBERDUCK_PROPFIND = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><D:propfind xmlns:D="DAV:" xmlns:S="SAR:">'
    "<D:prop><D:getcontentlength/><D:getlastmodified/><D:creationdate/><D:displayname/>"
    "<D:getcontenttype/><D:resourcetype/><D:getetag/><S:lastmodified/><S:lastmodified_server/>"
    "</D:prop></D:propfind>"
)
"""sardine's list(): the standard properties plus Cyberduck's timestamps in its SAR: namespace."""


def propfind(dav: Dav, path: str, depth: str, body: str | bytes = b"", **headers: str) -> requests.Response:
    """A PROPFIND as clients send it; redirects are not followed (Windows does not)."""
    return dav.http.request(
        "PROPFIND", dav.url + path, headers={**headers, "Depth": depth}, data=body, allow_redirects=False
    )


Props = dict[str, tuple[int, ET.Element]]


def multistatus(response: requests.Response) -> dict[str, Props]:
    """href → {property tag: (status, element)} of a 207. Parsing it proves every
    namespace prefix in it was declared."""
    assert response.status_code == 207, (response.status_code, response.text[:500])
    result: dict[str, Props] = {}
    for item in ET.fromstring(response.content).iter(f"{DAV}response"):
        props: Props = {}
        for propstat in item.iter(f"{DAV}propstat"):
            status = int((propstat.findtext(f"{DAV}status") or "").split()[1])
            found = propstat.find(f"{DAV}prop")
            for prop in found if found is not None else []:
                props[prop.tag] = (status, prop)
        result[item.findtext(f"{DAV}href") or ""] = props
    return result


def ok(props: Props, name: str) -> ET.Element:
    """The value of a property answered with 200; a bare ``name`` is in DAV:."""
    tag = name if name.startswith("{") else DAV + name
    assert tag in props, f"{tag} not in the response"
    status, element = props[tag]
    assert status == 200, f"{tag} answered {status}"
    return element


def text(props: Props, name: str) -> str:
    return ok(props, name).text or ""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- Windows Explorer ------------------------------------------------------------------


def test_explorer_copies_a_file_into_a_mapped_drive(dav: Dav) -> None:
    """The appendix sequence, each step with MiniRedir's headers. Explorer aborts or rolls
    back with DELETE on any non-2xx where it expects success (items 1, 2, 7, 11, 13, 21, 22)."""
    http, url = dav.http, dav.url
    # Mapping the drive: OPTIONS and the root's allprop with an empty body.
    options = http.options(url, headers=EXPLORER)
    assert options.status_code == 200 and "2" in options.headers["DAV"].replace(" ", "").split(",")
    root = multistatus(propfind(dav, "", "0", **EXPLORER))["/"]
    assert ok(root, "resourcetype").find(f"{DAV}collection") is not None
    assert http.request("MKCOL", url + "dir", headers=EXPLORER).status_code == 201

    # 1-2: list the folder, probe the new name and Explorer's own desktop.ini / Thumbs.db.
    assert set(multistatus(propfind(dav, "dir/", "1", **EXPLORER))) == {"/dir/"}
    for probe in ("dir/f.txt", "dir/desktop.ini", "dir/Thumbs.db"):
        assert propfind(dav, probe, "0", **EXPLORER).status_code == 404
    # 3: the empty file.
    created = http.put(url + "dir/f.txt", data=b"", headers=EXPLORER)
    assert created.status_code == 201 and created.headers["ETag"]
    # 4: LOCK, no Depth, owner DOMAIN\user.
    lock = http.request(
        "LOCK",
        url + "dir/f.txt",
        data=EXPLORER_LOCKINFO,
        headers={**EXPLORER_LOCK, "Cache-Control": "no-cache"},
    )
    assert lock.status_code == 200
    assert lock.headers["Content-Type"].split(";")[0] == "application/xml"
    token = lock.headers["Lock-Token"]
    assert re.fullmatch(r"<opaquelocktoken:[^<>\s]+>", token)
    active = ET.fromstring(lock.content).find(f"{DAV}lockdiscovery/{DAV}activelock")
    assert active is not None
    assert active.findtext(f"{DAV}locktoken/{DAV}href") == token[1:-1]
    assert active.findtext(f"{DAV}owner/{DAV}href") == "DOMAIN\\user"
    locked = {**EXPLORER, "If": f"({token})", "Content-Type": 'text/xml; charset="utf-8"'}
    # 5: the Win32 properties, each answered 200 in a 207.
    created_at = "Mon, 02 Jan 2023 03:04:05 GMT"
    body = win32_proppatch(
        Win32CreationTime=created_at,
        Win32LastAccessTime=created_at,
        Win32LastModifiedTime=created_at,
        Win32FileAttributes="00000020",
    )
    patched = multistatus(http.request("PROPPATCH", url + "dir/f.txt", data=body, headers=locked))
    assert {tag: status for tag, (status, _) in patched["/dir/f.txt"].items()} == {
        f"{WIN32}{name}": 200
        for name in (
            "Win32CreationTime",
            "Win32LastAccessTime",
            "Win32LastModifiedTime",
            "Win32FileAttributes",
        )
    }
    # 6: HEAD.
    head = http.head(url + "dir/f.txt", headers=EXPLORER)
    assert head.status_code == 200 and head.headers["Content-Length"] == "0"
    # 7: the content, with the token (without it the lock holds and nothing changes).
    data = os.urandom(2 * MiB + 77)
    assert http.put(url + "dir/f.txt", data=data, headers=EXPLORER).status_code == 423
    assert http.head(url + "dir/f.txt", headers=EXPLORER).headers["Content-Length"] == "0"
    written = http.put(url + "dir/f.txt", data=data, headers={**EXPLORER, "If": f"({token})"})
    assert written.status_code == 204
    etag = written.headers["ETag"]
    # 8: the source file's modification time, set after the content.
    modified_at = "Tue, 03 Jan 2023 04:05:06 GMT"
    body = win32_proppatch(Win32LastModifiedTime=modified_at, Win32FileAttributes="00000020")
    patched = multistatus(http.request("PROPPATCH", url + "dir/f.txt", data=body, headers=locked))
    assert {status for status, _ in patched["/dir/f.txt"].values()} == {200}
    # 9: UNLOCK.
    unlock = http.request("UNLOCK", url + "dir/f.txt", headers={**EXPLORER, "Lock-Token": token})
    assert unlock.status_code == 204
    # 10: the folder again; the file shows the size, the time sent last and the PUT's ETag.
    assert set(multistatus(propfind(dav, "dir/", "0", **EXPLORER))) == {"/dir/"}
    entry = multistatus(propfind(dav, "dir/", "1", **EXPLORER))["/dir/f.txt"]
    assert text(entry, "getcontentlength") == str(len(data))
    assert text(entry, "getlastmodified") == modified_at
    assert text(entry, "getetag") == etag
    read = http.get(url + "dir/f.txt", headers=EXPLORER)
    assert read.status_code == 200 and read.headers["ETag"] == etag
    assert sha256(read.content) == sha256(data)
    # The lock is gone: the next writer needs no token.
    assert http.put(url + "dir/f.txt", data=b"next", headers=EXPLORER).status_code == 204


def test_explorer_new_folder_rename_and_delete(dav: Dav) -> None:
    """Explorer's "New folder", typing a name, renaming files inside and deleting: MOVE
    with an absolute, percent-encoded Destination; a 207 for a successful rename makes
    Explorer report an error (items 7, 23-25; MKCOL's 405 and 409 are in test_http.py)."""
    http, url = dav.http, dav.url

    def move(source: str, target: str, overwrite: str) -> requests.Response:
        headers = {**EXPLORER, "Destination": url + target, "Overwrite": overwrite}
        return http.request("MOVE", url + source, headers=headers)

    assert propfind(dav, "New%20folder", "0", **EXPLORER).status_code == 404
    assert http.request("MKCOL", url + "New%20folder", headers=EXPLORER).status_code == 201
    folder = multistatus(propfind(dav, "New%20folder", "0", **EXPLORER))["/New%20folder/"]
    assert ok(folder, "resourcetype").find(f"{DAV}collection") is not None

    # Typing the name: a rename to a new name.
    assert move("New%20folder", "Gr%C3%BC%C3%9Fe%20Projekte", "F").status_code == 201
    assert propfind(dav, "New%20folder", "0", **EXPLORER).status_code == 404
    # A case-only rename of the folder.
    assert move("Gr%C3%BC%C3%9Fe%20Projekte", "gr%C3%BC%C3%9Fe%20projekte", "F").status_code == 201
    assert set(multistatus(propfind(dav, "", "1", **EXPLORER))) == {"/", "/gr%C3%BC%C3%9Fe%20projekte/"}

    folder_url = "gr%C3%BC%C3%9Fe%20projekte/"
    a, b = os.urandom(1000), os.urandom(2000)
    assert http.put(url + folder_url + "a.txt", data=a, headers=EXPLORER).status_code == 201
    assert http.put(url + folder_url + "b.txt", data=b, headers=EXPLORER).status_code == 201
    # Renaming onto an existing name: refused with F, nothing changes ...
    assert move(folder_url + "a.txt", folder_url + "b.txt", "F").status_code == 412
    assert http.get(url + folder_url + "a.txt").content == a
    assert http.get(url + folder_url + "b.txt").content == b
    # ... and replaces it with T (after Explorer's "Replace the file?").
    assert move(folder_url + "a.txt", folder_url + "b.txt", "T").status_code == 204
    assert http.get(url + folder_url + "a.txt").status_code == 404
    assert sha256(http.get(url + folder_url + "b.txt").content) == sha256(a)
    # A case-only rename of a file.
    assert move(folder_url + "b.txt", folder_url + "B.txt", "F").status_code == 201
    listing = multistatus(propfind(dav, folder_url, "1", **EXPLORER))
    assert set(listing) == {"/" + folder_url, "/" + folder_url + "B.txt"}
    assert text(listing["/" + folder_url + "B.txt"], "getcontentlength") == str(len(a))

    assert http.delete(url + folder_url + "B.txt", headers=EXPLORER).status_code == 204
    assert http.get(url + folder_url + "B.txt").status_code == 404
    assert http.delete(url + folder_url, headers=EXPLORER).status_code == 204
    assert propfind(dav, folder_url, "0", **EXPLORER).status_code == 404


def test_explorer_reads_raw_bytes_with_the_headers_finder_needs(dav: Dav) -> None:
    """Explorer reads a file with PROPFIND Depth 0 and then one full GET with
    ``Translate: f`` (raw bytes, never a rendered script); Finder needs Content-Length.
    The GET's headers must agree with the listing (item 26)."""
    files = {
        "page.html": b"<html><body><%= Response.Write(1) %></body></html>",
        "script.asp": b'<% Response.Write("not executed") %>',
        "empty.txt": b"",
        "data.bin": os.urandom(MiB + 1),
    }
    for name, data in files.items():
        assert dav.http.put(dav.url + name, data=data).status_code == 201
    for name, data in files.items():
        entry = multistatus(propfind(dav, name, "0", **EXPLORER))["/" + name]
        for headers in (EXPLORER, {}):
            r = dav.http.get(dav.url + name, headers=headers)
            assert r.status_code == 200, name
            assert r.content == data, name
            assert r.headers["Content-Length"] == str(len(data)) == text(entry, "getcontentlength")
            assert r.headers["Accept-Ranges"] == "bytes"
            assert r.headers["ETag"] == text(entry, "getetag")
            assert RFC1123.fullmatch(r.headers["Last-Modified"])
            assert r.headers["Last-Modified"] == text(entry, "getlastmodified")


# --- macOS Finder ----------------------------------------------------------------------


def test_finder_copies_a_file_with_a_chunked_put(dav: Dav) -> None:
    """Finder's copy: probe the name and its AppleDouble ``._`` twin, create the empty
    file, LOCK it, send the content chunked with X-Expected-Entity-Length, write the
    AppleDouble file, UNLOCK. The stored file is exactly the N bytes announced (item 19)."""
    http, url = dav.http, dav.url
    assert http.request("MKCOL", url + "Photos", headers=FINDER).status_code == 201
    for probe in ("Photos/IMG_0001.HEIC", "Photos/._IMG_0001.HEIC"):
        assert propfind(dav, probe, "0", FINDER_PROPFIND, **FINDER).status_code == 404
    assert http.put(url + "Photos/IMG_0001.HEIC", data=b"", headers=FINDER).status_code == 201
    lock = http.request("LOCK", url + "Photos/IMG_0001.HEIC", data=FINDER_LOCKINFO, headers=FINDER_LOCK)
    assert lock.status_code == 200
    token = lock.headers["Lock-Token"]

    data = os.urandom(3 * MiB + 4321)  # spans four 1 MiB chunks, in uneven pieces
    pieces = [data[:1], data[1:65536], data[65536 : 2 * MiB + 3], data[2 * MiB + 3 :]]
    r = http.put(
        url + "Photos/IMG_0001.HEIC",
        data=iter(pieces),
        headers={**FINDER, "If": f"({token})", "X-Expected-Entity-Length": str(len(data))},
    )
    assert r.status_code == 204, r.text
    assert r.request.headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in r.request.headers
    etag = r.headers["ETag"]
    head = http.head(url + "Photos/IMG_0001.HEIC", headers=FINDER)
    assert head.headers["Content-Length"] == str(len(data)) and head.headers["ETag"] == etag

    apple_double = b"\x00\x05\x16\x07\x00\x02\x00\x00" + bytes(16) + b"\x00\x02" + os.urandom(4070)
    r = http.put(
        url + "Photos/._IMG_0001.HEIC",
        data=iter([apple_double[:100], apple_double[100:]]),
        headers={**FINDER, "X-Expected-Entity-Length": str(len(apple_double))},
    )
    assert r.status_code == 201
    unlock = http.request("UNLOCK", url + "Photos/IMG_0001.HEIC", headers={**FINDER, "Lock-Token": token})
    assert unlock.status_code == 204

    listing = multistatus(propfind(dav, "Photos/", "1", FINDER_PROPFIND, **FINDER))
    assert text(listing["/Photos/IMG_0001.HEIC"], "getcontentlength") == str(len(data))
    assert text(listing["/Photos/._IMG_0001.HEIC"], "getcontentlength") == str(len(apple_double))
    assert sha256(http.get(url + "Photos/IMG_0001.HEIC", headers=FINDER).content) == sha256(data)
    assert http.get(url + "Photos/._IMG_0001.HEIC", headers=FINDER).content == apple_double

    # A body that ends short of what was announced is not a file: the old one stays.
    r = http.put(
        url + "Photos/IMG_0001.HEIC",
        data=iter([data[:1000]]),
        headers={**FINDER, "X-Expected-Entity-Length": str(len(data))},
    )
    assert r.status_code >= 400
    after = http.get(url + "Photos/IMG_0001.HEIC", headers=FINDER)
    assert after.headers["ETag"] == etag and sha256(after.content) == sha256(data)


def test_finder_dot_files_are_ordinary_files(dav: Dav) -> None:
    """``.DS_Store`` and ``._name`` are Finder's own files; the server stores, lists and
    deletes them like any other (only the HTML listing hides them) (item 31)."""
    http, url = dav.http, dav.url
    ds_store = b"\x00\x00\x00\x01Bud1" + os.urandom(6136)
    # Finder locks .DS_Store before it exists (a lock-null resource), then writes it.
    lock = http.request("LOCK", url + ".DS_Store", data=FINDER_LOCKINFO, headers=FINDER_LOCK)
    assert lock.status_code == 201
    token = lock.headers["Lock-Token"]
    r = http.put(
        url + ".DS_Store",
        data=iter([ds_store[:10], ds_store[10:]]),
        headers={**FINDER, "If": f"({token})", "X-Expected-Entity-Length": str(len(ds_store))},
    )
    assert r.status_code == 204
    assert (
        http.request("UNLOCK", url + ".DS_Store", headers={**FINDER, "Lock-Token": token}).status_code == 204
    )
    apple_double = b"\x00\x05\x16\x07" + os.urandom(4092)
    assert http.put(url + "._notes.txt", data=apple_double, headers=FINDER).status_code == 201
    assert http.put(url + "notes.txt", data=b"notes", headers=FINDER).status_code == 201

    listing = multistatus(propfind(dav, "", "1", **FINDER))
    assert {"/.DS_Store", "/._notes.txt", "/notes.txt"} <= set(listing)
    assert text(listing["/.DS_Store"], "getcontentlength") == str(len(ds_store))
    assert text(listing["/._notes.txt"], "getcontentlength") == str(len(apple_double))
    for name in (".DS_Store", "._notes.txt"):
        entry = multistatus(propfind(dav, name, "0", FINDER_PROPFIND, **FINDER))["/" + name]
        assert ok(entry, "resourcetype").find(f"{DAV}collection") is None
    assert http.get(url + ".DS_Store", headers=FINDER).content == ds_store
    assert http.get(url + "._notes.txt", headers=FINDER).content == apple_double

    for name in (".DS_Store", "._notes.txt"):
        assert http.delete(url + name, headers=FINDER).status_code == 204
        assert http.get(url + name).status_code == 404
    assert http.get(url + "notes.txt").content == b"notes"


# --- davfs2 ----------------------------------------------------------------------------


def test_davfs2_creates_a_file_through_a_lock_null_resource(dav: Dav) -> None:
    """davfs2 with ``use_locks 1`` creating a file: LOCK the unmapped name with
    ``If-None-Match: *`` (201 means it was created, 412 that it already existed), HEAD
    for its precheck, PUT with neon's tagged ``If`` header, later If-Match on its ETag,
    UNLOCK (items 12, 13, 14, 28)."""
    http, url = dav.http, dav.url
    options = http.options(url, headers=DAVFS2)
    assert "2" in options.headers["DAV"].replace(" ", "").split(",")  # else davfs2 drops its locks
    assert http.request("MKCOL", url + "docs", headers=DAVFS2).status_code == 201
    assert set(multistatus(propfind(dav, "docs/", "1", DAVFS2_PROPFIND, **DAVFS2))) == {"/docs/"}

    lock = http.request(
        "LOCK", url + "docs/new.txt", data=DAVFS2_LOCKINFO, headers={**DAVFS2_LOCK, "If-None-Match": "*"}
    )
    assert lock.status_code == 201
    assert lock.headers["Content-Type"].split(";")[0] == "application/xml"  # neon ignores anything else
    token = lock.headers["Lock-Token"]
    active = ET.fromstring(lock.content).find(f"{DAV}lockdiscovery/{DAV}activelock")
    assert active is not None
    assert active.findtext(f"{DAV}locktoken/{DAV}href") == token[1:-1]
    assert active.findtext(f"{DAV}depth") == "0"
    assert active.findtext(f"{DAV}owner") == "davfs2 1.7.0"
    # The lock made a 0-byte file, listed like any other.
    entry = multistatus(propfind(dav, "docs/", "1", DAVFS2_PROPFIND, **DAVFS2))["/docs/new.txt"]
    assert text(entry, "getcontentlength") == "0"
    head = http.head(url + "docs/new.txt", headers=DAVFS2)
    assert head.status_code == 200 and head.headers["Content-Length"] == "0"
    assert http.get(url + "docs/new.txt").content == b""

    tagged = {**DAVFS2, "If": f"<{url}docs/new.txt> ({token})"}
    first = os.urandom(MiB + 10)
    assert http.put(url + "docs/new.txt", data=first, headers=DAVFS2).status_code == 423
    put = http.put(url + "docs/new.txt", data=first, headers=tagged)
    assert put.status_code == 204
    etag = put.headers["ETag"]
    second = os.urandom(2 * MiB + 20)
    stale = http.put(url + "docs/new.txt", data=second, headers={**tagged, "If-Match": '"not-the-etag"'})
    assert stale.status_code == 412
    assert http.head(url + "docs/new.txt").headers["ETag"] == etag
    put = http.put(url + "docs/new.txt", data=second, headers={**tagged, "If-Match": etag})
    assert put.status_code == 204 and put.headers["ETag"] != etag

    unlock = http.request("UNLOCK", url + "docs/new.txt", headers={**DAVFS2, "Lock-Token": token})
    assert unlock.status_code == 204
    assert sha256(http.get(url + "docs/new.txt", headers=DAVFS2).content) == sha256(second)
    # Creating a name that exists is refused, and takes no lock.
    exists = http.request(
        "LOCK", url + "docs/new.txt", data=DAVFS2_LOCKINFO, headers={**DAVFS2_LOCK, "If-None-Match": "*"}
    )
    assert exists.status_code == 412
    assert http.put(url + "docs/new.txt", data=b"free", headers=DAVFS2).status_code == 204


def test_failed_preconditions_change_nothing(dav: Dav) -> None:
    """davfs2's ``precheck``: a PUT whose If-Match is stale, or whose If-None-Match: *
    meets an existing file, is refused and leaves the file as it was (item 28)."""
    http, url = dav.http, dav.url + "f.txt"
    data = os.urandom(MiB + 1)
    etag = http.put(url, data=data, headers=DAVFS2).headers["ETag"]
    for condition in ({"If-Match": '"stale"'}, {"If-None-Match": "*"}, {"If-Match": etag + "x"}):
        r = http.put(url, data=b"replacement", headers={**DAVFS2, **condition})
        assert r.status_code == 412, condition
        after = http.get(url)
        assert after.headers["ETag"] == etag and sha256(after.content) == sha256(data), condition
    assert (
        http.put(dav.url + "new.txt", data=b"new", headers={**DAVFS2, "If-None-Match": "*"}).status_code
        == 201
    )
    assert http.get(dav.url + "new.txt").content == b"new"


def test_not_modified_keeps_the_validators(dav: Dav) -> None:
    """davfs2 revalidates its cache with If-None-Match (and If-Modified-Since) on every
    open. A 304 must carry the ETag a 200 would have (RFC 9110 15.4.5) and may only
    state the real Content-Length, if any (RFC 9110 8.6)."""
    data = b"cached by davfs2"
    dav.http.put(dav.url + "c.txt", data=data)
    head = dav.http.head(dav.url + "c.txt")
    conditions = {"If-None-Match": head.headers["ETag"], "If-Modified-Since": head.headers["Last-Modified"]}
    r = dav.http.get(dav.url + "c.txt", headers={**DAVFS2, **conditions})
    assert r.status_code == 304 and r.content == b""
    assert r.headers.get("ETag") == head.headers["ETag"]
    assert r.headers.get("Content-Length", str(len(data))) == str(len(data))


def test_if_none_match_decides_over_if_modified_since(dav: Dav) -> None:
    """davfs2 sends both validators. When a file's modification time moved back with its
    content unchanged (Explorer's PROPPATCH sets the source's time after the copy; rclone
    re-sends an identical file with an older X-OC-Mtime), the matching ETag still means
    304: If-Modified-Since is ignored when If-None-Match is present (RFC 9110 13.2.2), and
    a GET is never answered 412 for it."""
    url = dav.url + "c.txt"
    dav.http.put(url, data=b"unchanged")
    cached = dav.http.head(url)
    body = win32_proppatch(Win32LastModifiedTime="Tue, 03 Jan 2023 04:05:06 GMT")
    assert dav.http.request("PROPPATCH", url, data=body, headers=EXPLORER).status_code == 207
    assert dav.http.head(url).headers["ETag"] == cached.headers["ETag"]
    conditions = {
        "If-None-Match": cached.headers["ETag"],
        "If-Modified-Since": cached.headers["Last-Modified"],
    }
    assert dav.http.get(url, headers={**DAVFS2, **conditions}).status_code == 304
    assert dav.http.head(url, headers={**DAVFS2, **conditions}).status_code == 304


# --- GNOME gvfs ------------------------------------------------------------------------


def test_gvfs_creates_an_empty_file_then_saves_it(dav: Dav) -> None:
    """Nautilus' "New Document": gvfs HEADs the name, then PUTs an empty body with no
    Content-Length at all (201, not 411), and later replaces it after a HEAD with
    If-Match; rename is MOVE with Overwrite: F, delete a stat then DELETE (item 18)."""
    http, url = dav.http, dav.url
    assert http.request("MKCOL", url + "Documents", headers=GVFS).status_code == 201
    assert http.head(url + "Documents/Untitled%20Document", headers=GVFS).status_code == 404
    created = raw_request(
        dav, "PUT", "/Documents/Untitled%20Document", {**GVFS, "Accept-Encoding": "gzip, deflate"}
    )
    assert created.status == 201, created.body[:300]
    assert created.headers["ETag"]

    head = http.head(url + "Documents/Untitled%20Document", headers=GVFS)
    assert head.status_code == 200 and head.headers["Content-Length"] == "0"
    assert head.headers["ETag"] == created.headers["ETag"]
    entry = multistatus(propfind(dav, "Documents/Untitled%20Document", "0", GVFS_PROPFIND, **GVFS))
    assert text(entry["/Documents/Untitled%20Document"], "getcontentlength") == "0"
    get = http.get(url + "Documents/Untitled%20Document", headers=GVFS)
    assert get.status_code == 200 and get.content == b"" and get.headers["Content-Length"] == "0"

    # Saving: replace with the ETag gvfs knows.
    etag = head.headers["ETag"]
    check = http.head(url + "Documents/Untitled%20Document", headers={**GVFS, "If-Match": etag})
    assert check.status_code == 200
    data = "Grüße aus Nautilus\n".encode() * 1000
    saved = http.put(url + "Documents/Untitled%20Document", data=data, headers={**GVFS, "If-Match": etag})
    assert saved.status_code == 204
    # Renaming, which gvfs does with Overwrite: F.
    move = http.request(
        "MOVE",
        url + "Documents/Untitled%20Document",
        headers={**GVFS, "Destination": url + "Documents/notes.txt", "Overwrite": "F"},
    )
    assert move.status_code == 201
    assert sha256(http.get(url + "Documents/notes.txt", headers=GVFS).content) == sha256(data)
    # Deleting: a stat, then DELETE.
    assert propfind(dav, "Documents/notes.txt", "0", GVFS_PROPFIND, **GVFS).status_code == 207
    assert http.delete(url + "Documents/notes.txt", headers=GVFS).status_code == 204
    assert http.head(url + "Documents/notes.txt", headers=GVFS).status_code == 404


# --- Cyberduck -------------------------------------------------------------------------


def test_cyberduck_uploads_to_a_temporary_name_then_moves(dav: Dav) -> None:
    """Cyberduck with "Upload with temporary filename": PUT ``name-<random>`` with
    Expect: 100-continue and the file's MIME type, MOVE it onto the name with Overwrite: T
    (201 the first time, 204 over the previous upload), then PROPPATCH its own timestamp
    into the SAR: namespace (items 6, 20, 24)."""
    http, url = dav.http, dav.url
    listing = multistatus(propfind(dav, "", "1", CYBERDUCK_PROPFIND, **CYBERDUCK))
    root = listing["/"]
    assert root["{SAR:}lastmodified"][0] == 404 and root["{SAR:}lastmodified_server"][0] == 404
    assert propfind(dav, "report.pdf", "0", CYBERDUCK_PROPFIND, **CYBERDUCK).status_code == 404

    upload = {**CYBERDUCK, "Expect": "100-continue", "Content-Type": "application/pdf"}
    first = b"%PDF-1.7\n" + os.urandom(MiB + 512)
    put = http.put(url + "report.pdf-Yb3kQ9xT", data=first, headers=upload)
    assert put.status_code == 201
    move = http.request(
        "MOVE",
        url + "report.pdf-Yb3kQ9xT",
        headers={**CYBERDUCK, "Destination": url + "report.pdf", "Overwrite": "T"},
    )
    assert move.status_code == 201
    assert http.head(url + "report.pdf-Yb3kQ9xT").status_code == 404
    read = http.get(url + "report.pdf", headers=CYBERDUCK)
    assert sha256(read.content) == sha256(first) and read.headers["ETag"] == put.headers["ETag"]

    timestamp = "Mon, 02 Jan 2023 03:04:05 GMT"
    body = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><D:propertyupdate xmlns:D="DAV:" '
        f'xmlns:S="SAR:"><D:set><D:prop><S:lastmodified>{timestamp}</S:lastmodified></D:prop></D:set>'
        "</D:propertyupdate>"
    )
    patched = http.request(
        "PROPPATCH",
        url + "report.pdf",
        data=body,
        headers={**CYBERDUCK, "Content-Type": "text/xml; charset=UTF-8"},
    )
    assert multistatus(patched)["/report.pdf"]["{SAR:}lastmodified"][0] == 200
    entry = multistatus(propfind(dav, "", "1", CYBERDUCK_PROPFIND, **CYBERDUCK))["/report.pdf"]
    assert text(entry, "{SAR:}lastmodified") == timestamp
    assert entry["{SAR:}lastmodified_server"][0] == 404
    assert text(entry, "getcontentlength") == str(len(first))
    assert text(entry, "getcontenttype") == "application/pdf"

    # The next upload of the same file replaces it the same way.
    second = b"%PDF-1.7\n" + os.urandom(2 * MiB)
    assert http.put(url + "report.pdf-Kp2Lw8Zr", data=second, headers=upload).status_code == 201
    move = http.request(
        "MOVE",
        url + "report.pdf-Kp2Lw8Zr",
        headers={**CYBERDUCK, "Destination": url + "report.pdf", "Overwrite": "T"},
    )
    assert move.status_code == 204
    assert set(multistatus(propfind(dav, "", "1", CYBERDUCK_PROPFIND, **CYBERDUCK))) == {"/", "/report.pdf"}
    assert sha256(http.get(url + "report.pdf").content) == sha256(second)


def test_expect_100_continue_gets_an_interim_100_then_the_final_status(dav: Dav) -> None:
    """Cyberduck (and litmus' expect100) send the headers alone and wait for ``100
    Continue`` before the body; the final status follows the body (item 20)."""
    data = os.urandom(MiB + 5)
    headers = {**CYBERDUCK, "Content-Length": str(len(data)), "Expect": "100-continue"}
    created = raw_request(dav, "PUT", "/expect.bin", headers, data, expect_100=True)
    assert (created.interim, created.status) == ([100], 201)
    assert sha256(dav.http.get(dav.url + "expect.bin").content) == sha256(data)
    replaced = raw_request(
        dav, "PUT", "/expect.bin", {**headers, "Content-Length": "5"}, b"hello", expect_100=True
    )
    assert (replaced.interim, replaced.status) == ([100], 204)
    assert dav.http.get(dav.url + "expect.bin").content == b"hello"


# --- behaviour every client relies on ------------------------------------------------


@pytest.mark.parametrize(
    "path, depth, headers",
    [
        ("Folder", "1", EXPLORER),
        ("Folder", "0", EXPLORER),
        ("Folder/Sub%20Folder", "1", {"User-Agent": "rclone/v1.65.0"}),
        ("Folder/Sub%20Folder", "0", DAVFS2),
    ],
)
def test_propfind_of_a_folder_without_trailing_slash_is_207_not_a_redirect(
    dav: Dav, path: str, depth: str, headers: dict[str, str]
) -> None:
    """Windows does not follow a redirect and rclone takes a 3xx for "not found"
    (item 4); the answer names the folder with its slash."""
    dav.http.request("MKCOL", dav.url + "Folder")
    dav.http.request("MKCOL", dav.url + "Folder/Sub%20Folder")
    dav.http.put(dav.url + "Folder/Sub%20Folder/a.txt", data=b"a")
    r = propfind(dav, path, depth, **headers)
    assert r.status_code == 207 and "Location" not in r.headers
    hrefs = set(multistatus(r))
    assert "/" + path + "/" in hrefs
    assert len(hrefs) == (1 if depth == "0" else 2)


@pytest.mark.parametrize("answered_by", ["davfs listing", "wsgidav (a lock in the folder)"])
def test_every_listing_entry_has_the_properties_clients_read(dav: Dav, answered_by: str) -> None:
    """A Depth-1 allprop (Explorer's empty body): every file has getcontentlength,
    getlastmodified (RFC 1123, GMT), resourcetype, getetag, creationdate and
    getcontenttype, all as HEAD states them; folders' hrefs end in '/' (item 5). Both
    answers are checked: davfs's own, and wsgidav's, which answers when a lock is held
    in the folder (as while Explorer copies into it)."""
    http, url = dav.http, dav.url
    files = {
        "empty.txt": b"",
        "a.txt": b"12345",
        "big.bin": os.urandom(MiB + 1),
        "Grüße.txt": "ü".encode(),
        ".DS_Store": b"\x00\x00\x00\x01Bud1",
        "locked.txt": b"locked",
    }
    http.request("MKCOL", url + "Folder")
    http.request("MKCOL", url + "Folder/sub")
    for name, data in files.items():
        assert http.put(url + "Folder/" + name, data=data).status_code == 201
    if answered_by.startswith("wsgidav"):
        lock = http.request("LOCK", url + "Folder/locked.txt", data=EXPLORER_LOCKINFO, headers=EXPLORER_LOCK)
        assert lock.status_code == 200

    listing = multistatus(propfind(dav, "Folder", "1", **EXPLORER))
    expected_files = {"/Folder/" + quote(name) for name in files}
    assert set(listing) == {"/Folder/", "/Folder/sub/"} | expected_files
    for href, props in listing.items():
        is_folder = ok(props, "resourcetype").find(f"{DAV}collection") is not None
        assert href.endswith("/") == is_folder, href
        assert RFC1123.fullmatch(text(props, "getlastmodified")), href
        assert ISO8601.fullmatch(text(props, "creationdate")), href
        if is_folder:
            continue
        name = unquote(href.rsplit("/", 1)[1])
        head = http.head(url + href.lstrip("/"))
        assert text(props, "getcontentlength") == str(len(files[name])) == head.headers["Content-Length"]
        assert text(props, "getetag") == head.headers["ETag"]
        assert text(props, "getlastmodified") == head.headers["Last-Modified"]
        assert parsedate_to_datetime(text(props, "getlastmodified")).utcoffset() is not None
        assert text(props, "getcontenttype") == head.headers["Content-Type"] != ""


@pytest.mark.parametrize(
    "body, headers, unknown",
    [
        (DAVFS2_PROPFIND, DAVFS2, ["{http://apache.org/dav/props/}executable"]),
        (CYBERDUCK_PROPFIND, CYBERDUCK, ["{SAR:}lastmodified", "{SAR:}lastmodified_server"]),
        (
            '<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">'
            "<d:prop><d:getetag/><oc:checksums/><oc:permissions/></d:prop></d:propfind>",
            {"User-Agent": "Mozilla/5.0 (Windows) mirall/3.10.1"},
            ["{http://owncloud.org/ns}checksums", "{http://owncloud.org/ns}permissions"],
        ),
    ],
    ids=["davfs2", "cyberduck", "owncloud"],
)
def test_unknown_properties_are_404_with_their_namespace_declared(
    dav: Dav, body: str, headers: dict[str, str], unknown: list[str]
) -> None:
    """Properties the server does not have come back in a 404 propstat, in the client's
    own namespace, declared in the response, never a 400 or 500; the known ones in the
    same request are 200 (item 6)."""
    dav.http.request("MKCOL", dav.url + "dir")
    dav.http.put(dav.url + "dir/f.txt", data=b"x")
    for path, depth in (("dir/f.txt", "0"), ("dir/", "1")):
        r = propfind(dav, path, depth, body, **headers)
        for namespace in {tag[1:].split("}")[0] for tag in unknown}:
            assert f'="{namespace}"' in r.text, namespace
        entry = multistatus(r)["/dir/f.txt"]
        for tag in unknown:
            assert entry[tag][0] == 404, tag
        assert text(entry, "getetag") == dav.http.head(dav.url + "dir/f.txt").headers["ETag"]


def test_getetag_is_the_etag_header_and_follows_the_content(dav: Dav) -> None:
    """getetag equals the ETag header exactly (quotes included), stays put while nothing
    changes and changes with the content; the ETag a PUT with X-OC-Mtime returns is the
    one later requests see (wsgidav's filesystem provider's goes stale there) (item 8)."""
    http, url = dav.http, dav.url + "e.txt"

    def seen() -> set[str]:
        """The ETag as every request states it."""
        etags = {http.head(url).headers["ETag"], http.get(url).headers["ETag"]}
        etags.add(text(multistatus(propfind(dav, "e.txt", "0"))["/e.txt"], "getetag"))
        etags.add(text(multistatus(propfind(dav, "", "1", **EXPLORER))["/e.txt"], "getetag"))
        etags.add(text(multistatus(propfind(dav, "", "1", DAVFS2_PROPFIND))["/e.txt"], "getetag"))
        return etags

    first = http.put(url, data=b"one").headers["ETag"]
    assert re.fullmatch(r'"[^"]+"', first)  # strong and quoted
    assert seen() == {first}
    assert seen() == {first}
    second = http.put(url, data=b"two").headers["ETag"]
    assert second != first and seen() == {second}

    r = http.put(url, data=b"three", headers={"X-OC-Mtime": "1600000000", "User-Agent": "rclone/v1.65.0"})
    assert r.status_code == 204 and r.headers["ETag"] not in (first, second)
    assert seen() == {r.headers["ETag"]}
    assert http.head(url).headers["Last-Modified"] == "Sun, 13 Sep 2020 12:26:40 GMT"
    # A new modification time alone (Explorer's PROPPATCH) leaves header and property agreeing.
    body = win32_proppatch(Win32LastModifiedTime="Tue, 03 Jan 2023 04:05:06 GMT")
    assert http.request("PROPPATCH", url, data=body, headers=EXPLORER).status_code == 207
    assert len(seen()) == 1


def test_quota_properties_are_integers_on_every_folder(dav: Dav) -> None:
    """davfs2 (``df``), Finder and rclone ``about`` ask a folder for
    quota-available-bytes and quota-used-bytes at Depth 0 and need integers (item 9)."""
    dav.http.put(dav.url + "q.bin", data=os.urandom(1000))
    dav.http.request("MKCOL", dav.url + "sub")
    time.sleep(1.1)  # the figure is cached for a second, and the fixture's PROPFIND asked for it
    for path in ("", "sub/"):
        props = multistatus(propfind(dav, path, "0", DAVFS2_QUOTA, **DAVFS2))["/" + path]
        used, available = text(props, "quota-used-bytes"), text(props, "quota-available-bytes")
        assert used.isdigit() and int(used) >= 1000, used
        assert available.isdigit() and int(available) > 0, available


def test_windows_lock_without_depth_keeps_a_domain_owner(dav: Dav) -> None:
    """Windows' LOCK has no Depth (so infinity) and a ``DOMAIN\\user`` owner; the
    backslash must survive every later PROPFIND that shows the lock, without a 500
    (wsgidav #259) (items 11, 15)."""
    http, url = dav.http, dav.url
    http.put(url + "f.txt", data=b"x")
    lock = http.request("LOCK", url + "f.txt", data=EXPLORER_LOCKINFO, headers=EXPLORER_LOCK)
    assert lock.status_code == 200
    assert lock.headers["Content-Type"].split(";")[0] == "application/xml"
    token = lock.headers["Lock-Token"]
    assert re.fullmatch(r"<opaquelocktoken:[^<>\s]+>", token)
    active = ET.fromstring(lock.content).find(f"{DAV}lockdiscovery/{DAV}activelock")
    assert active is not None
    assert active.findtext(f"{DAV}depth") == "infinity"
    assert active.findtext(f"{DAV}owner/{DAV}href") == "DOMAIN\\user"
    assert active.findtext(f"{DAV}locktoken/{DAV}href") == token[1:-1]
    timeout = active.findtext(f"{DAV}timeout") or ""
    assert re.fullmatch(r"Second-\d+", timeout) and 3500 < int(timeout.split("-")[1]) <= 3600

    asked = (
        '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop><D:lockdiscovery/>'
        "</D:prop></D:propfind>"
    )
    for path, depth, body in (("f.txt", "0", asked), ("", "1", asked), ("", "1", b""), ("f.txt", "0", b"")):
        entry = multistatus(propfind(dav, path, depth, body, **EXPLORER))["/f.txt"]
        owner = ok(entry, "lockdiscovery").find(f"{DAV}activelock/{DAV}owner/{DAV}href")
        assert owner is not None and owner.text == "DOMAIN\\user", (path, depth, body)
    assert http.request("UNLOCK", url + "f.txt", headers={**EXPLORER, "Lock-Token": token}).status_code == 204


@pytest.mark.parametrize("form", ["<token>", "bare token"])
def test_unlock_takes_the_token_with_or_without_angle_brackets(dav: Dav, form: str) -> None:
    """``Lock-Token: <opaquelocktoken:…>`` as RFC 4918 writes it, and the bare token older
    Windows clients send; either releases the lock (item 14)."""
    http, url = dav.http, dav.url + "f.txt"
    http.put(url, data=b"before")
    token = http.request("LOCK", url, data=EXPLORER_LOCKINFO, headers=EXPLORER_LOCK).headers["Lock-Token"]
    assert http.put(url, data=b"refused").status_code == 423
    sent = token if form == "<token>" else token.strip("<>")
    assert http.request("UNLOCK", url, headers={**EXPLORER, "Lock-Token": sent}).status_code == 204
    assert http.put(url, data=b"after").status_code == 204
    assert http.get(url).content == b"after"


def test_composed_and_decomposed_names_are_distinct_files(dav: Dav) -> None:
    """ "ü" composed (NFC, ``%C3%BC``: Windows, Linux) and decomposed (NFD, ``u%CC%88``:
    macOS) are two names for the server, each round-trips, and hrefs use uppercase
    percent-encoding, which gvfs compares literally (item 32)."""
    http, url = dav.http, dav.url
    nfc, nfd = "%C3%BCber.txt", "u%CC%88ber.txt"
    assert http.put(url + nfc, data=b"composed").status_code == 201
    assert http.put(url + nfd, data=b"decomposed").status_code == 201
    assert http.get(url + nfc).content == b"composed"
    assert http.get(url + nfd).content == b"decomposed"
    assert http.get(url + nfc.lower()).content == b"composed"  # %c3%bc is the same name

    listing = multistatus(propfind(dav, "", "1", GVFS_PROPFIND, **GVFS))
    assert {"/" + nfc, "/" + nfd} <= set(listing)
    assert text(listing["/" + nfc], "getcontentlength") == str(len(b"composed"))
    assert text(listing["/" + nfd], "getcontentlength") == str(len(b"decomposed"))
    assert set(multistatus(propfind(dav, nfc.lower(), "0", GVFS_PROPFIND, **GVFS))) == {"/" + nfc}
    wsgidav_listing = propfind(dav, "", "1", DAVFS2_PROPFIND, **DAVFS2)  # not davfs's own listing
    for answer in (propfind(dav, "", "1", **GVFS), wsgidav_listing):
        escapes = re.findall(r"%[0-9A-Fa-f]{2}", "".join(multistatus(answer)))
        assert escapes and all(e == e.upper() for e in escapes), escapes

    assert http.delete(url + nfd).status_code == 204
    assert http.get(url + nfd).status_code == 404
    assert http.get(url + nfc).content == b"composed"
