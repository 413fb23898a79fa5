"""Previous versions (issue 19): an overwritten file's old contents are kept by gc
(``versions_keep`` per file, ``version_days``) and can be listed and made current again
with ``davfs versions``; expired ones leave the store."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from davfs.cli import main as cli_main
from davfs.errors import NotAFile, NotFound
from davfs.stores.local import LocalStore
from tests.conftest import RunningServer


def cli(data_dir: Path, *args: str) -> int:
    return cli_main(["-c", os.devnull, "-d", str(data_dir), *args])


def write_versions(start_server: Callable[..., RunningServer], data_dir: Path, count: int) -> list[bytes]:
    """``count`` contents of /doc.txt, written one after the other; the server is stopped
    after. Each is big enough to have chunks of its own (smaller files share packs)."""
    running = start_server(data_dir=data_dir, chunk_size="1MiB")
    contents = [os.urandom(300_000 + n) for n in range(1, count + 1)]
    for content in contents:
        requests.put(running.url + "doc.txt", data=content).raise_for_status()
    running.ship()
    running.stop()
    return contents


def served(start_server: Callable[..., RunningServer], data_dir: Path, path: str) -> bytes:
    running = start_server(data_dir=data_dir)
    try:
        response = requests.get(running.url + path.lstrip("/"))
        response.raise_for_status()
        return response.content
    finally:
        running.stop()


def listed(data_dir: Path, capsys: pytest.CaptureFixture[str], path: str = "/doc.txt") -> list[list[str]]:
    capsys.readouterr()
    assert cli(data_dir, "versions", path) == 0
    return [line.split() for line in capsys.readouterr().out.splitlines()]


def chunk_locators(data_dir: Path) -> dict[int, list[str]]:
    """The locators of each version's chunks, by version id."""
    with sqlite3.connect(data_dir / "catalog.sqlite") as db:
        rows = db.execute(
            "SELECT e.version_id, c.locator FROM extents e JOIN chunks c ON c.chunk_hash = e.chunk_hash"
        ).fetchall()
    found: dict[int, list[str]] = {}
    for version_id, locator in rows:
        found.setdefault(version_id, []).append(locator)
    return found


def test_three_overwrites_then_restore_version_1(start_server, tmp_path, capsys) -> None:
    data_dir = tmp_path / "data"
    contents = write_versions(start_server, data_dir, 4)  # the first, then three overwrites
    assert cli(data_dir, "gc", "--grace", "0") == 0  # previous versions are not gc's to take
    rows = listed(data_dir, capsys)
    assert [row[0] for row in rows] == ["1", "2", "3", "4"]
    assert [int(row[1]) for row in rows] == [len(c) for c in contents]
    assert rows[-1][-1] == "current" and all(row[4] == "replaced" for row in rows[:-1])

    assert cli(data_dir, "versions", "restore", "/doc.txt", "1") == 0
    assert "version 1" in capsys.readouterr().out
    assert served(start_server, data_dir, "/doc.txt") == contents[0]
    # What the restore replaced is a previous version now: the restore can be undone.
    rows = listed(data_dir, capsys)
    assert len(rows) == 5 and int(rows[3][1]) == len(contents[3])
    assert cli(data_dir, "versions", "restore", "/doc.txt", "4") == 0
    assert served(start_server, data_dir, "/doc.txt") == contents[3]
    assert cli(data_dir, "fsck", "--verify") == 0


def test_gc_keeps_the_newest_versions_keep_and_deletes_the_rest(start_server, tmp_path, capsys, monkeypatch):
    data_dir = tmp_path / "data"
    contents = write_versions(start_server, data_dir, 5)
    before = chunk_locators(data_dir)
    oldest = sorted(before)[:2]
    monkeypatch.setenv("DAVFS_VERSIONS_KEEP", "2")
    assert cli(data_dir, "gc", "--grace", "0") == 0
    rows = listed(data_dir, capsys)
    assert [int(row[1]) for row in rows] == [len(c) for c in contents[2:]]
    after = chunk_locators(data_dir)
    assert sorted(after) == sorted(before)[2:]
    store = LocalStore(data_dir / "store")
    assert not any(store.exists(locator) for v in oldest for locator in before[v])
    assert all(store.exists(locator) for v in after for locator in after[v])


def test_previous_versions_expire_after_version_days(start_server, tmp_path, capsys) -> None:
    data_dir = tmp_path / "data"
    contents = write_versions(start_server, data_dir, 3)
    before = chunk_locators(data_dir)
    with sqlite3.connect(data_dir / "catalog.sqlite") as db:  # replaced 31 days ago
        db.execute("UPDATE versions SET retired = ? WHERE retired IS NOT NULL", (time.time() - 31 * 86400,))
    assert cli(data_dir, "gc", "--grace", "0") == 0
    assert [int(row[1]) for row in listed(data_dir, capsys)] == [len(contents[-1])]
    store = LocalStore(data_dir / "store")
    assert [v for v in before if all(store.exists(loc) for loc in before[v])] == [max(before)]
    assert served(start_server, data_dir, "/doc.txt") == contents[-1]


def test_a_file_emptied_from_the_trash_takes_its_previous_versions_with_it(start_server, tmp_path) -> None:
    data_dir = tmp_path / "data"
    write_versions(start_server, data_dir, 3)
    before = chunk_locators(data_dir)
    running = start_server(data_dir=data_dir)
    assert requests.delete(running.url + "doc.txt").status_code == 204
    running.stop()
    assert cli(data_dir, "gc", "--grace", "0") == 0
    assert chunk_locators(data_dir).keys() == before.keys()  # in the trash, versions and all
    assert cli(data_dir, "trash", "empty") == 0
    assert cli(data_dir, "gc", "--grace", "0") == 0
    store = LocalStore(data_dir / "store")
    assert chunk_locators(data_dir) == {}
    assert not any(store.exists(loc) for locators in before.values() for loc in locators)


def test_status_and_quota_count_previous_versions(start_server, tmp_path, capsys) -> None:
    data_dir = tmp_path / "data"
    contents = write_versions(start_server, data_dir, 3)
    capsys.readouterr()
    assert cli(data_dir, "status") == 0
    out = capsys.readouterr().out
    previous = sum(len(c) for c in contents[:-1])
    assert f"versions: {previous / 1024:.1f} KiB in previous versions" in out, out
    running = start_server(data_dir=data_dir)
    body = requests.request(
        "PROPFIND",
        running.url,
        headers={"Depth": "0"},
        data='<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:quota-used-bytes/></D:prop></D:propfind>',
    ).text
    assert f">{sum(len(c) for c in contents)}<" in body


def test_versions_command_line_errors_are_one_clear_line(start_server, tmp_path, capsys) -> None:
    data_dir = tmp_path / "data"
    write_versions(start_server, data_dir, 2)
    running = start_server(data_dir=data_dir)
    assert requests.request("MKCOL", running.url + "folder").status_code == 201
    running.stop()
    capsys.readouterr()
    for args, code, message in [
        (("versions", "/folder"), NotAFile.exit_code, "/folder is not a file."),
        (("versions", "/nothing.txt"), NotFound.exit_code, "/nothing.txt does not exist."),
        (
            ("versions", "restore", "/doc.txt", "7"),
            NotFound.exit_code,
            "version 7 of /doc.txt does not exist.",
        ),
        (("versions", "restore", "/doc.txt", "x"), 2, "N must be a version number"),
        (("versions", "/doc.txt", "extra"), 2, "give PATH, or restore PATH N"),
    ]:
        assert cli(data_dir, *args) == code, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (args, err)
