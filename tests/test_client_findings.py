"""What outside clients found in round two (davfs2, cadaver, gvfs, rclone mount, curl,
browsers), each as the exchange that showed it. Every test here failed on e420754 but
the path-tagged case of the If test, which shows the absolute-URL case is the odd one.
The cost of locks is measured by bench/bench.py (the Explorer workload), not here.

The requests use the headers of the client that sent them (tests/test_clients.py has
the full client replays; ``dav`` is the logged-in session of tests/dav_client.py)."""

from __future__ import annotations

import http.client
import logging
import os
import re
import time
from email.message import Message
from urllib.parse import quote, urlsplit

import pytest
import requests

from tests.dav_client import Dav, raw_request
from tests.test_clients import DAVFS2, DAVFS2_LOCK, DAVFS2_LOCKINFO, EXPLORER

CADAVER = {"User-Agent": "cadaver/0.24 neon/0.33.0"}


def _connection(dav: Dav) -> http.client.HTTPConnection:
    parts = urlsplit(dav.url)
    assert parts.hostname is not None and parts.port is not None
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


def _authorized(dav: Dav, method: str, path: str, headers: dict[str, str]) -> dict[str, str]:
    return {**headers, **dav.raw_headers(method, path)}


def test_a_304_keeps_the_connection_and_logs_no_error(dav: Dav, caplog: pytest.LogCaptureFixture) -> None:
    """davfs2 revalidates on every open: the 304 must not close the connection (wsgidav
    logged "Invalid Content-Length header in response (None): closing connection")."""
    dav.http.put(dav.url + "c.txt", data=b"cached").raise_for_status()
    etag = dav.http.head(dav.url + "c.txt").headers["ETag"]
    connection = _connection(dav)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # three revalidations over one connection
            connection.request(
                "GET", "/c.txt", headers=_authorized(dav, "GET", "/c.txt", {**DAVFS2, "If-None-Match": etag})
            )
            response = connection.getresponse()
            assert response.status == 304 and response.read() == b""
            assert response.getheader("Connection") != "close"
            assert response.getheader("ETag") == etag
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    connection.close()


def test_a_move_onto_a_locked_file_keeps_the_lock(dav: Dav) -> None:
    """davfs2's save by rename: MOVE notes.txt.tmp over the locked notes.txt, then
    refresh the lock and write; the file stays locked throughout (RFC 4918 7.7)."""
    http, url = dav.http, dav.url
    http.put(url + "notes.txt", data=b"v1", headers=DAVFS2).raise_for_status()
    lock = http.request("LOCK", url + "notes.txt", data=DAVFS2_LOCKINFO, headers=DAVFS2_LOCK)
    assert lock.status_code == 200
    token = lock.headers["Lock-Token"]
    http.put(url + "notes.txt.tmp", data=b"v2", headers=DAVFS2).raise_for_status()
    tagged = {**DAVFS2, "If": f"<{url}notes.txt> ({token})"}
    moved = http.request("MOVE", url + "notes.txt.tmp", headers={**tagged, "Destination": url + "notes.txt"})
    assert moved.status_code == 204
    assert http.get(url + "notes.txt").content == b"v2"
    # Still locked: a write without the token is refused, one with it goes through.
    assert http.put(url + "notes.txt", data=b"intruder", headers=DAVFS2).status_code == 423
    refreshed = http.request(
        "LOCK", url + "notes.txt", headers={**DAVFS2, "If": f"({token})", "Timeout": "Second-1800"}
    )
    assert refreshed.status_code == 200
    assert http.put(url + "notes.txt", data=b"v3", headers=tagged).status_code == 204
    assert (
        http.request("UNLOCK", url + "notes.txt", headers={**DAVFS2, "Lock-Token": token}).status_code == 204
    )
    assert http.get(url + "notes.txt").content == b"v3"


@pytest.mark.parametrize("tag", ["absolute", "path"])
def test_conditions_tagged_with_an_absolute_url_are_checked(dav: Dav, tag: str) -> None:
    """cadaver and davfs2 (neon) tag If lists with absolute URLs; wsgidav compared the
    tag with a path, never matched, and skipped the condition (204 instead of 412)."""
    http, url = dav.http, dav.url
    http.request("MKCOL", url + "cad").raise_for_status()
    etag = http.put(url + "cad/hello.txt", data=b"hello").headers["ETag"]
    resource = f"{url}cad/hello.txt" if tag == "absolute" else "/cad/hello.txt"
    refused = http.put(
        url + "cad/hello.txt", data=b"changed", headers={**CADAVER, "If": f'<{resource}> (["nope"])'}
    )
    assert refused.status_code == 412
    assert http.get(url + "cad/hello.txt").content == b"hello"
    accepted = http.put(
        url + "cad/hello.txt", data=b"changed", headers={**CADAVER, "If": f"<{resource}> ([{etag}])"}
    )
    assert accepted.status_code == 204
    assert http.get(url + "cad/hello.txt").content == b"changed"


def test_several_ranges_come_as_multipart_byteranges(dav: Dav) -> None:
    """Download managers and PDF viewers ask for several ranges at once; wsgidav sent
    only the last one under a 206."""
    data = os.urandom(100_000)
    dav.http.put(dav.url + "doc.pdf", data=data).raise_for_status()
    r = dav.http.get(dav.url + "doc.pdf", headers={"Range": "bytes=0-9,20-29,99990-"})
    assert r.status_code == 206
    kind, _, boundary = r.headers["Content-Type"].partition("; boundary=")
    assert kind == "multipart/byteranges"
    assert int(r.headers["Content-Length"]) == len(r.content)
    parts = _multipart(r.content, boundary)
    assert [(p["Content-Range"], body) for p, body in parts] == [
        ("bytes 0-9/100000", data[0:10]),
        ("bytes 20-29/100000", data[20:30]),
        ("bytes 99990-99999/100000", data[99990:]),
    ]
    assert all(p["Content-Type"] == "application/pdf" for p, _ in parts)
    # Overlapping ranges are merged; one range left is a plain 206.
    merged = dav.http.get(dav.url + "doc.pdf", headers={"Range": "bytes=0-9,5-19"})
    assert merged.status_code == 206 and merged.headers["Content-Range"] == "bytes 0-19/100000"
    assert merged.content == data[:20]


def _multipart(body: bytes, boundary: str) -> list[tuple[Message, bytes]]:
    parts = []
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
        message = Message()
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(": ")
            message[name] = value
        parts.append((message, content.removesuffix(b"\r\n")))
    return parts


def test_the_access_log_shows_names_as_users_see_them(dav: Dav, caplog: pytest.LogCaptureFixture) -> None:
    wanted = ('path="/Résumé.txt"', 'path="/日本語.txt"')
    with caplog.at_level(logging.INFO, logger="davfs.access"):
        for name in ("Résumé.txt", "日本語.txt"):
            dav.http.put(dav.url + quote(name), data=b"x").raise_for_status()
        deadline = time.monotonic() + 10  # the line is written once the response is out
        while time.monotonic() < deadline:
            lines = [r.getMessage() for r in caplog.records if r.name == "davfs.access"]
            if all(any(w in line for line in lines) for w in wanted):
                break
            time.sleep(0.05)
    assert all(any(w in line for line in lines) for w in wanted), lines


def test_browsers_show_what_is_safe_to_show_and_download_the_rest(dav: Dav) -> None:
    for name, disposition in (
        ("paper.pdf", "inline"),
        ("photo.jpg", "inline"),
        ("notes.txt", "inline"),
        ("page.html", "attachment"),  # would run as davfs's own page
        ("drawing.svg", "attachment"),  # SVG runs scripts
        ("archive.zip", "attachment"),
    ):
        dav.http.put(dav.url + name, data=b"content").raise_for_status()
        r = dav.http.get(dav.url + name)
        assert r.headers["Content-Disposition"].split(";")[0] == disposition, name
        assert f'filename="{name}"' in r.headers["Content-Disposition"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_an_empty_file_with_a_range_is_a_200(dav: Dav) -> None:
    """Browsers resume with ``Range: bytes=0-``; an empty file has nothing to cut."""
    dav.http.put(dav.url + "empty.txt", data=b"").raise_for_status()
    r = dav.http.get(dav.url + "empty.txt", headers={"Range": "bytes=0-"})
    assert r.status_code == 200 and r.content == b"" and r.headers["Content-Length"] == "0"


def test_search_is_a_plain_405_without_an_error_in_the_log(
    dav: Dav, caplog: pytest.LogCaptureFixture
) -> None:
    body = '<?xml version="1.0"?><D:searchrequest xmlns:D="DAV:"><D:basicsearch/></D:searchrequest>'
    with caplog.at_level(logging.WARNING):
        r = dav.http.request("SEARCH", dav.url, data=body, headers={"Content-Type": "text/xml"})
    assert r.status_code == 405 and "PROPFIND" in r.headers["Allow"]
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


def test_windows_first_options_needs_no_login_and_nothing_else_does(dav: Dav) -> None:
    """The mini-redirector's first OPTIONS comes without credentials; a 401 makes
    Explorer give up. It learns the DAV class and methods, the same for every path."""
    plain = requests.Session()
    for path in ("", "no/such/path", "dir/"):
        r = plain.options(dav.url + path, headers=EXPLORER)
        assert r.status_code == 200, path
        assert "2" in r.headers["DAV"].replace(" ", "").split(",")
        assert "PROPFIND" in r.headers["Allow"] and "LOCK" in r.headers["Allow"]
    headers = {**EXPLORER, "Depth": "0"}
    assert plain.request("PROPFIND", dav.url, headers=headers).status_code == 401
    assert plain.get(dav.url).status_code == 401
    assert plain.put(dav.url + "x.txt", data=b"x").status_code == 401
    # With an OPTIONS body (none of Windows' has one) the login is asked for.
    assert plain.options(dav.url, data=b"<x/>").status_code == 401


def test_expect_100_is_sent_only_to_a_logged_in_upload(dav: Dav) -> None:
    """A PUT with Expect: 100-continue and no login is refused at once: no 100, no body
    read (the server used to say 100 Continue, then read and discard the body)."""
    parts = urlsplit(dav.url)
    head = (
        f"PUT /big.bin HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Length: 1000000000\r\n"
        "Expect: 100-continue\r\n\r\n"
    )
    with dav.connect() as sock:
        sock.sendall(head.encode())
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer:
            piece = sock.recv(65536)
            assert piece, answer
            answer += piece
        assert time.monotonic() - started < 5
    assert re.match(rb"HTTP/1\.1 401 ", answer), answer[:100]
    # Logged in, the same request gets its 100 and the upload goes through.
    data = os.urandom(100_000)
    headers = {"Content-Length": str(len(data)), "Expect": "100-continue"}
    done = raw_request(dav, "PUT", "/big.bin", headers, data, expect_100=True)
    assert (done.interim, done.status) == ([100], 201)
