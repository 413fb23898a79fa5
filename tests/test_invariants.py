"""The design's invariants 1-4, checked over HTTP against a real cheroot server.

1. Snapshot before streaming: a download that has started finishes with the bytes of the
   version it started on, even if the file is overwritten, moved or deleted meanwhile.
2. Only verified bytes leave the server: a damaged first block is a clean 500; a damaged
   later block cuts the connection, so the client sees a short body, never a wrong byte.
3. Atomic writes: a truncated, aborted or failed PUT leaves the previous version (or no
   file), never a partial or empty one.
4. Nothing lost (crash half): kill -9 during a large PUT leaves a consistent catalog whose
   files hold their last committed content.

Where the wire matters (bodies shorter than Content-Length, chunked bodies that never end,
responses cut after they started) the tests speak raw HTTP/1.1 over a socket.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import logging
import os
import random
import socket
import sqlite3
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import requests
from sqlalchemy import select

from davfs import reader as reader_module
from davfs.catalog import Catalog, content_etag
from davfs.catalog.schema import upload_chunks, uploads
from davfs.chunk import BLOCK_SIZES, CURRENT_FORMAT, ChunkMeta, Piece
from davfs.staging import StagingArea
from davfs.stores.faulty import FaultPlan, FaultyStore
from davfs.stores.local import LocalStore
from davfs.stores.memory import MemoryStore

MiB = 1024 * 1024
TIMEOUT = 15  # seconds; every wait in this module is bounded by it


# --- helpers ------------------------------------------------------------------------


def payload(size: int, seed: int) -> bytes:
    """Deterministic, incompressible, distinct per seed (so no chunk is deduplicated)."""
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def at(server, path: str) -> str:
    """The URL of a DAV path on a RunningServer."""
    url: str = server.url
    return url.rstrip("/") + path


def segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def put(url: str, data: bytes) -> requests.Response:
    response = requests.put(url, data=data, timeout=TIMEOUT)
    assert response.status_code in (201, 204), (response.status_code, response.text[:500])
    return response


def propfind_names(folder_url: str) -> set[str]:
    """Member names of a folder from PROPFIND Depth 1 (the folder itself excluded)."""
    response = requests.request("PROPFIND", folder_url, headers={"Depth": "1"}, timeout=TIMEOUT)
    assert response.status_code == 207, response.text[:500]
    root = ET.fromstring(response.content)
    own = urlsplit(folder_url).path.rstrip("/")
    names = set()
    for href in root.iter("{DAV:}href"):
        path = unquote(urlsplit(href.text or "").path).rstrip("/")
        if path != own:
            names.add(path.rsplit("/", 1)[-1])
    return names


def catalog_files(catalog: Catalog) -> dict[str, tuple[int, str | None]]:
    """Every file as path → (size, etag), checking that each current version's snapshot
    is whole: its extents add up to its size."""
    files = {}
    for path, node in catalog.tree.walk():
        if node.is_dir:
            continue
        assert node.version_id is not None, f"{path} has no version"
        snapshot = catalog.tree.snapshot(node.version_id, path)  # raises on missing extents
        assert sum(e.length for e in snapshot.extents) == snapshot.size == node.size, path
        files[path] = (node.size, node.etag)
    return files


def open_upload_count(catalog: Catalog) -> int:
    with catalog.db.engine.connect() as conn:
        return len(conn.execute(select(uploads.c.id)).all())


def assert_file_state(server, path: str, expected: bytes | None) -> None:
    """GET, the catalog and PROPFIND Depth 1 all agree that ``path`` holds ``expected``
    (``None``: the file does not exist)."""
    url = at(server, path)
    response = requests.get(url, timeout=TIMEOUT)
    node = server.app.drive.catalog.tree.resolve(segments(path))
    parent_url = at(server, path.rsplit("/", 1)[0] + "/")
    name = path.rsplit("/", 1)[-1]
    if expected is None:
        assert response.status_code == 404, (response.status_code, len(response.content))
        assert node is None, f"catalog has {node} for {path}"
        assert name not in propfind_names(parent_url)
        return
    assert response.status_code == 200, response.status_code
    assert len(response.content) == len(expected)
    assert sha(response.content) == sha(expected), "GET returned other bytes"
    assert node is not None and not node.is_dir
    assert node.size == len(expected)
    assert response.headers["ETag"] == f'"{node.etag}"'
    assert name in propfind_names(parent_url)


def assert_catalog_clean(server) -> None:
    """No file is partial, none is empty (these tests never store an empty file), no
    aborted upload is still open in the journal, and no spool file was left behind."""
    files = catalog_files(server.app.drive.catalog)
    empty = [p for p, (size, _) in files.items() if size == 0]
    assert not empty, f"empty files left behind: {empty}"
    assert open_upload_count(server.app.drive.catalog) == 0
    spool_dir = server.app.drive.store.properties.spool_dir
    assert spool_dir is not None, "use a store with its own spool folder"
    assert os.listdir(spool_dir) == [], "spool files left behind"


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


def recv_until_closed(sock: socket.socket, *, or_complete: bool = False) -> bytes:
    """Everything the server sends until it closes the connection, or (``or_complete``)
    until a whole response with its Content-Length has arrived on a keep-alive
    connection. Bounded by the socket timeout: a server that neither finishes nor cuts
    fails the test."""
    data = bytearray()
    while True:
        try:
            piece = sock.recv(256 * 1024)
        except ConnectionResetError:
            break
        if not piece:
            break
        data += piece
        if or_complete and b"\r\n\r\n" in data:
            _, headers, body = split_response(bytes(data))
            if len(body) >= int(headers.get("content-length", "-1")) >= 0:
                break
    return bytes(data)


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {raw[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, body


def raw_request(server, head: str, body_parts: Iterator[bytes] | list[bytes], *, close: str) -> bytes | None:
    """Send a request head and body pieces, then ``close="half"`` (shutdown the sending
    side and read the answer) or ``close="full"`` (drop the connection; returns None)."""
    with socket.create_connection(address(server.url), timeout=TIMEOUT) as sock:
        sock.sendall(head.encode("latin-1"))
        for part in body_parts:
            sock.sendall(part)
        if close == "full":
            return None  # leaving the block closes the socket without reading the answer
        sock.shutdown(socket.SHUT_WR)
        return recv_until_closed(sock)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class AbortWatcher(logging.Handler):
    """Notices the writer's "upload of <path> aborted" line: the moment a server has
    finished dealing with a PUT whose client went away without reading the answer."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.paths: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("upload of "):
            args = record.args
            self.paths.append(str(args[0]) if isinstance(args, tuple) and args else record.getMessage())


@pytest.fixture
def abort_watcher() -> Iterator[AbortWatcher]:
    logger = logging.getLogger("davfs.writer")
    watcher = AbortWatcher()
    old_level = logger.level
    logger.addHandler(watcher)
    logger.setLevel(logging.INFO)
    yield watcher
    logger.removeHandler(watcher)
    logger.setLevel(old_level)


# --- invariant 1: snapshot before streaming --------------------------------------------


class SlowDownload:
    """A GET whose body is read on another thread: the first piece, then a pause until
    :meth:`resume`, then the rest in small pieces."""

    def __init__(self, url: str) -> None:
        self.first_piece = threading.Event()
        self._resume = threading.Event()
        self.body = bytearray()
        self.error: BaseException | None = None
        self.response = requests.get(url, stream=True, timeout=TIMEOUT)
        assert self.response.status_code == 200
        self.content_length = int(self.response.headers["Content-Length"])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.first_piece.wait(TIMEOUT), "first piece never arrived"

    def _run(self) -> None:
        try:
            pieces = self.response.iter_content(64 * 1024)
            self.body += next(pieces)
            self.first_piece.set()
            if not self._resume.wait(TIMEOUT):
                raise TimeoutError("never resumed")
            for count, piece in enumerate(pieces):
                self.body += piece
                if count % 8 == 0:
                    time.sleep(0.005)  # a slow client
        except BaseException as exc:  # noqa: B036 - reported to the test thread
            self.error = exc
        finally:
            self.first_piece.set()
            self.response.close()

    def finish(self) -> bytes:
        self._resume.set()
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "download did not finish"
        if self.error is not None:
            raise self.error
        return bytes(self.body)


@pytest.fixture
def gated_server(start_server, tmp_path: Path):
    """A server whose store lets the first two block reads through and holds every later
    one until ``store.gate`` is set: whatever the download reads after the first blocks
    is fetched from the store after the test changed the file."""
    store = FaultyStore(LocalStore(tmp_path / "gated-store"), FaultPlan(gate_timeout=TIMEOUT))
    server = start_server(store=store, prefetch_blocks=1, chunk_size="1MiB")
    return server, store


@pytest.mark.parametrize("change", ["overwrite", "move", "delete"])
def test_download_finishes_with_the_version_it_started_on(gated_server, change: str) -> None:
    server, store = gated_server
    old = payload(5 * MiB, seed=1)
    new = payload(5 * MiB + 12345, seed=2)
    put(at(server, "/movie.bin"), old)
    server.ship()  # the download reads from the store, through the gate
    node = server.app.drive.catalog.tree.resolve(["movie.bin"])
    assert node is not None and node.version_id is not None
    old_chunks = {
        e.chunk.locator for e in server.app.drive.catalog.tree.snapshot(node.version_id, "/movie.bin").extents
    }
    assert len(old_chunks) == 5

    store.arm(
        FaultPlan(get=".." + "W" * 64, gate_timeout=TIMEOUT)
    )  # block 0 (+ one more) now, the rest after the change
    download = SlowDownload(at(server, "/movie.bin"))
    assert download.content_length == len(old)
    assert len(download.body) < len(old)
    # Wait until the server is held at the gate, reading the 3rd block of the old version.
    wait_for(lambda: len(store.touched["get"]) >= 3, "the download to reach the gate")
    assert set(store.touched["get"]) <= old_chunks

    # The request handler has long returned; the body is in flight. Change the file.
    if change == "overwrite":
        response = requests.put(at(server, "/movie.bin"), data=new, timeout=TIMEOUT)
        assert response.status_code == 204, response.text
    elif change == "move":
        response = requests.request(
            "MOVE",
            at(server, "/movie.bin"),
            headers={"Destination": at(server, "/moved.bin")},
            timeout=TIMEOUT,
        )
        assert response.status_code == 201, response.text
    else:
        response = requests.delete(at(server, "/movie.bin"), timeout=TIMEOUT)
        assert response.status_code == 204, response.text
    store.gate.set()  # the held block reads of the old version go ahead now

    # A fresh GET sees the change while the old download is still paused mid-body.
    after = requests.get(at(server, "/movie.bin"), timeout=TIMEOUT)
    if change == "overwrite":
        assert after.status_code == 200 and sha(after.content) == sha(new)
    else:
        assert after.status_code == 404
    if change == "move":
        moved = requests.get(at(server, "/moved.bin"), timeout=TIMEOUT)
        assert moved.status_code == 200 and sha(moved.content) == sha(old)

    body = download.finish()
    assert len(body) == len(old)
    assert sha(body) == sha(old), "the download mixed in bytes of another version"
    assert_file_state(server, "/movie.bin", new if change == "overwrite" else None)
    if change == "move":
        assert_file_state(server, "/moved.bin", old)


# --- invariant 2: only verified bytes leave ----------------------------------------------


@pytest.fixture
def memory_server(start_server):
    store = MemoryStore()
    return start_server(store=store, chunk_size="1MiB"), store


def stored_chunks(server, path: str) -> list[str]:
    """Where the store keeps the file's chunks (shipped there first, from write-back)."""
    server.ship()
    node = server.app.drive.catalog.tree.resolve(segments(path))
    assert node is not None and node.version_id is not None
    return [e.chunk.locator for e in server.app.drive.catalog.tree.snapshot(node.version_id, path).extents]


def raw_get(server, path: str, range_header: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET on a keep-alive connection, read until the server closes it: a response that
    neither completes nor is cut times out instead of passing."""
    head = f"GET {path} HTTP/1.1\r\nHost: {address(server.url)[0]}\r\n"
    if range_header:
        head += f"Range: {range_header}\r\n"
    with socket.create_connection(address(server.url), timeout=TIMEOUT) as sock:
        sock.sendall((head + "\r\n").encode())
        return split_response(recv_until_closed(sock, or_complete=True))


def test_damaged_first_block_is_a_clean_500(memory_server, caplog) -> None:
    server, store = memory_server
    content = payload(4 * MiB, seed=3)
    put(at(server, "/doc.bin"), content)
    chunk_refs = stored_chunks(server, "/doc.bin")
    store.corrupt(chunk_refs[0], 1000)
    before = reader_module.integrity_failures.failures
    caplog.set_level(logging.ERROR, logger="davfs.reader")

    response = requests.get(at(server, "/doc.bin"), timeout=TIMEOUT)
    assert response.status_code == 500
    assert content[:64] not in response.content and content[1024:1088] not in response.content
    assert len(response.content) < 64 * 1024

    ranged = requests.get(at(server, "/doc.bin"), headers={"Range": "bytes=10-99"}, timeout=TIMEOUT)
    assert ranged.status_code == 500
    # Intact blocks still serve ranges.
    ranged = requests.get(
        at(server, "/doc.bin"), headers={"Range": f"bytes={MiB + 5}-{2 * MiB + 9}"}, timeout=TIMEOUT
    )
    assert ranged.status_code == 206 and ranged.content == content[MiB + 5 : 2 * MiB + 10]

    assert reader_module.integrity_failures.failures >= before + 2
    failures = [
        r for r in caplog.records if r.name == "davfs.reader" and "integrity failure" in r.getMessage()
    ]
    assert failures and all("/doc.bin" in r.getMessage() for r in failures)
    assert chunk_refs[0] in failures[0].getMessage()


def test_damaged_later_block_cuts_the_response(memory_server, caplog) -> None:
    server, store = memory_server
    content = payload(4 * MiB, seed=4)
    put(at(server, "/video.bin"), content)
    chunk_refs = stored_chunks(server, "/video.bin")
    store.corrupt(chunk_refs[2], 300 * 1024)  # inside the 3rd MiB
    block_size = BLOCK_SIZES[CURRENT_FORMAT]
    damaged = 2 * MiB + 300 * 1024 // block_size * block_size  # where the damaged block starts
    before = reader_module.integrity_failures.failures
    caplog.set_level(logging.ERROR, logger="davfs.reader")

    status, headers, body = raw_get(server, "/video.bin")
    assert status == 200
    assert int(headers["content-length"]) == len(content)
    assert len(body) < len(content), "the damaged block was sent"
    assert body == content[: len(body)], "a wrong byte reached the client"
    assert len(body) == damaged, "the intact blocks before the damage should have been sent"
    assert reader_module.integrity_failures.failures >= before + 1
    wait_for(
        lambda: any("integrity failure" in r.getMessage() for r in caplog.records), "the integrity log line"
    )
    failure = next(r for r in caplog.records if "integrity failure" in r.getMessage())
    assert failure.name == "davfs.reader" and "/video.bin" in failure.getMessage()
    assert chunk_refs[2] in failure.getMessage()

    # A range inside the damaged block fails cleanly; ranges elsewhere still work.
    status, _, body = raw_get(server, "/video.bin", f"bytes={damaged + 10}-{damaged + 99}")
    assert status == 500 and content[damaged + 10 : damaged + 42] not in body
    status, _, body = raw_get(server, "/video.bin", f"bytes={3 * MiB}-{3 * MiB + 999}")
    assert status == 206 and body == content[3 * MiB : 3 * MiB + 1000]
    status, _, body = raw_get(server, "/video.bin", "bytes=0-99")
    assert status == 206 and body == content[:100]


# --- invariant 3: atomic writes ------------------------------------------------------------


OLD = payload(2 * MiB + 777, seed=5)


def put_head(server, path: str, headers: dict[str, str]) -> str:
    lines = [f"PUT {path} HTTP/1.1", f"Host: {address(server.url)[0]}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return "\r\n".join(lines) + "\r\n\r\n"


def settle(server, abort_watcher: AbortWatcher, path: str, raw: bytes | None) -> None:
    """Wait until the server is done with a broken PUT: its answer was read (half close),
    or it logged the aborted upload (full close)."""
    if raw is not None:
        status, _, _ = split_response(raw)
        assert status >= 400, f"a broken PUT was answered {status}"
    else:
        wait_for(lambda: any(path in p for p in abort_watcher.paths), f"the server to abort {path}")


@pytest.mark.parametrize("existing", [True, False], ids=["existing", "new"])
@pytest.mark.parametrize("sent", [100 * 1024, 2 * MiB + 512 * 1024], ids=["small", "multichunk"])
@pytest.mark.parametrize("close", ["half", "full"])
def test_put_shorter_than_content_length_changes_nothing(
    server, abort_watcher, existing: bool, sent: int, close: str
) -> None:
    path = "/report.bin"
    if existing:
        put(at(server, path), OLD)
    new = payload(3 * MiB, seed=6)
    head = put_head(server, path, {"Content-Length": str(len(new))})
    raw = raw_request(server, head, [new[i : i + 64 * 1024] for i in range(0, sent, 64 * 1024)], close=close)
    settle(server, abort_watcher, path, raw)
    assert_file_state(server, path, OLD if existing else None)
    assert_catalog_clean(server)


@pytest.mark.parametrize("existing", [True, False], ids=["existing", "new"])
def test_upload_in_progress_is_invisible(server, existing: bool) -> None:
    path = "/draft.bin"
    if existing:
        put(at(server, path), OLD)
    new = payload(4 * MiB, seed=9)
    head = put_head(server, path, {"Content-Length": str(len(new))})
    with socket.create_connection(address(server.url), timeout=TIMEOUT) as sock:
        sock.sendall(head.encode("latin-1") + new[: 5 * MiB // 2])
        # Chunks of the new version are stored and journaled, the body is still arriving.
        wait_for(lambda: open_upload_count(server.app.drive.catalog) == 1, "the upload to be journaled")
        assert_file_state(server, path, OLD if existing else None)
        head_response = requests.head(at(server, path), timeout=TIMEOUT)
        assert head_response.status_code == (200 if existing else 404)
        if existing:
            assert int(head_response.headers["Content-Length"]) == len(OLD)
        sock.sendall(new[5 * MiB // 2 :])
        sock.shutdown(socket.SHUT_WR)
        status, _, _ = split_response(recv_until_closed(sock))
    assert status == (204 if existing else 201)
    assert_file_state(server, path, new)
    assert_catalog_clean(server)


def chunked(pieces: list[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"


@pytest.mark.parametrize("existing", [True, False], ids=["existing", "new"])
@pytest.mark.parametrize("cut", ["between-chunks", "inside-a-chunk"])
@pytest.mark.parametrize("close", ["half", "full"])
def test_chunked_put_cut_off_changes_nothing(
    server, abort_watcher, existing: bool, cut: str, close: str
) -> None:
    path = "/notes.bin"
    if existing:
        put(at(server, path), OLD)
    new = payload(3 * MiB, seed=7)
    pieces = [new[i : i + 256 * 1024] for i in range(0, 3 * MiB // 2, 256 * 1024)]  # 1.5 MiB
    body = list(chunked(pieces))
    if cut == "inside-a-chunk":
        body.append(f"{256 * 1024:x}\r\n".encode() + new[: 10 * 1024])  # announced, never finished
    # ... and never the terminating "0\r\n\r\n".
    raw = raw_request(server, put_head(server, path, {"Transfer-Encoding": "chunked"}), body, close=close)
    settle(server, abort_watcher, path, raw)
    assert_file_state(server, path, OLD if existing else None)
    assert_catalog_clean(server)


@pytest.fixture
def flaky_server(start_server, tmp_path: Path):
    store = FaultyStore(LocalStore(tmp_path / "flaky-store"))
    # Without write-back: the upload itself meets the store (with it, the shipper does).
    return start_server(store=store, chunk_size="1MiB", write_back=False), store


@pytest.mark.parametrize("existing", [True, False], ids=["existing", "new"])
@pytest.mark.parametrize(
    ("schedule", "size"),
    [(".E", 4 * MiB + 100), ("E", 1000), (".U", 3 * MiB)],
    ids=["2nd-of-5-puts-fails", "single-put-fails", "2nd-put-unavailable"],
)
def test_store_error_during_put_changes_nothing(
    flaky_server, existing: bool, schedule: str, size: int
) -> None:
    server, store = flaky_server
    path = "/data.bin"
    if existing:
        put(at(server, path), OLD)
    store.arm(FaultPlan(put=schedule))
    new = payload(size, seed=8)
    response = requests.put(at(server, path), data=new, timeout=TIMEOUT)
    assert 500 <= response.status_code < 600, response.status_code
    if "U" in schedule:  # a transient store outage tells the client when to retry
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert sum(store.injected.values()) == 1
    assert_file_state(server, path, OLD if existing else None)
    assert_catalog_clean(server)

    # The failure was not sticky: the same upload succeeds once the store behaves.
    store.arm(FaultPlan())
    put(at(server, path), new)
    assert_file_state(server, path, new)
    assert_catalog_clean(server)


# --- invariant 4 (crash half): kill -9 in the middle of a large PUT ------------------------


def peek(db: Path, sql: str) -> int:
    """One number from the live catalog of a server process, read-only (0 while busy)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute(sql).fetchone()[0] or 0)
    except sqlite3.OperationalError:  # busy or mid-checkpoint: ask again
        return 0
    finally:
        conn.close()


def journaled_or_committed(db: Path, since_upload: int, since_version: int, chunks: int) -> bool:
    """An upload started after ``since_upload`` has journaled ``chunks`` chunks, or a
    version newer than ``since_version`` was committed (which clears its journal)."""
    journaled = peek(db, f"SELECT count(*) FROM upload_chunks WHERE upload_id > {since_upload}")
    return journaled >= chunks or peek(db, "SELECT max(id) FROM versions") > since_version


def check_catalog_after_crash(
    data_dir: Path, expected: set[str]
) -> tuple[dict[str, tuple[int, str | None]], list[int]]:
    """Open the catalog the dead server left behind: every file's current version is
    whole and its chunks are in the store; every journaled (uncommitted) chunk is in the
    store too, so it is a collectable orphan and not a dangling row. Returns the files
    and the upload id of every journaled chunk."""
    # Chunks not yet shipped are read through the staging area, as the server reads them.
    store = StagingArea(LocalStore(data_dir / "store"), data_dir / "staging", limit=1 << 40)
    catalog = Catalog(f"sqlite:///{data_dir}/catalog.sqlite")
    try:
        files = catalog_files(catalog)
        assert set(files) == set(expected), files
        for path, (size, _) in files.items():
            node = catalog.tree.resolve(segments(path))
            assert node is not None and node.version_id is not None
            snapshot = catalog.tree.snapshot(node.version_id, path)
            for extent in snapshot.extents:
                assert store.exists(extent.chunk.locator), (
                    f"{path}: chunk {extent.chunk.chunk_hash} not stored"
                )
            assert size > 0
        with catalog.db.engine.connect() as conn:
            journal = conn.execute(
                select(upload_chunks.c.upload_id, upload_chunks.c.chunk_hash, upload_chunks.c.locator)
            ).all()
        for row in journal:
            assert store.exists(row.locator), f"journaled chunk {row.chunk_hash} is not in the store"
        return files, [row.upload_id for row in journal]
    finally:
        catalog.close()


def etag_of(data: bytes, chunk_size: int = MiB) -> str:
    """The ETag the catalog gives ``data`` stored in chunks of ``chunk_size``."""
    pieces = [
        Piece(ChunkMeta.of(data[i : i + chunk_size]).chunk_hash, 0, 0)
        for i in range(0, len(data), chunk_size)
    ]
    return content_etag(pieces, len(data))


@pytest.mark.slow
def test_kill_9_during_large_put_leaves_last_committed_content(server_process, tmp_path: Path) -> None:
    env = {"DAVFS_CHUNK_SIZE": "1MiB"}
    data_dir = tmp_path / "data"
    db = data_dir / "catalog.sqlite"
    proc = server_process(data_dir, env=env)
    keep = payload(3 * MiB + 5, seed=10)
    committed = payload(2 * MiB + 3, seed=11)
    put(proc.url + "keep.bin", keep)
    put(proc.url + "big.bin", committed)
    piece = 256 * 1024
    size = 40 * MiB

    # (bytes sent, journaled chunks of this upload to wait for, read the answer) before the kill:
    rounds = [
        (5 * MiB, 1, False),  # early in the body
        (23 * MiB, 12, False),  # many chunks stored and journaled, body still arriving
        (size, 40, False),  # every chunk stored: the commit is about to happen (or just did)
        (size, 0, True),  # the PUT was answered: it must survive
    ]
    for number, (sent, journaled, answered) in enumerate(rounds):
        new = payload(size, seed=100 + number)
        last_upload = peek(db, "SELECT max(id) FROM uploads")
        last_version = peek(db, "SELECT max(id) FROM versions")
        conn = http.client.HTTPConnection(*address(proc.url), timeout=TIMEOUT)
        try:
            conn.putrequest("PUT", "/big.bin")
            conn.putheader("Content-Length", str(size))
            conn.endheaders()
            for offset in range(0, sent, piece):
                conn.send(new[offset : offset + piece])
                time.sleep(0.001)  # a slowish client
            if journaled:
                wait_for(
                    functools.partial(journaled_or_committed, db, last_upload, last_version, journaled),
                    f"{journaled} journaled chunks",
                )
            if answered:
                assert conn.getresponse().status == 204
            proc.kill()
        finally:
            conn.close()
        assert proc.process.returncode == -9

        files, journal = check_catalog_after_crash(data_dir, {"/keep.bin", "/big.bin"})
        assert files["/keep.bin"] == (len(keep), etag_of(keep))
        assert files["/big.bin"] in {(len(committed), etag_of(committed)), (size, etag_of(new))}, (
            "big.bin is neither its last committed version nor the new one"
        )
        if sent < size:  # killed mid-body: not committed, its chunks journaled for gc
            assert files["/big.bin"][1] == etag_of(committed)
            assert sum(1 for upload in journal if upload > last_upload) >= journaled
        if answered:
            assert files["/big.bin"][1] == etag_of(new), "an acknowledged PUT was lost"

        proc = server_process(data_dir, env=env)
        assert sha(requests.get(proc.url + "keep.bin", timeout=TIMEOUT).content) == sha(keep)
        got = requests.get(proc.url + "big.bin", timeout=TIMEOUT)
        assert got.status_code == 200
        assert sha(got.content) == sha(new if files["/big.bin"][1] == etag_of(new) else committed)
        if files["/big.bin"][1] == etag_of(new):
            committed = new
        assert propfind_names(proc.url) == {"keep.bin", "big.bin"}
        probe = payload(MiB + 17, seed=200 + number)
        put(proc.url + f"probe-{number}.bin", probe)
        assert sha(requests.get(proc.url + f"probe-{number}.bin", timeout=TIMEOUT).content) == sha(probe)
        requests.delete(proc.url + f"probe-{number}.bin", timeout=TIMEOUT).raise_for_status()
