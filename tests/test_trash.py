"""The trash (issue 19): a DELETE moves things out of sight, not out of the drive;
``davfs trash`` lists, restores (never over an existing name) and empties it, and gc
deletes what has been in it longer than ``trash_days``."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from davfs.cli import main as cli_main
from davfs.errors import NotFound
from davfs.stores.local import LocalStore
from tests.conftest import REPO, RunningServer
from tests.test_clients import EXPLORER, win32_proppatch

PROPS = (
    '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:"><D:prop>'
    "<D:getlastmodified/><D:getcontentlength/><Z:Win32LastModifiedTime/></D:prop></D:propfind>"
)
TREE = {
    "Projekte/plan.txt": os.urandom(5000),
    "Projekte/Grüße/notes.md": os.urandom(300_000),
    "Projekte/Grüße/empty.txt": b"",
    "Projekte/Grüße/tief/unten.bin": os.urandom(70_000),
}


def cli(data_dir: Path, *args: str) -> int:
    return cli_main(["-c", os.devnull, "-d", str(data_dir), *args])


def build_tree(running: RunningServer) -> dict[str, str]:
    """TREE as Explorer copies it in (MKCOL, PUT, PROPPATCH of Win32 times); returns the
    PROPFIND answer of every member, to compare after a restore."""
    http, url = requests.Session(), running.url
    folders = sorted({p.rsplit("/", n)[0] for p in TREE for n in range(1, p.count("/") + 1)})
    for folder in folders:
        assert http.request("MKCOL", url + folder, headers=EXPLORER).status_code == 201
    for number, (path, data) in enumerate(sorted(TREE.items())):
        assert http.put(url + path, data=data, headers=EXPLORER).status_code == 201
        stamp = f"Mon, 0{number + 1} Jan 2024 10:00:00 GMT"
        body = win32_proppatch(Win32LastModifiedTime=stamp)
        assert http.request("PROPPATCH", url + path, data=body, headers=EXPLORER).status_code == 207
    return describe(running)


def describe(running: RunningServer) -> dict[str, str]:
    answer = requests.request("PROPFIND", running.url + "Projekte", data=PROPS, headers={"Depth": "infinity"})
    assert answer.status_code == 207
    return {"tree": answer.text}


def test_explorer_deletes_a_folder_tree_and_it_is_restored_whole(start_server, tmp_path, capsys) -> None:
    data_dir = tmp_path / "data"
    running = start_server(data_dir=data_dir, chunk_size="1MiB", propfind_infinity=True)
    before = build_tree(running)
    assert requests.delete(running.url + "Projekte", headers=EXPLORER).status_code == 204
    assert requests.get(running.url + "Projekte/plan.txt").status_code == 404
    listing = requests.request("PROPFIND", running.url, headers={"Depth": "infinity"}).text
    assert "Projekte" not in listing and ".trash" not in listing and "unten.bin" not in listing
    assert requests.get(running.url + ".trash").status_code == 404
    running.stop()

    capsys.readouterr()
    assert cli(data_dir, "trash", "list") == 0
    out = capsys.readouterr().out
    assert "/Projekte/" in out and "folder, 4 files" in out and str(sum(map(len, TREE.values()))) in out
    assert cli(data_dir, "trash", "restore", "/Projekte") == 0
    assert capsys.readouterr().out.strip() == "restored /Projekte"

    running = start_server(data_dir=data_dir, chunk_size="1MiB", propfind_infinity=True)
    for path, data in TREE.items():
        assert requests.get(running.url + path).content == data, path
    assert describe(running) == before  # same names, sizes, modification times, properties
    running.stop()
    assert cli(data_dir, "trash", "list") == 0
    assert "holds nothing" in capsys.readouterr().err
    assert cli(data_dir, "fsck", "--verify") == 0


def test_a_restore_never_overwrites_and_says_where_it_went(start_server, tmp_path, capsys) -> None:
    data_dir = tmp_path / "data"
    running = start_server(data_dir=data_dir)
    requests.put(running.url + "report.txt", data=b"the old report").raise_for_status()
    assert requests.delete(running.url + "report.txt").status_code == 204
    requests.put(running.url + "report.txt", data=b"written since").raise_for_status()
    running.stop()

    capsys.readouterr()
    assert cli(data_dir, "trash", "restore", "/report.txt") == 0
    assert "restored /report.txt as /report (restored).txt" in capsys.readouterr().out
    running = start_server(data_dir=data_dir)
    assert requests.get(running.url + "report.txt").content == b"written since"
    assert requests.get(running.url + "report%20(restored).txt").content == b"the old report"
    running.stop()


def test_a_file_whose_folder_went_too_comes_back_with_its_folder(start_server, tmp_path, capsys) -> None:
    data_dir = tmp_path / "data"
    running = start_server(data_dir=data_dir)
    assert requests.request("MKCOL", running.url + "d").status_code == 201
    requests.put(running.url + "d/f.txt", data=b"inside").raise_for_status()
    assert requests.delete(running.url + "d/f.txt").status_code == 204
    assert requests.delete(running.url + "d").status_code == 204
    running.stop()
    assert cli(data_dir, "trash", "restore", "/d/f.txt") == 0
    assert cli(data_dir, "trash", "restore", "/d") == 0  # the folder itself: "d" is taken again
    assert "restored /d as /d (restored)" in capsys.readouterr().out
    running = start_server(data_dir=data_dir)
    assert requests.get(running.url + "d/f.txt").content == b"inside"
    assert (
        requests.request("PROPFIND", running.url + "d%20(restored)", headers={"Depth": "0"}).status_code
        == 207
    )
    running.stop()


def test_expired_trash_is_deleted_by_gc_chunks_and_all(start_server, tmp_path, capsys) -> None:
    data_dir = tmp_path / "data"
    running = start_server(data_dir=data_dir, chunk_size="1MiB")
    kept, old = os.urandom(400_000), os.urandom(400_000)
    requests.put(running.url + "old.bin", data=old).raise_for_status()
    requests.put(running.url + "recent.bin", data=kept).raise_for_status()
    running.ship()
    with sqlite3.connect(data_dir / "catalog.sqlite") as db:
        locators = dict(
            db.execute(
                "SELECT n.name, c.locator FROM nodes n JOIN extents e ON e.version_id = n.version_id "
                "JOIN chunks c ON c.chunk_hash = e.chunk_hash"
            ).fetchall()
        )
    assert requests.delete(running.url + "old.bin").status_code == 204
    assert requests.delete(running.url + "recent.bin").status_code == 204
    running.stop()
    with sqlite3.connect(data_dir / "catalog.sqlite") as db:  # old.bin went in 31 days ago
        db.execute("UPDATE trash SET deleted_at = ? WHERE path = '/old.bin'", (time.time() - 31 * 86400,))
    capsys.readouterr()
    assert cli(data_dir, "gc", "--dry-run", "--grace", "0") == 0
    assert "would empty 1 items out of the trash" in capsys.readouterr().out
    assert cli(data_dir, "trash", "list") == 0
    assert "/old.bin" in capsys.readouterr().out  # the dry run changed nothing
    assert cli(data_dir, "gc", "--grace", "0") == 0
    assert "emptied 1 items out of the trash" in capsys.readouterr().out
    store = LocalStore(data_dir / "store")
    assert not store.exists(locators["old.bin"]) and store.exists(locators["recent.bin"])
    assert cli(data_dir, "trash", "list") == 0
    assert "/recent.bin" in capsys.readouterr().out
    assert cli(data_dir, "trash", "empty") == 0
    assert cli(data_dir, "gc", "--grace", "0") == 0
    assert not store.exists(locators["recent.bin"])
    assert cli(data_dir, "fsck") == 0


def test_without_a_trash_delete_is_for_good(start_server, tmp_path, capsys) -> None:
    data_dir = tmp_path / "data"
    running = start_server(data_dir=data_dir, trash_days=0)
    requests.put(running.url + "gone.txt", data=b"x").raise_for_status()
    assert requests.delete(running.url + "gone.txt").status_code == 204
    running.stop()
    capsys.readouterr()
    assert cli(data_dir, "trash", "restore", "/gone.txt") == NotFound.exit_code
    assert "/gone.txt in the trash does not exist" in capsys.readouterr().err


def test_a_move_does_not_fill_the_trash(start_server, tmp_path, capsys) -> None:
    data_dir = tmp_path / "data"
    running = start_server(data_dir=data_dir)
    assert requests.request("MKCOL", running.url + "a").status_code == 201
    requests.put(running.url + "a/x.txt", data=b"x").raise_for_status()
    headers = {"Destination": running.url + "b"}
    assert requests.request("MOVE", running.url + "a", headers=headers).status_code == 201
    running.stop()
    capsys.readouterr()
    assert cli(data_dir, "trash", "list") == 0
    assert capsys.readouterr().out == ""


def test_recover_rebuilds_the_tree_after_trash_and_restore(start_server, tmp_path, capsys) -> None:
    data_dir = tmp_path / "data"
    running = start_server(data_dir=data_dir)
    for name in ("keep.txt", "trashed.txt", "back.txt"):
        requests.put(running.url + name, data=name.encode()).raise_for_status()
    assert requests.delete(running.url + "trashed.txt").status_code == 204
    assert requests.delete(running.url + "back.txt").status_code == 204
    running.ship()  # recover reads what the store holds
    running.stop()
    assert cli(data_dir, "trash", "restore", "/back.txt") == 0
    capsys.readouterr()
    assert cli(data_dir, "recover", "--force") == 0
    assert "not restored" not in capsys.readouterr().err
    running = start_server(data_dir=data_dir)
    assert requests.get(running.url + "keep.txt").content == b"keep.txt"
    assert requests.get(running.url + "back.txt").content == b"back.txt"
    assert requests.get(running.url + "trashed.txt").status_code == 404
    running.stop()


def test_a_restore_killed_midway_changes_nothing(start_server, tmp_path, capsys) -> None:
    """kill -9 while a restore waits inside its transaction (the catalog is held busy
    by another writer): the item stays in the trash and the tree is unchanged; the next
    restore completes."""
    data_dir = tmp_path / "data"
    running = start_server(data_dir=data_dir)
    requests.put(running.url + "doc.txt", data=b"precious").raise_for_status()
    assert requests.delete(running.url + "doc.txt").status_code == 204
    running.stop()
    blocker = sqlite3.connect(data_dir / "catalog.sqlite", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        restore = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "davfs.cli",
                "-c",
                os.devnull,
                "-d",
                str(data_dir),
                "trash",
                "restore",
                "/doc.txt",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(3)  # it has opened the drive and waits for the write lock
        assert restore.poll() is None, restore.communicate()
        restore.kill()
        restore.wait()
    finally:
        blocker.rollback()
        blocker.close()
    capsys.readouterr()
    assert cli(data_dir, "trash", "list") == 0
    assert "/doc.txt" in capsys.readouterr().out
    assert cli(data_dir, "fsck") == 0
    assert cli(data_dir, "trash", "restore", "/doc.txt") == 0
    running = start_server(data_dir=data_dir)
    assert requests.get(running.url + "doc.txt").content == b"precious"
    running.stop()


def test_trash_empty_refuses_a_bad_age(tmp_path, capsys) -> None:
    assert cli(tmp_path / "data", "trash", "empty", "--older-than", "-1") == 2
    assert "--older-than takes a number of days" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        cli(tmp_path / "data", "trash", "empty", "--older-than", "soon")
    assert exited.value.code == 2


def test_a_restore_goes_into_the_folder_that_only_changed_case(start_server, tmp_path, capsys) -> None:
    """Explorer renames Docs to docs; the file deleted from Docs comes back into docs
    (a second folder differing only in case would be one Windows cannot tell apart)."""
    data_dir = tmp_path / "data"
    running = start_server(data_dir=data_dir)
    assert requests.request("MKCOL", running.url + "Docs").status_code == 201
    requests.put(running.url + "Docs/f.txt", data=b"f").raise_for_status()
    assert requests.delete(running.url + "Docs/f.txt").status_code == 204
    headers = {"Destination": running.url + "docs"}
    assert requests.request("MOVE", running.url + "Docs", headers=headers).status_code == 201
    running.stop()
    assert cli(data_dir, "trash", "restore", "/Docs/f.txt") == 0
    assert "restored /Docs/f.txt as /docs/f.txt" in capsys.readouterr().out
    running = start_server(data_dir=data_dir)
    assert requests.get(running.url + "docs/f.txt").content == b"f"
    assert requests.request("PROPFIND", running.url + "Docs", headers={"Depth": "0"}).status_code == 404
    running.stop()


def test_the_trash_counts_in_the_quota_and_in_status(start_server, tmp_path, capsys) -> None:
    data_dir = tmp_path / "data"
    running = start_server(data_dir=data_dir)
    requests.put(running.url + "kept.bin", data=b"k" * 3000).raise_for_status()
    requests.put(running.url + "binned.bin", data=b"b" * 5000).raise_for_status()
    assert requests.delete(running.url + "binned.bin").status_code == 204
    running.stop()
    running = start_server(data_dir=data_dir)  # a fresh quota figure
    body = requests.request(
        "PROPFIND",
        running.url,
        headers={"Depth": "0"},
        data='<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:quota-used-bytes/></D:prop></D:propfind>',
    ).text
    assert ">8000<" in body
    running.stop()
    capsys.readouterr()
    assert cli(data_dir, "status") == 0
    out = capsys.readouterr().out
    assert "files:    2.9 KiB stored" in out and "trash:    4.9 KiB" in out, out
