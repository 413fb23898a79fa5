"""Every format davfs ever wrote stays readable: a data folder written by the first
release (tests/data/release1-drive.tar.gz, made by make_release1_drive.py at e420754)
is opened by today's code and read back byte-exact, through the server, fsck, recover
and restore."""

from __future__ import annotations

import hashlib
import json
import os
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
