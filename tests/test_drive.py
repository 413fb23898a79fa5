"""The Drive is the one path both adapters take: the server and the command line give
the same answers, and a PUT is one catalog write."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from sqlalchemy import event

from davfs.catalog.dialect import WRITE
from davfs.cli import main as cli_main
from davfs.errors import DamagedFile
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
