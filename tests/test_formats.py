"""Every format davfs ever wrote stays readable: a data folder written by the first
release (tests/data/release1-drive.tar.gz, made by make_release1_drive.py at e420754)
is opened by today's code and read back byte-exact, through the server, fsck, recover
and restore."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tarfile
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from davfs.cli import main as cli_main
from tests.conftest import launch

RELEASE1 = Path(__file__).with_name("data") / "release1-drive.tar.gz"
PROPFIND_PROP = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:x"><D:prop><Z:colour/></D:prop></D:propfind>'


@pytest.fixture
def release1(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    with tarfile.open(RELEASE1) as tar:
        tar.extractall(tmp_path, filter="data")
    data_dir = tmp_path / "data"
    return data_dir, json.loads((data_dir / "expected.json").read_text())


def cli(data_dir: Path, *args: str) -> int:
    return cli_main(["-c", os.devnull, "-d", str(data_dir), *args])


def assert_serves_release1(data_dir: Path, expected: dict[str, Any]) -> None:
    from tests.conftest import davfs_config

    running = launch(davfs_config(data_dir, chunk_size="1MiB"))
    try:
        with requests.Session() as http:
            for path, digest in expected["files"].items():
                response = http.get(running.url + quote(path))
                assert response.status_code == 200, path
                assert hashlib.sha256(response.content).hexdigest() == digest, path
                assert len(response.content) == expected["sizes"][path]
            for path, seconds in expected["mtimes"].items():
                stamp = http.head(running.url + quote(path)).headers["Last-Modified"]
                assert parsedate_to_datetime(stamp).timestamp() == seconds
            for folder in expected["folders"]:
                assert (
                    http.request("PROPFIND", running.url + folder, headers={"Depth": "0"}).status_code == 207
                )
            for path, props in expected["props"].items():
                body = http.request(
                    "PROPFIND", running.url + path, data=PROPFIND_PROP, headers={"Depth": "0"}
                ).text
                for value in props.values():
                    assert f">{value}<" in body
            assert http.get(running.url + "docs/old/gone.txt").status_code == 404
            # The old drive takes new writes next to its old chunks.
            assert http.put(running.url + "docs/new.txt", data=b"written today").status_code == 201
            assert http.get(running.url + "docs/new.txt").content == b"written today"
            assert http.get(running.url + "moved.bin").status_code == 200
    finally:
        running.stop()


def test_release1_folder_is_served_byte_exact(release1):
    data_dir, expected = release1
    assert_serves_release1(data_dir, expected)
    assert cli(data_dir, "fsck", "--verify") == 0


def test_release1_store_alone_recovers(release1):
    data_dir, expected = release1
    assert cli(data_dir, "recover", "--force") == 0
    assert_serves_release1(data_dir, expected)


def test_release1_backup_restores(release1):
    data_dir, expected = release1
    assert cli(data_dir, "restore", "--force") == 0
    assert_serves_release1(data_dir, expected)
    assert cli(data_dir, "fsck", "--verify") == 0


NEW_FILES = {
    "today/big.bin": os.urandom(2 * 1024 * 1024 + 12_345),  # three format-2 chunks of 1 MiB
    "today/small.txt": b"packed with its neighbours\n" * 40,
    "docs/report.txt": b"a first-release folder, written to today",
}


def _chunk_formats(data_dir: Path) -> dict[int, int]:
    with sqlite3.connect(data_dir / "catalog.sqlite") as db:
        return dict(db.execute("SELECT format, count(*) FROM chunks GROUP BY format").fetchall())


def _serves(data_dir: Path, files: dict[str, bytes]) -> None:
    from tests.conftest import davfs_config

    running = launch(davfs_config(data_dir, chunk_size="1MiB"))
    try:
        with requests.Session() as http:
            for path, data in files.items():
                response = http.get(running.url + path)
                assert response.status_code == 200, path
                assert response.content == data, path
                if len(data) > 70_000:
                    tail = http.get(running.url + path, headers={"Range": "bytes=-70000"})
                    assert tail.content == data[-70_000:], path
    finally:
        running.stop()


def test_a_drive_of_both_formats_verifies_backs_up_and_recovers(release1):
    """Chunks of the first release and of today side by side, through every tool that
    reads a chunk: the server, fsck --verify, gc, backup and restore, recover."""
    from tests.conftest import davfs_config

    data_dir, expected = release1
    old_files: dict[str, bytes] = {}
    running = launch(davfs_config(data_dir, chunk_size="1MiB"))
    try:
        with requests.Session() as http:
            for path, digest in expected["files"].items():
                data = http.get(running.url + quote(path)).content
                assert hashlib.sha256(data).hexdigest() == digest
                old_files[quote(path)] = data
            assert http.request("MKCOL", running.url + "today").status_code == 201
            for path, data in NEW_FILES.items():
                assert http.put(running.url + path, data=data).status_code in (201, 204)
    finally:
        running.stop()
    assert cli(data_dir, "ship", "--timeout", "60") == 0
    formats = _chunk_formats(data_dir)
    assert set(formats) == {1, 2}, formats  # the old chunks kept their format; new ones are format 2
    assert formats[2] >= 3

    assert cli(data_dir, "fsck", "--verify") == 0
    assert cli(data_dir, "gc", "--grace", "0") == 0
    assert cli(data_dir, "fsck", "--verify") == 0
    assert cli(data_dir, "backup") == 0
    everything = {**old_files, **NEW_FILES}
    _serves(data_dir, everything)

    assert cli(data_dir, "restore", "--force") == 0
    _serves(data_dir, everything)
    assert cli(data_dir, "recover", "--force") == 0
    _serves(data_dir, everything)
    assert cli(data_dir, "fsck", "--verify") == 0
    assert _chunk_formats(data_dir).keys() == {1, 2}
