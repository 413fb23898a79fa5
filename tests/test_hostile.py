"""Hostile clients, as probed from outside (on loopback, one address): connection floods,
replayed Digest logins, names that would break listings, requests that cost minutes of
CPU, unbounded locks, inputs that produced 500s and tracebacks, and what leaked: each
test is one finding of that probe of e420754. Every loop is bounded in count and time."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import socket
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock
from urllib.parse import quote, urlsplit

import pytest
import requests
from requests.auth import HTTPDigestAuth

from davfs import auth
from davfs.auth import DigestNonces
from davfs.serving import HEAD_TIMEOUT
from tests.conftest import RunningServer, ServerProcess
from tests.test_hardening import exchange

USERS = {"alice": "wonderland", "bob": {"password": "builder", "read_only": True}}
ALICE = HTTPDigestAuth("alice", "wonderland")
LOCKINFO = (
    '<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:shared/>'
    "</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>{owner}</D:owner></D:lockinfo>"
)


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _threads_and_rss(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]
    return threads, rss


@contextmanager
def flood(url: str, idle: int, slow: int) -> Iterator[tuple[list[socket.socket], list[socket.socket]]]:
    """``idle`` connections that never send a byte and ``slow`` that send part of a
    request head and then nothing; all closed when the block ends."""
    host, port = _address(url)
    quiet: list[socket.socket] = []
    partial: list[socket.socket] = []
    try:
        for _ in range(idle):
            quiet.append(socket.create_connection((host, port), timeout=10))
        for i in range(slow):
            sock = socket.create_connection((host, port), timeout=10)
            sock.sendall(f"PROPFIND /slow{i} HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode())
            partial.append(sock)
        yield quiet, partial
    finally:
        for sock in quiet + partial:
            sock.close()


# --- 1. connections --------------------------------------------------------------------


def test_a_connection_flood_holds_no_thread_and_a_logged_in_client_is_served(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_process(tmp_path / "data", env={"DAVFS_USERS": '{"alice": "wonderland"}'})
    pid = server.process.pid
    with requests.Session() as http:
        http.auth = ALICE
        assert http.put(server.url + "seed.txt", data=b"seed").status_code == 201
        threads_before, rss_before = _threads_and_rss(pid)
        with flood(server.url, idle=1000, slow=200) as (_, slow):
            time.sleep(0.5)  # every connection accepted and waiting
            for attempt in range(3):
                for method, path, body in (
                    ("PROPFIND", "", None),
                    ("GET", "seed.txt", None),
                    ("PUT", f"new{attempt}.txt", b"written during the flood"),
                ):
                    started = time.monotonic()
                    r = http.request(method, server.url + path, data=body, headers={"Depth": "1"}, timeout=10)
                    took = time.monotonic() - started
                    assert r.status_code < 300, (method, r.status_code)
                    assert took < 1.0, f"{method} took {took:.2f} s during the flood"
            threads, rss = _threads_and_rss(pid)
            assert threads <= threads_before + 8, (threads_before, threads)
            assert rss - rss_before < 64 * 1024 * 1024, (rss_before, rss)
            # A partial head is given HEAD_TIMEOUT, then the connection is closed.
            deadline = time.monotonic() + HEAD_TIMEOUT + 10
            closed = 0
            for sock in slow:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    closed += sock.recv(1024) == b""
                except ConnectionResetError:
                    closed += 1
                except TimeoutError:
                    break
            assert closed == len(slow), f"{closed} of {len(slow)} slow connections closed"
        assert http.get(server.url + "new2.txt").content == b"written during the flood"


def test_an_anonymous_upload_is_refused_before_its_body(start_server: Callable[..., RunningServer]) -> None:
    """No 100 Continue and no body read without a login (it used to read and discard
    200 MiB of a claimed 1 GB before answering 401)."""
    server = start_server(users=USERS)
    host, port = _address(server.url)
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            f"PUT /big.bin HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000000000\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            piece = sock.recv(4096)
            assert piece, head
            head += piece
        assert head.startswith(b"HTTP/1.1 401 "), head[:80]
        # Sending the body anyway goes nowhere: the server closes the connection.
        sent = 0
        try:
            while sent < 64 * 1024 * 1024:
                sock.sendall(b"\0" * 65536)
                sent += 65536
        except OSError:
            pass
        assert sent < 64 * 1024 * 1024, "the server kept reading an anonymous body"


# --- 2. Digest -------------------------------------------------------------------------


def _challenge(url: str) -> dict[str, str]:
    header = requests.get(url, timeout=10).headers["WWW-Authenticate"]
    return dict(re.findall(r'(\w+)="?([^",]*)"?', header))


def _digest(
    method: str, uri: str, nonce: str, nc: str, *, user: str = "alice", password: str = "wonderland"
) -> str:
    cnonce = secrets.token_hex(8)
    ha1 = hashlib.md5(f"{user}:davfs:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    response = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
    return (
        f'Digest username="{user}", realm="davfs", nonce="{nonce}", uri="{uri}", algorithm=MD5, '
        f'qop=auth, nc={nc}, cnonce="{cnonce}", response="{response}"'
    )


def test_a_captured_digest_login_cannot_be_replayed(start_server: Callable[..., RunningServer]) -> None:
    server = start_server(users=USERS)
    nonce = _challenge(server.url)["nonce"]
    header = _digest("PUT", "/doc.txt", nonce, "00000001")
    first = requests.put(server.url + "doc.txt", data=b"mine", headers={"Authorization": header}, timeout=10)
    assert first.status_code == 201
    for body in (b"attacker", b"attacker again"):
        replay = requests.put(
            server.url + "doc.txt", data=body, headers={"Authorization": header}, timeout=10
        )
        assert replay.status_code == 401
    # The next count of the same nonce is the client's own next request: accepted.
    again = requests.put(
        server.url + "doc.txt",
        data=b"mine, v2",
        headers={"Authorization": _digest("PUT", "/doc.txt", nonce, "00000002")},
    )
    assert again.status_code == 204
    assert requests.get(server.url + "doc.txt", auth=ALICE, timeout=10).content == b"mine, v2"


@pytest.mark.parametrize(
    "nonce, nc",
    [
        ("AAAA", "00000001"),  # made up
        ("", "00000001"),  # empty
        ("MjAwMS0wMS0wMVQwMDowMDowMA==", "00000001"),  # "2001-01-01T00:00:00", base64
        ("REAL", "1" * 5000),  # a 5,000-character count
        ("REAL", ""),  # no count
    ],
)
def test_forged_nonces_and_counts_are_refused(
    start_server: Callable[..., RunningServer], nonce: str, nc: str
) -> None:
    server = start_server(users=USERS)
    if nonce == "REAL":
        nonce = _challenge(server.url)["nonce"]
    header = _digest("PUT", "/forged.txt", nonce, nc)
    r = requests.put(server.url + "forged.txt", data=b"x", headers={"Authorization": header}, timeout=10)
    assert r.status_code == 401
    assert requests.get(server.url + "forged.txt", auth=ALICE, timeout=10).status_code == 404


def test_an_old_nonce_is_stale_and_the_client_retries_without_asking(
    start_server: Callable[..., RunningServer],
) -> None:
    server = start_server(users=USERS)
    key = server.app.drive.catalog.db.secret("digest-nonce")
    with mock.patch("davfs.auth.time.time", return_value=time.time() - 3600):
        old = DigestNonces(key).issue()  # what this server issued an hour ago
    r = requests.get(server.url, headers={"Authorization": _digest("GET", "/", old, "00000001")}, timeout=10)
    assert r.status_code == 401 and "stale=true" in r.headers["WWW-Authenticate"]
    # A wrong password with the same old nonce is not told it is merely stale.
    wrong = _digest("GET", "/", old, "00000001", password="guess")
    r = requests.get(server.url, headers={"Authorization": wrong}, timeout=10)
    assert r.status_code == 401 and "stale" not in r.headers["WWW-Authenticate"]
    assert requests.get(server.url, auth=ALICE, timeout=10).status_code == 200  # requests retries


def test_an_unknown_user_costs_the_same_hash_as_a_wrong_password(
    start_server: Callable[..., RunningServer],
) -> None:
    server = start_server(users=USERS)
    with mock.patch.object(auth, "password_hash", wraps=auth.password_hash) as hashed:
        assert requests.get(server.url, auth=("nobody", "x"), timeout=10).status_code == 401
        unknown = hashed.call_count
        assert requests.get(server.url, auth=("alice", "x"), timeout=10).status_code == 401
        assert hashed.call_count == 2 * unknown >= 2


# --- 3. names --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bad\ufffe.txt", "bad\uffff.txt", "bad\x01.txt", "bad\\name.txt"])
def test_names_xml_cannot_carry_are_refused_and_listings_stay_valid(
    start_server: Callable[..., RunningServer], name: str
) -> None:
    server = start_server(users=USERS)
    with requests.Session() as http:
        http.auth = ALICE
        r = http.put(server.url + quote(name), data=b"x")
        assert r.status_code == 400 and "not allowed" in r.text
        assert http.request("MKCOL", server.url + quote(name)).status_code == 400
        http.put(server.url + "ok.txt", data=b"x").raise_for_status()
        moved = http.request("MOVE", server.url + "ok.txt", headers={"Destination": server.url + quote(name)})
        assert moved.status_code == 400
        listing = http.request("PROPFIND", server.url, headers={"Depth": "1"})
        assert listing.status_code == 207
        import xml.etree.ElementTree as ET

        ET.fromstring(listing.content)  # valid XML for every client


def test_names_windows_cannot_open_or_tell_apart_are_refused_by_default(
    start_server: Callable[..., RunningServer],
) -> None:
    server = start_server(users=USERS)
    with requests.Session() as http:
        http.auth = ALICE
        for name in ("CON", "nul.txt", "COM1.log", "trailing.", "trailing ", "a:b.txt", "what?.txt", "x|y"):
            r = http.put(server.url + quote(name), data=b"x")
            assert r.status_code == 400 and "Windows" in r.text, (name, r.status_code, r.text)
        http.put(server.url + "Report.docx", data=b"v1").raise_for_status()
        twin = http.put(server.url + "report.DOCX", data=b"v2")
        assert twin.status_code == 409 and "case" in twin.text
        assert http.request("MKCOL", server.url + "REPORT.docx").status_code == 409
        # Explorer renames by case alone: the same file may take the other spelling.
        renamed = http.request(
            "MOVE", server.url + "Report.docx", headers={"Destination": server.url + "REPORT.docx"}
        )
        assert renamed.status_code == 201
        assert http.get(server.url + "REPORT.docx").content == b"v1"
    relaxed = start_server(users=USERS, windows_names=False)
    with requests.Session() as http:
        http.auth = ALICE
        assert http.put(relaxed.url + quote("a:b.txt"), data=b"x").status_code == 201
        http.put(relaxed.url + "Twin", data=b"1").raise_for_status()
        assert http.put(relaxed.url + "twin", data=b"2").status_code == 201


def test_the_reserved_prefix_is_no_destination(start_server: Callable[..., RunningServer]) -> None:
    server = start_server(users=USERS)
    with requests.Session() as http:
        http.auth = ALICE
        http.put(server.url + "f.txt", data=b"x").raise_for_status()
        for destination in (server.url + ".davfs", server.url + ".davfs/kept", "/.davfs/"):
            for method in ("MOVE", "COPY"):
                r = http.request(method, server.url + "f.txt", headers={"Destination": destination})
                assert r.status_code == 400, (method, destination, r.status_code)
        assert http.get(server.url + "f.txt").content == b"x"
        assert [n for n, _ in server.app.drive.catalog.tree.walk()] == ["/f.txt"]


# --- 5. bounded work per request -------------------------------------------------------


def test_thousands_of_ranges_get_the_whole_file_at_once(start_server: Callable[..., RunningServer]) -> None:
    server = start_server(users=USERS)
    data = os.urandom(20_000)
    with requests.Session() as http:
        http.auth = ALICE
        http.put(server.url + "r.bin", data=data).raise_for_status()
        ranges = ",".join(f"{i}-{i}" for i in range(0, 12_000, 2))  # 6,000 one-byte ranges
        started = time.process_time(), time.monotonic()
        r = http.get(server.url + "r.bin", headers={"Range": f"bytes={ranges}"})
        assert r.status_code == 200 and r.content == data
        assert time.monotonic() - started[1] < 1.0
        few = http.get(server.url + "r.bin", headers={"Range": "bytes=0-0,2-2"})
        assert few.status_code == 206 and few.headers["Content-Type"].startswith("multipart/byteranges")


def test_a_proppatch_is_one_transaction_all_or_nothing_and_bounded(
    start_server: Callable[..., RunningServer],
) -> None:
    from tests.test_drive import counted_writes

    server = start_server(users=USERS)
    with requests.Session() as http:
        http.auth = ALICE
        http.put(server.url + "p.txt", data=b"x").raise_for_status()
        with counted_writes(server) as writes:
            r = http.request("PROPPATCH", server.url + "p.txt", data=_proppatch(500))
        assert r.status_code == 207 and "HTTP/1.1 200 OK" in r.text and "HTTP/1.1 424" not in r.text
        assert writes == ["write"]  # 500 properties, one transaction
        assert len(server.app.drive.catalog.tree.dead_props(_node(server, "p.txt"))) == 500
        started = time.monotonic()
        r = http.request("PROPPATCH", server.url + "p.txt", data=_proppatch(25_000))
        assert time.monotonic() - started < 10
        assert r.status_code == 207 and "HTTP/1.1 200 OK" not in r.text  # refused as a whole
        assert len(server.app.drive.catalog.tree.dead_props(_node(server, "p.txt"))) == 500
        # A node holds at most 1,000: the second batch of 600 would pass it.
        r = http.request("PROPPATCH", server.url + "p.txt", data=_proppatch(600, start=500))
        assert r.status_code == 207 and "HTTP/1.1 507" in r.text
        assert len(server.app.drive.catalog.tree.dead_props(_node(server, "p.txt"))) == 500


def _proppatch(count: int, start: int = 0) -> bytes:
    props = "".join(f"<Z:p{i}>v{i}</Z:p{i}>" for i in range(start, start + count))
    return (
        f'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop>{props}'
        "</D:prop></D:set></D:propertyupdate>"
    ).encode()


def _node(server: RunningServer, name: str) -> int:
    node = server.app.drive.catalog.tree.resolve([name])
    assert node is not None
    return node.id


# --- 6. locks --------------------------------------------------------------------------


def test_locks_are_bounded_in_owner_size_and_number(start_server: Callable[..., RunningServer]) -> None:
    from davfs import locks

    server = start_server(users=USERS)
    with requests.Session() as http, mock.patch.object(locks, "MAX_PER_USER", 50):
        http.auth = ALICE
        http.put(server.url + "l.txt", data=b"x").raise_for_status()
        big = http.request("LOCK", server.url + "l.txt", data=LOCKINFO.format(owner="o" * 5000))
        assert big.status_code == 400 and "owner" in big.text
        tokens = []
        for _ in range(50):
            r = http.request("LOCK", server.url + "l.txt", data=LOCKINFO.format(owner="alice"))
            assert r.status_code == 200
            tokens.append(r.headers["Lock-Token"])
        refused = http.request("LOCK", server.url + "l.txt", data=LOCKINFO.format(owner="alice"))
        assert refused.status_code == 507 and "too many locks" in refused.text
        assert (
            http.request("UNLOCK", server.url + "l.txt", headers={"Lock-Token": tokens[0]}).status_code == 204
        )
        assert (
            http.request("LOCK", server.url + "l.txt", data=LOCKINFO.format(owner="alice")).status_code == 200
        )


# --- 7. no 500s, no tracebacks ---------------------------------------------------------


@contextmanager
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    with caplog.at_level(logging.INFO):
        yield
    time.sleep(0.2)  # lines written after the response went out
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not loud, [(r.name, r.getMessage()) for r in loud]


def test_inputs_that_were_500s_are_4xx_without_a_traceback(
    start_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server(users=USERS)
    with requests.Session() as http:
        http.auth = ALICE
        http.put(server.url + "f.txt", data=b"x").raise_for_status()
        nested = "<x>" * 1000 + "deep" + "</x>" * 1000
        with no_errors_logged(caplog):
            r = http.request("LOCK", server.url + "f.txt", data=LOCKINFO.format(owner=nested))
            assert r.status_code == 400 and "nested" in r.text
            r = http.put(server.url + ":dir_browser", data=b"x")
            assert 400 <= r.status_code < 500
            r = http.put(server.url + ":dir_browser/style.css", data=b"x")
            assert 400 <= r.status_code < 500
            # A chunk size no integer holds.
            reply = exchange(
                server.url,
                "PUT",
                "/chunked.bin",
                {
                    "Transfer-Encoding": "chunked",
                    "Authorization": _digest(
                        "PUT", "/chunked.bin", _challenge(server.url)["nonce"], "00000001"
                    ),
                },
                b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
            )
            assert 400 <= reply.status < 500, reply
            # Without a login, a non-PUT chunked body with a bad chunk size.
            reply = exchange(
                server.url, "PROPFIND", "/", {"Transfer-Encoding": "chunked"}, b"zz\r\nabc\r\n0\r\n\r\n"
            )
            assert reply.status == 401
        assert http.get(server.url + "chunked.bin").status_code == 404


def test_trees_deeper_than_the_limit_cannot_be_made_and_the_deepest_copy_and_move(
    start_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    from davfs.paths import MAX_DEPTH

    server = start_server(users=USERS)
    with requests.Session() as http:
        http.auth = ALICE
        path = ""
        for level in range(MAX_DEPTH):
            path += f"{level % 10}/"
            assert http.request("MKCOL", server.url + path).status_code == 201, level
        with no_errors_logged(caplog):
            r = http.request("MKCOL", server.url + path + "x/")
            assert r.status_code == 400 and str(MAX_DEPTH) in r.text
            copied = http.request(
                "COPY", server.url + "0/", headers={"Destination": server.url + "c/", "Depth": "infinity"}
            )
            assert copied.status_code == 201
            moved = http.request("MOVE", server.url + "0/", headers={"Destination": server.url + "m/"})
            assert moved.status_code == 201


def test_an_aborted_upload_is_one_line(
    start_server: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server(users=USERS)
    host, port = _address(server.url)
    nonce = _challenge(server.url)["nonce"]
    with caplog.at_level(logging.INFO):
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(
                f"PUT /cut.bin HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000000\r\n"
                f"Authorization: {_digest('PUT', '/cut.bin', nonce, '00000001')}\r\n\r\n".encode()
                + b"\0" * 300_000
            )
        time.sleep(1.0)
    records = [r for r in caplog.records if r.name.startswith(("davfs", "wsgidav"))]
    assert not [r for r in records if r.exc_info or r.levelno >= logging.ERROR], [
        r.getMessage() for r in records
    ]
    assert any("cut.bin" in r.getMessage() and "aborted" in r.getMessage() for r in records)
    assert requests.get(server.url + "cut.bin", auth=ALICE, timeout=10).status_code == 404


def test_a_damaged_block_mid_download_is_one_line(
    start_server: Callable[..., RunningServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from davfs.stores.memory import MemoryStore

    store = MemoryStore()
    server = start_server(users=USERS, store=store, chunk_size="1MiB")
    data = os.urandom(3 * 1024 * 1024)
    requests.put(server.url + "d.bin", data=data, auth=ALICE, timeout=30).raise_for_status()
    server.ship()
    node = server.app.drive.catalog.tree.resolve(["d.bin"])
    assert node is not None and node.version_id is not None
    third = server.app.drive.catalog.tree.snapshot(node.version_id, "/d.bin").extents[2].chunk.locator
    store.corrupt(third, 10)
    with caplog.at_level(logging.INFO):
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(server.url + "d.bin", auth=ALICE, timeout=30).content  # noqa: B018
        time.sleep(0.3)
    messages = [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.exc_info], messages
    assert not any("start_response" in m for m in messages), messages
    assert sum("cut short" in m for m in messages) == 1, messages


# --- 8. leaks --------------------------------------------------------------------------


def test_the_generated_password_is_printed_once_and_the_data_folder_is_private(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = server_process(data, env={"DAVFS_ANONYMOUS": "false"})
    requests.get(first.url, timeout=10)
    first.stop()
    password = re.search(r"password: (\S+)", first.log())
    assert password is not None
    second = server_process(data, env={"DAVFS_ANONYMOUS": "false"})
    second.stop()
    assert password.group(1) not in second.log()
    assert "generated-user.yaml" in second.log()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in [data / "catalog.sqlite", *data.rglob("*.chunk"), *data.rglob("*")]:
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
