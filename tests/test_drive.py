"""The Drive is the one path both adapters take: the server and the command line give
the same answers, and a PUT is one catalog write."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
import requests
from sqlalchemy import event

from davfs.catalog.db import LeanReader
from davfs.catalog.dialect import WRITE
from davfs.chunk import ChunkMeta, ChunkRef
from davfs.cli import main as cli_main
from davfs.errors import DamagedFile
from davfs.snapshot import Extent, FileSnapshot, SnapshotCache
from davfs.stores.local import LocalStore
from tests.conftest import MiB, RunningServer


@contextmanager
def counted_writes(running: RunningServer) -> Iterator[list[str]]:
    """Every write transaction the catalog begins meanwhile (one entry per BEGIN)."""
    writes: list[str] = []
    engine = running.app.drive.catalog.db.engine

    def on_begin(conn) -> None:
        if conn.get_execution_options().get(WRITE):
            writes.append("write")

    event.listen(engine, "begin", on_begin)
    try:
        yield writes
    finally:
        event.remove(engine, "begin", on_begin)


def test_a_put_with_x_oc_mtime_is_one_write_transaction(start_server: Callable[..., RunningServer]) -> None:
    running = start_server()
    with counted_writes(running) as writes:
        r = requests.put(running.url + "a.txt", data=b"rclone", headers={"X-OC-Mtime": "1500000000"})
    assert r.status_code == 201
    assert writes == ["write"]
    head = requests.head(running.url + "a.txt")
    assert head.headers["Last-Modified"] == "Fri, 14 Jul 2017 02:40:00 GMT"
    with counted_writes(running) as writes:  # an overwrite too
        r = requests.put(running.url + "a.txt", data=b"rclone 2", headers={"X-OC-Mtime": "1600000000"})
    assert r.status_code == 204 and writes == ["write"]
    listing = requests.request("PROPFIND", running.url + "a.txt", headers={"Depth": "0"}).text
    assert "Sun, 13 Sep 2020 12:26:40 GMT" in listing


def test_a_small_new_file_commits_in_nine_statements(start_server: Callable[..., RunningServer]) -> None:
    """The lean path of a small PUT (issue 15): folder check, chunk check and reference,
    name and case twins in one look, node, version, extents, node's version, oplog."""
    running = start_server()
    requests.put(running.url + "first.txt", data=b"opens the pack").raise_for_status()
    statements: list[str] = []

    def on_execute(conn, cursor, statement, *_: object) -> None:
        if conn.get_execution_options().get(WRITE) and not statement.startswith("BEGIN"):
            statements.append(statement.split()[0])

    engine = running.app.drive.catalog.db.engine
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        assert requests.put(running.url + "second.txt", data=b"joins it").status_code == 201
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
    assert len(statements) == 9, statements
    assert requests.get(running.url + "second.txt").content == b"joins it"


def test_the_cli_and_the_server_refuse_a_damaged_file_alike(
    start_server: Callable[..., RunningServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    running = start_server(chunk_size="1MiB", data_dir=tmp_path / "data")
    data = os.urandom(2 * MiB + 5)
    requests.put(running.url + "one.bin", data=data).raise_for_status()
    running.ship()
    snapshot_chunk = _first_chunk(running, "one.bin")
    running.stop()
    LocalStore(tmp_path / "data" / "store").delete(snapshot_chunk)
    args = ["-c", os.devnull, "-d", str(tmp_path / "data")]
    assert cli_main([*args, "fsck", "--repair"]) == 1
    capsys.readouterr()

    code = cli_main([*args, "get", "/one.bin", str(tmp_path / "out.bin")])
    cli_error = capsys.readouterr().err.strip()
    assert code == DamagedFile.exit_code
    assert not (tmp_path / "out.bin").exists() and not list(tmp_path.glob("*.davfs-part"))

    running = start_server(chunk_size="1MiB", data_dir=tmp_path / "data")
    answer = requests.get(running.url + "one.bin", timeout=10)
    assert answer.status_code == DamagedFile.http_status == 500
    server_error = answer.text.strip().split(": ", 1)[1]
    assert cli_error == f"davfs: {server_error}"
    assert "is damaged" in server_error and "Upload it again" in server_error


def _first_chunk(running: RunningServer, name: str) -> str:
    node = running.app.drive.catalog.tree.resolve([name])
    assert node is not None and node.version_id is not None
    return running.app.drive.catalog.tree.snapshot(node.version_id, "/" + name).extents[0].chunk.locator


@contextmanager
def counted_statements(running: RunningServer) -> Iterator[list[str]]:
    """Every SQL statement the catalog runs meanwhile, reads included (also the lean
    path lookups, which bypass SQLAlchemy's events)."""
    statements: list[str] = []
    db = running.app.drive.catalog.db
    engine = db.engine

    def on_execute(conn, cursor, statement, *_: object) -> None:
        statements.append(statement)

    lean_first = LeanReader.first

    def first(reader: LeanReader, statement: Any, params: dict[str, Any]) -> Any:
        statements.append(db.compiled(statement)[0])
        return lean_first(reader, statement, params)

    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        with patch.object(LeanReader, "first", first):
            yield statements
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


def test_a_hot_files_next_range_reads_no_extent_rows(start_server: Callable[..., RunningServer]) -> None:
    """A resumed or seeking download asks for many ranges of one version: its snapshot
    (extents and BlockHashes) is read once, not per request."""
    running = start_server(chunk_size="1MiB")
    data = os.urandom(3 * MiB)
    requests.put(running.url + "video.bin", data=data).raise_for_status()
    assert requests.get(running.url + "video.bin", headers={"Range": "bytes=0-99"}).content == data[:100]
    with counted_statements(running) as statements:
        response = requests.get(running.url + "video.bin", headers={"Range": "bytes=2097152-2162687"})
    assert response.status_code == 206 and response.content == data[2 * MiB : 2 * MiB + 65536]
    touched = [s for s in statements if "extents" in s or "block_hashes" in s]
    assert statements and not touched, touched


def test_a_replaced_file_is_never_served_from_a_cached_snapshot(
    start_server: Callable[..., RunningServer],
) -> None:
    running = start_server(chunk_size="1MiB")
    for round in range(3):
        data = os.urandom(MiB + round)
        requests.put(running.url + "doc.bin", data=data).raise_for_status()
        assert requests.get(running.url + "doc.bin", headers={"Range": "bytes=-5000"}).content == data[-5000:]
        assert requests.get(running.url + "doc.bin").content == data


def test_a_cached_snapshot_still_reads_after_its_chunks_ship(
    start_server: Callable[..., RunningServer],
) -> None:
    """Write-back: the snapshot cached while the chunks were staged names their staging
    locators; once shipped and the forward records are gone, the read asks the catalog
    again instead of failing."""
    running = start_server(chunk_size="1MiB")
    data = os.urandom(2 * MiB + 10)
    requests.put(running.url + "late.bin", data=data).raise_for_status()
    assert requests.get(running.url + "late.bin", headers={"Range": "bytes=0-9"}).content == data[:10]
    cached = running.app.drive._snapshots.get(_version(running, "late.bin"), "/late.bin", _never_loaded)[0]
    assert all(e.chunk.locator.startswith("staged:") for e in cached.extents)
    running.ship()
    staging = running.app.drive.staging
    assert staging is not None and staging.forget_forwards(time.time() + 1) >= 2
    assert requests.get(running.url + "late.bin", headers={"Range": "bytes=1048576-"}).content == data[MiB:]
    assert requests.get(running.url + "late.bin").content == data


def _version(running: RunningServer, name: str) -> int:
    node = running.app.drive.catalog.tree.resolve([name])
    assert node is not None and node.version_id is not None
    return node.version_id


def _never_loaded(version_id: int, path: str) -> FileSnapshot:
    raise AssertionError("the snapshot should have been cached")


def _snapshot(version_id: int, hash_bytes: int) -> FileSnapshot:
    meta = ChunkMeta("c" * 64, hash_bytes, 1, b"\0" * hash_bytes)
    extent = Extent(ChunkRef("x", meta), 0, hash_bytes)
    return FileSnapshot(f"/{version_id}", version_id, hash_bytes, 0.0, "etag", (extent,))


def test_the_snapshot_cache_is_bounded_by_the_hash_bytes_it_holds() -> None:
    cache = SnapshotCache(max_bytes=100_000, ttl=60)
    loads: list[int] = []

    def load(version_id: int, path: str) -> FileSnapshot:
        loads.append(version_id)
        return _snapshot(version_id, 10_000)

    for version_id in range(20):
        cache.get(version_id, "/x", load)
    # Each costs 10,256 bytes (hashes and a little per extent): the newest nine fit.
    for version_id in range(11, 20):
        assert cache.get(version_id, "/x", _never_loaded)[1]
    assert loads == list(range(20))
    assert not cache.get(10, "/x", load)[1] and loads[-1] == 10
    huge = SnapshotCache(max_bytes=100_000, ttl=60)
    huge.get(1, "/x", lambda v, p: _snapshot(v, 30_000))
    assert not huge.get(1, "/x", lambda v, p: _snapshot(v, 30_000))[1]  # more than a quarter: not kept
    expired = SnapshotCache(max_bytes=100_000, ttl=0)
    expired.get(1, "/x", load)
    assert not expired.get(1, "/x", load)[1]
    renamed, cached = cache.get(19, "/moved/x", load)
    assert cached and renamed.path == "/moved/x"
