"""Every WebDAV method over real HTTP against a cheroot server on loopback, with the
statuses clients depend on (shared/notes/webdav-client-quirks.md, sections C–E). What
particular clients send, request by request, is replayed in test_clients.py."""

from __future__ import annotations

import http.client
import os
import re
import xml.etree.ElementTree as ET
from urllib.parse import quote, urlsplit

import pytest

MiB = 1024 * 1024
DAV = "{DAV:}"

PROPPATCH_WIN32 = """<?xml version="1.0" encoding="utf-8" ?>
<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop>
<Z:Win32CreationTime>Mon, 02 Jan 2023 03:04:05 GMT</Z:Win32CreationTime>
<Z:Win32LastAccessTime>Mon, 02 Jan 2023 03:04:05 GMT</Z:Win32LastAccessTime>
<Z:Win32LastModifiedTime>Mon, 02 Jan 2023 03:04:05 GMT</Z:Win32LastModifiedTime>
<Z:Win32FileAttributes>00000020</Z:Win32FileAttributes>
</D:prop></D:set></D:propertyupdate>"""

LOCKINFO = """<?xml version="1.0" encoding="utf-8" ?>
<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>
<D:owner><D:href>DOMAIN\\user</D:href></D:owner></D:lockinfo>"""


def propfind(http, url, depth="1", body=None):
    r = http.request("PROPFIND", url, headers={"Depth": depth}, data=body)
    assert r.status_code == 207, r.text
    return ET.fromstring(r.content)


def responses(tree):
    """href → {prop name: element} for 200 propstats."""
    result = {}
    for resp in tree.findall(f"{DAV}response"):
        href = resp.find(f"{DAV}href").text
        props = {}
        for propstat in resp.findall(f"{DAV}propstat"):
            if "200" in propstat.find(f"{DAV}status").text:
                for prop in propstat.find(f"{DAV}prop"):
                    props[prop.tag] = prop
        result[href] = props
    return result


def test_options_advertises_class_2(server, http):
    r = http.options(server.url)
    assert r.status_code == 200
    assert r.headers["DAV"].replace(" ", "").startswith("1,2")
    assert r.headers["MS-Author-Via"] == "DAV"
    for method in ("LOCK", "UNLOCK", "PROPPATCH", "COPY", "MOVE", "DELETE"):
        assert method in r.headers["Allow"]
    unmapped = http.options(server.url + "new-name")
    for method in ("PUT", "MKCOL"):
        assert method in unmapped.headers["Allow"]


def test_put_get_head_round_trip_across_chunks(server, http):
    data = os.urandom(3 * MiB + 12345)
    r = http.put(server.url + "big.bin", data=data)
    assert r.status_code == 201
    etag = r.headers["ETag"]
    r = http.get(server.url + "big.bin")
    assert r.status_code == 200 and r.content == data
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.headers["ETag"] == etag
    assert "Last-Modified" in r.headers
    head = http.head(server.url + "big.bin")
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data)) and not head.content
    assert http.get(server.url + "big.bin", headers={"Translate": "f"}).content == data


def test_put_new_is_201_replace_is_204_and_etag_changes_with_content(server, http):
    url = server.url + "f.txt"
    first = http.put(url, data=b"one")
    assert first.status_code == 201
    again = http.put(url, data=b"one")
    assert again.status_code == 204 and again.headers["ETag"] == first.headers["ETag"]
    changed = http.put(url, data=b"two")
    assert changed.status_code == 204 and changed.headers["ETag"] != first.headers["ETag"]
    assert http.get(url).content == b"two"


def test_empty_put(server, http):
    assert http.put(server.url + "empty", data=b"").status_code == 201
    assert http.put(server.url + "empty", data=b"").status_code == 204
    assert http.get(server.url + "empty").content == b""


def test_chunked_put(server, http):
    data = os.urandom(2 * MiB + 7)
    r = http.put(server.url + "chunked.bin", data=iter([data[:1000], data[1000:MiB], data[MiB:]]))
    assert r.status_code == 201
    assert http.get(server.url + "chunked.bin").content == data


def test_put_into_missing_folder_is_409_and_onto_folder_is_405(server, http):
    assert http.put(server.url + "nope/f.txt", data=b"x").status_code == 409
    assert http.request("MKCOL", server.url + "dir").status_code == 201
    assert http.put(server.url + "dir", data=b"x").status_code == 405


@pytest.mark.parametrize(
    "header, start, end",
    [
        ("bytes=10-19", 10, 19),
        ("bytes=-5", None, None),
        ("bytes=1048570-1048590", 1048570, 1048590),
        ("bytes=2000000-", 2000000, None),
    ],
)
def test_ranges(server, http, header, start, end):
    data = os.urandom(2 * MiB + 100)
    http.put(server.url + "r.bin", data=data)
    r = http.get(server.url + "r.bin", headers={"Range": header})
    assert r.status_code == 206
    if start is None:
        start, end = len(data) - 5, len(data) - 1
    if end is None:
        end = len(data) - 1
    assert r.content == data[start : end + 1]
    assert r.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
    assert r.headers["Content-Length"] == str(end - start + 1)


def test_range_beyond_end_is_416(server, http):
    http.put(server.url + "r.bin", data=b"0123456789")
    r = http.get(server.url + "r.bin", headers={"Range": "bytes=10-20"})
    assert r.status_code == 416


def test_conditional_requests(server, http):
    url = server.url + "c.txt"
    etag = http.put(url, data=b"abc").headers["ETag"]
    assert http.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert http.put(url, data=b"new", headers={"If-Match": '"stale"'}).status_code == 412
    assert http.put(url, data=b"new", headers={"If-None-Match": "*"}).status_code == 412
    assert http.put(server.url + "fresh.txt", data=b"x", headers={"If-None-Match": "*"}).status_code == 201
    assert http.put(url, data=b"new", headers={"If-Match": etag}).status_code == 204
    assert http.get(url).content == b"new"


def test_mkcol_statuses(server, http):
    assert http.request("MKCOL", server.url + "a").status_code == 201
    assert http.request("MKCOL", server.url + "a").status_code == 405
    assert http.request("MKCOL", server.url + "missing/b").status_code == 409


def test_delete_recursive(server, http):
    http.request("MKCOL", server.url + "d")
    http.request("MKCOL", server.url + "d/e")
    http.put(server.url + "d/e/f.txt", data=b"x")
    http.put(server.url + "keep.txt", data=b"x")
    assert http.delete(server.url + "d").status_code == 204
    assert http.get(server.url + "d/e/f.txt").status_code == 404
    assert http.request("PROPFIND", server.url + "d", headers={"Depth": "0"}).status_code == 404
    assert http.get(server.url + "keep.txt").status_code == 200
    assert http.delete(server.url + "d").status_code == 404


def test_move_statuses_and_content(server, http):
    data = os.urandom(MiB + 3)
    http.put(server.url + "a.bin", data=data)
    http.put(server.url + "b.bin", data=b"other")
    dest = lambda name: {"Destination": server.url + name}  # noqa: E731
    assert (
        http.request("MOVE", server.url + "a.bin", headers={**dest("c.bin"), "Overwrite": "F"}).status_code
        == 201
    )
    assert http.get(server.url + "a.bin").status_code == 404
    assert http.get(server.url + "c.bin").content == data
    assert (
        http.request("MOVE", server.url + "c.bin", headers={**dest("b.bin"), "Overwrite": "F"}).status_code
        == 412
    )
    assert (
        http.request("MOVE", server.url + "c.bin", headers={**dest("b.bin"), "Overwrite": "T"}).status_code
        == 204
    )
    assert http.get(server.url + "b.bin").content == data
    http.request("MKCOL", server.url + "folder")
    http.put(server.url + "folder/x.txt", data=b"x")
    assert http.request("MOVE", server.url + "folder", headers=dest("moved")).status_code == 201
    assert http.get(server.url + "moved/x.txt").content == b"x"
    assert http.request("MOVE", server.url + "moved", headers=dest("moved/inner")).status_code == 403
    assert http.request("MOVE", server.url + "b.bin", headers=dest("missing/x")).status_code == 409


def test_copy_shares_chunks_and_is_independent(server, http):
    data = os.urandom(2 * MiB)
    http.put(server.url + "src.bin", data=data)
    http.request("MKCOL", server.url + "tree")
    http.put(server.url + "tree/a.txt", data=b"a")
    puts_before = len(list(server.app.drive.store.iter_chunks()))
    assert (
        http.request(
            "COPY", server.url + "src.bin", headers={"Destination": server.url + "dst.bin"}
        ).status_code
        == 201
    )
    assert len(list(server.app.drive.store.iter_chunks())) == puts_before  # metadata only
    http.put(server.url + "src.bin", data=b"changed")
    assert http.get(server.url + "dst.bin").content == data
    assert (
        http.request("COPY", server.url + "tree", headers={"Destination": server.url + "tree2"}).status_code
        == 201
    )
    assert http.get(server.url + "tree2/a.txt").content == b"a"
    assert (
        http.request(
            "COPY", server.url + "dst.bin", headers={"Destination": server.url + "src.bin", "Overwrite": "T"}
        ).status_code
        == 204
    )
    assert http.get(server.url + "src.bin").content == data


def test_propfind_depths(server, http):
    """Which members each Depth lists; the properties themselves are in test_clients.py."""
    http.request("MKCOL", server.url + "Folder")
    http.put(server.url + "Folder/a.txt", data=b"12345")
    http.request("MKCOL", server.url + "Folder/sub")
    http.put(server.url + "Folder/sub/deeper.txt", data=b"x")
    assert set(responses(propfind(http, server.url + "Folder/", depth="1"))) == {
        "/Folder/",
        "/Folder/a.txt",
        "/Folder/sub/",
    }
    assert set(responses(propfind(http, server.url + "Folder/", depth="0"))) == {"/Folder/"}
    assert set(responses(propfind(http, server.url + "Folder/a.txt", depth="1"))) == {"/Folder/a.txt"}
    assert http.request("PROPFIND", server.url + "missing", headers={"Depth": "0"}).status_code == 404


def test_propfind_depth_infinity_is_configurable(start_server, http):
    closed = start_server()
    http.request("MKCOL", closed.url + "a")
    http.put(closed.url + "a/f", data=b"x")
    r = http.request("PROPFIND", closed.url, headers={"Depth": "infinity"})
    assert r.status_code == 403 and "propfind-finite-depth" in r.text
    assert http.request("PROPFIND", closed.url).status_code == 403  # no Depth means infinity
    opened = start_server(propfind_infinity=True)
    http.request("MKCOL", opened.url + "a")
    http.put(opened.url + "a/f", data=b"x")
    assert set(responses(propfind(http, opened.url, depth="infinity"))) == {"/", "/a/", "/a/f"}


def test_dead_properties_persist_and_follow_copy_move_delete(server, http):
    http.put(server.url + "p.txt", data=b"x")
    body = '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:X="urn:x"><D:set><D:prop><X:color>red</X:color></D:prop></D:set></D:propertyupdate>'
    r = http.request("PROPPATCH", server.url + "p.txt", data=body)
    assert r.status_code == 207 and "200" in r.text
    ask = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:X="urn:x"><D:prop><X:color/></D:prop></D:propfind>'

    def color(name):
        props = responses(propfind(http, server.url + name, depth="0", body=ask))
        element = next(iter(props.values())).get("{urn:x}color")
        return None if element is None else element.text

    assert color("p.txt") == "red"
    http.request("COPY", server.url + "p.txt", headers={"Destination": server.url + "copy.txt"})
    assert color("copy.txt") == "red"
    http.request("MOVE", server.url + "p.txt", headers={"Destination": server.url + "moved.txt"})
    assert color("moved.txt") == "red"
    http.delete(server.url + "moved.txt")
    http.put(server.url + "moved.txt", data=b"new file")
    assert color("moved.txt") is None


def test_locked_file_refuses_writes_and_delete_without_token(server, http):
    http.put(server.url + "l.txt", data=b"x")
    token = http.request("LOCK", server.url + "l.txt", data=LOCKINFO).headers["Lock-Token"]
    assert http.delete(server.url + "l.txt").status_code == 423
    assert http.request("PROPPATCH", server.url + "l.txt", data=PROPPATCH_WIN32).status_code == 423
    assert http.delete(server.url + "l.txt", headers={"If": f"({token})"}).status_code == 204


def test_locks_survive_a_restart(start_server, tmp_path, http):
    first = start_server(data_dir=tmp_path / "d")
    http.put(first.url + "l.txt", data=b"x")
    token = http.request("LOCK", first.url + "l.txt", data=LOCKINFO).headers["Lock-Token"]
    first.stop()
    second = start_server(data_dir=tmp_path / "d")
    assert http.put(second.url + "l.txt", data=b"y").status_code == 423
    assert http.put(second.url + "l.txt", data=b"y", headers={"If": f"({token})"}).status_code == 204


def test_non_ascii_names_round_trip(server, http):
    for name in ("Grüße.txt", "日本語 файл.txt", "u\u0308ber.txt"):
        url = server.url + quote(name)
        assert http.put(url, data=name.encode()).status_code == 201
        assert http.get(url).content == name.encode()
    listing = http.request("PROPFIND", server.url, headers={"Depth": "1"}).text
    assert "Gr%C3%BC%C3%9Fe.txt" in listing  # uppercase percent-encoding


def test_bad_paths_are_refused(server, http):
    conn = http_connection(server.url)
    conn.request("GET", "/a/../../etc/passwd")
    assert conn.getresponse().status in (400, 404)
    conn = http_connection(server.url)
    conn.request("PUT", "/x%00y", body=b"x")
    assert conn.getresponse().status == 400
    assert http.get(server.url).status_code == 200


def test_browser_listing(start_server, http):
    server = start_server(windows_names=False)  # a name with <> in it, from a drive Windows does not map
    http.put(server.url + "shown.txt", data=b"x")
    http.put(server.url + quote("<img src=x onerror=alert(1)>.txt"), data=b"x")
    r = http.get(server.url, headers={"Accept": "text/html"})
    assert r.status_code == 200 and "shown.txt" in r.text
    assert "<img" not in r.text and "&lt;img src=x onerror=alert(1)&gt;.txt" in r.text  # names are escaped


def http_connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    assert parts.hostname is not None
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


def test_folder_move_with_a_failed_condition_loses_no_file(server, http):
    """wsgidav falls back to member-by-member MOVE when a member fails an If-* check."""
    http.request("MKCOL", server.url + "m")
    http.put(server.url + "m/a.txt", data=b"a")
    etag_b = http.put(server.url + "m/b.txt", data=b"b").headers["ETag"]
    r = http.request(
        "MOVE", server.url + "m", headers={"Destination": server.url + "m2", "If-None-Match": etag_b}
    )
    assert r.status_code in (207, 412)
    for name, content in (("a.txt", b"a"), ("b.txt", b"b")):
        copies = [http.get(server.url + f"{folder}/{name}") for folder in ("m", "m2")]
        assert any(c.status_code == 200 and c.content == content for c in copies), name


def test_delete_of_a_tree_with_a_locked_member_keeps_the_member(server, http):
    http.request("MKCOL", server.url + "D")
    http.request("MKCOL", server.url + "D/sub")
    http.put(server.url + "D/sub/locked.txt", data=b"keep me")
    http.put(server.url + "D/free.txt", data=b"x")
    token = http.request("LOCK", server.url + "D/sub/locked.txt", data=LOCKINFO).headers["Lock-Token"]
    r = http.delete(server.url + "D")
    assert r.status_code == 207 and "423" in r.text
    assert http.get(server.url + "D/sub/locked.txt").content == b"keep me"
    assert http.get(server.url + "D/free.txt").status_code == 404
    assert (
        http.delete(server.url + "D", headers={"If": f"<{server.url}D/sub/locked.txt> ({token})"}).status_code
        == 204
    )
    assert http.get(server.url + "D/sub/locked.txt").status_code == 404


def test_oversized_requests_are_refused_before_they_are_read(server, http):
    conn = http_connection(server.url)
    conn.putrequest("PROPPATCH", "/")
    conn.putheader("Content-Length", str(900 * MiB))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn = http_connection(server.url)
    conn.putrequest("GET", "/" + "a" * (100 * 1024))
    conn.endheaders()
    assert conn.getresponse().status in (413, 414)
    r = http.get(server.url, headers={"X-Padding": "p" * (100 * 1024)})
    assert r.status_code in (413, 431)
    assert http.options(server.url).status_code == 200  # still serving


def test_impossible_modification_times_are_refused(server, http):
    url = server.url + "t.txt"
    assert http.put(url, data=b"old").status_code == 201
    for bad in ("99999999999999999999", "-5", "soon", "\u00b9"):
        assert http.put(url, data=b"new", headers={"X-OC-Mtime": bad.encode()}).status_code == 400, bad
    assert http.get(url).content == b"old"
    assert http.put(url, data=b"new", headers={"X-OC-Mtime": "1600000000"}).status_code == 204
    head = http.head(url)
    assert head.status_code == 200 and head.headers["Last-Modified"] == "Sun, 13 Sep 2020 12:26:40 GMT"
    r = http.put(
        server.url + "f.bin", data=iter([b"x"]), headers={"X-Expected-Entity-Length": "\u00b9".encode()}
    )
    assert r.status_code == 400


def test_the_root_cannot_be_deleted_replaced_or_moved(server, http):
    assert http.delete(server.url).status_code in (403, 405)
    assert http.put(server.url, data=b"x").status_code in (403, 405, 409)
    assert http.request("MOVE", server.url, headers={"Destination": server.url + "x"}).status_code in (
        403,
        409,
    )
    http.put(server.url + "f", data=b"x")
    assert http.request("MOVE", server.url + "f", headers={"Destination": server.url}).status_code in (
        403,
        409,
    )
    assert http.get(server.url + "f").content == b"x"


def test_propfind_without_depth_on_a_file_is_allowed(server, http):
    http.put(server.url + "f", data=b"x")
    assert http.request("PROPFIND", server.url + "f").status_code == 207
    assert http.request("PROPFIND", server.url + "missing").status_code == 404


def test_if_range(server, http):
    data = os.urandom(3 * MiB)
    etag = http.put(server.url + "r.bin", data=data).headers["ETag"]
    r = http.get(server.url + "r.bin", headers={"Range": "bytes=100-199", "If-Range": etag})
    assert r.status_code == 206 and r.content == data[100:200]
    r = http.get(server.url + "r.bin", headers={"Range": "bytes=100-199", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == data


def test_a_conditional_put_does_not_overwrite_a_change_made_while_it_uploaded(server, http):
    url = server.url + "c.txt"
    etag = http.put(url, data=b"v1").headers["ETag"]
    conn = http_connection(server.url)
    conn.putrequest("PUT", "/c.txt")
    conn.putheader("Content-Length", str(2 * MiB))
    conn.putheader("If-Match", etag)
    conn.endheaders()
    conn.send(b"a" * MiB)  # wsgidav has checked If-Match; the body is still arriving
    assert http.put(url, data=b"v2 from someone else").status_code == 204
    conn.send(b"a" * MiB)
    assert conn.getresponse().status == 412
    assert http.get(url).content == b"v2 from someone else"
    # If-None-Match: * for a name created meanwhile
    conn = http_connection(server.url)
    conn.putrequest("PUT", "/new.txt")
    conn.putheader("Content-Length", "4")
    conn.putheader("If-None-Match", "*")
    conn.endheaders()
    conn.send(b"ab")
    assert http.put(server.url + "new.txt", data=b"first").status_code == 201
    conn.send(b"cd")
    assert conn.getresponse().status == 412
    assert http.get(server.url + "new.txt").content == b"first"


def test_a_full_disk_is_507_and_changes_nothing(start_server, http):
    import errno

    from davfs.stores.base import store_error
    from davfs.stores.memory import MemoryStore

    class FullStore(MemoryStore):
        full = False

        def put_file(self, path, meta):
            if self.full:
                os.unlink(path)
                raise store_error("memory", OSError(errno.ENOSPC, "No space left on device"))
            return super().put_file(path, meta)

    store = FullStore()
    server = start_server(store=store, write_back=False)  # the upload writes to the store itself
    assert http.put(server.url + "f", data=b"old").status_code == 201
    store.full = True
    r = http.put(server.url + "f", data=b"new content")
    assert r.status_code == 507 and "no space left" in r.text.lower()
    assert http.get(server.url + "f").content == b"old"


def test_move_onto_a_folder_that_contains_the_source_is_refused(server, http):
    url = server.url
    http.request("MKCOL", url + "a").raise_for_status()
    http.put(url + "a/b.txt", data=b"keep me").raise_for_status()
    response = http.request("MOVE", url + "a/b.txt", headers={"Destination": url + "a", "Overwrite": "T"})
    assert response.status_code == 403
    assert http.get(url + "a/b.txt").content == b"keep me"
    assert http.request("MOVE", url + "a/b.txt", headers={"Destination": url}).status_code == 403


@pytest.mark.parametrize(
    ("asked", "granted"),
    [
        ("Second-600", 600),
        ("Infinite", 3600),
        ("", 3600),
        ("Infinite, Second-999999999", 86400),
        ("Second-x", 3600),
    ],
)
def test_lock_timeouts_are_bounded(server, http, asked, granted):
    """A client that crashes holding a lock must not keep the file locked for weeks."""
    http.put(server.url + "l.txt", data=b"x")
    headers = {"Timeout": asked} if asked else {}
    r = http.request("LOCK", server.url + "l.txt", data=LOCKINFO, headers=headers)
    assert r.status_code == 200
    match = re.search(r"timeout>Second-(\d+)<", r.text)
    assert match is not None
    seconds = int(match.group(1))
    assert granted - 5 <= seconds <= granted


def test_copy_and_move_without_a_destination_are_bad_requests(server, http):
    http.put(server.url + "a.txt", data=b"x")
    for method in ("COPY", "MOVE"):
        assert http.request(method, server.url + "a.txt", headers={"Destination": ""}).status_code == 400
        assert http.request(method, server.url + "a.txt").status_code == 400
    assert http.get(server.url + "a.txt").content == b"x"


def test_a_store_outage_before_the_first_byte_of_a_range_is_503_with_retry_after(start_server, tmp_path):
    """A range that starts near the end of a block needs the next block for its first
    read; if the store is down then, nothing has been sent and the client can be told
    to retry, not handed a bare 500."""
    import requests

    from davfs.stores.faulty import FaultPlan, FaultyStore
    from davfs.stores.local import LocalStore

    store = FaultyStore(LocalStore(tmp_path / "store"))
    server = start_server(store=store, chunk_size="1MiB")
    data = os.urandom(2 * MiB)
    requests.put(server.url + "f.bin", data=data).raise_for_status()
    server.ship()  # reads come from the store from now on
    store.arm(FaultPlan(get=".U"))  # the first block is fine, the second is unavailable
    r = requests.get(server.url + "f.bin", headers={"Range": f"bytes={MiB - 6}-{MiB + 5}"}, timeout=10)
    assert store.injected[("get", "U")] == 1
    assert r.status_code == 503 and r.headers["Retry-After"] == "1", (r.status_code, r.text)
    store.arm(FaultPlan())
    r = requests.get(server.url + "f.bin", headers={"Range": f"bytes={MiB - 6}-{MiB + 5}"}, timeout=10)
    assert r.status_code == 206 and r.content == data[MiB - 6 : MiB + 6]
