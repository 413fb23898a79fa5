"""Catalog backups in the store: backup → lose the catalog → restore gives the identical
catalog; `recover` from the store alone gives the same files; backups are verified,
pruned, made on a schedule, kept by gc, and move between SQLite and PostgreSQL."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from davfs.backup import backup_catalog, list_backups, prune_backups, restore_catalog
from davfs.catalog import Catalog
from davfs.cli import main as cli_main
from davfs.errors import CatalogError
from davfs.gc import collect_garbage
from davfs.stores.local import LocalStore
from tests.conftest import MiB, RunningServer

PROPPATCH = """<?xml version="1.0" encoding="utf-8" ?>
<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x"><D:set><D:prop><Z:colour>blue</Z:colour></D:prop></D:set></D:propertyupdate>"""


def populated(
    start_server: Callable[..., RunningServer], **davfs: Any
) -> tuple[RunningServer, dict[str, bytes]]:
    """A server with folders, files over several chunks, a replaced file (a retired
    version), a copy, a rename and a dead property."""
    server = start_server(chunk_size="1MiB", gc_interval=0, backup_interval=0, **davfs)
    files = {"docs/a.txt": b"alpha", "docs/big.bin": os.urandom(2 * MiB + 7), "Grüße/é.txt": b"x" * 3000}
    for folder in ("docs", "Grüße", "docs/empty"):
        requests.request("MKCOL", server.url + folder).raise_for_status()
    for path, data in files.items():
        requests.put(server.url + path, data=data).raise_for_status()
    requests.put(server.url + "docs/a.txt", data=b"alpha, second version").raise_for_status()
    files["docs/a.txt"] = b"alpha, second version"
    requests.request("COPY", server.url + "docs/big.bin", headers={"Destination": server.url + "copy.bin"})
    files["copy.bin"] = files["docs/big.bin"]
    requests.request("MOVE", server.url + "Grüße/é.txt", headers={"Destination": server.url + "docs/é.txt"})
    files["docs/é.txt"] = files.pop("Grüße/é.txt")
    requests.request("PROPPATCH", server.url + "docs/a.txt", data=PROPPATCH).raise_for_status()
    server.ship()  # the store holds every byte (write-back has shipped)
    return server, files


def everything(catalog: Catalog) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, comparable."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    for table, row in catalog.dump.rows():
        tables.setdefault(table, []).append(
            tuple(sorted((k, bytes(v) if isinstance(v, memoryview) else v) for k, v in row.items()))
        )
    return {table: sorted(rows, key=repr) for table, rows in tables.items()}


def tree(catalog: Catalog) -> dict[str, tuple[bool, int, str | None]]:
    return {path: (node.is_dir, node.size, node.etag) for path, node in catalog.tree.walk()}


def test_backup_then_lose_the_catalog_then_restore_gives_the_identical_catalog(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    server, files = populated(start_server)
    catalog, store = server.app.drive.catalog, server.app.drive.backing_store
    made = backup_catalog(catalog, store, part_size=512)  # several parts
    assert len(made.parts) > 1 and made.rows > 10
    before = everything(catalog)
    server.stop()

    fresh = Catalog(f"sqlite:///{tmp_path / 'restored.sqlite'}")
    store = LocalStore(server.config.data_dir / "store")
    assert [b.locator for b in list_backups(store)] == [made.locator]
    restore_catalog(fresh, store, list_backups(store)[0])
    assert everything(fresh) == before
    fresh.close()

    restarted = start_server(
        data_dir=tmp_path / "restarted", store=store, catalog_url=f"sqlite:///{tmp_path / 'restored.sqlite'}"
    )
    for path, data in files.items():
        assert requests.get(restarted.url + path).content == data, path
    r = requests.request("PROPFIND", restarted.url + "docs/a.txt", headers={"Depth": "0"})
    assert "blue" in r.text  # dead properties came back too
    requests.put(restarted.url + "after.txt", data=b"new").raise_for_status()  # and it keeps working


def test_recover_from_the_store_alone_gives_the_same_paths_sizes_and_hashes(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    server, _ = populated(start_server)
    expected = tree(server.app.drive.catalog)
    server.stop()  # flushes the last manifest
    data_dir = server.config.data_dir
    (data_dir / "catalog.sqlite").unlink()
    for leftover in data_dir.glob("catalog.sqlite-*"):
        leftover.unlink()
    assert cli_main(["-c", os.devnull, "-d", str(data_dir), "recover"]) == 0
    recovered = Catalog(f"sqlite:///{data_dir / 'catalog.sqlite'}")
    assert tree(recovered) == expected
    recovered.close()


def test_a_damaged_part_stops_the_restore_before_any_row_is_written(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    server, _ = populated(start_server)
    made = backup_catalog(server.app.drive.catalog, server.app.drive.backing_store, part_size=512)
    locator = made.parts[1].locator
    chunk = next((server.config.data_dir / "store" / "chunks").glob(f"*/{locator}.chunk"))
    damaged = bytearray(chunk.read_bytes())
    damaged[10] ^= 0xFF
    chunk.write_bytes(bytes(damaged))
    fresh = Catalog(f"sqlite:///{tmp_path / 'restored.sqlite'}")
    with pytest.raises(CatalogError, match="damaged"):
        restore_catalog(fresh, server.app.drive.backing_store, made)
    assert fresh.tree.is_empty()
    fresh.close()


def test_restore_refuses_to_overwrite_without_force(
    start_server: Callable[..., RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    server, files = populated(start_server)
    expected = tree(server.app.drive.catalog)
    server.stop()
    data_dir = server.config.data_dir
    args = ["-c", os.devnull, "-d", str(data_dir)]
    assert cli_main([*args, "backup"]) == 0
    assert "backed up:" in capsys.readouterr().out
    # the catalog changes after the backup, then someone restores over it
    catalog = Catalog(f"sqlite:///{data_dir / 'catalog.sqlite'}")
    copied = catalog.tree.resolve(["copy.bin"])
    assert copied is not None
    catalog.tree.delete(copied, recursive=False)
    catalog.close()
    assert cli_main([*args, "restore"]) != 0
    assert "--force" in capsys.readouterr().err
    catalog = Catalog(f"sqlite:///{data_dir / 'catalog.sqlite'}")
    assert "/copy.bin" not in tree(catalog)  # untouched
    catalog.close()
    assert cli_main([*args, "restore", "--force"]) == 0
    captured = capsys.readouterr()
    assert "restored" in captured.out and "set the old catalog aside" in captured.err
    assert list(data_dir.glob("catalog.sqlite.before-restore-*"))
    catalog = Catalog(f"sqlite:///{data_dir / 'catalog.sqlite'}")
    assert tree(catalog) == expected
    catalog.close()


def test_newer_changes_after_a_restore_do_not_reuse_manifest_numbers(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """After a restore, the store may hold manifests newer than the backup; new changes
    must be numbered after them, or a later recover would drop them as duplicates."""
    server, _ = populated(start_server)
    made = backup_catalog(server.app.drive.catalog, server.app.drive.backing_store, part_size=MiB)
    requests.put(server.url + "after-backup.txt", data=b"x").raise_for_status()
    server.ship()  # manifests name shipped content only
    server.app.drive.manifests.flush()
    newest = server.app.drive.catalog.oplog.last_seq()
    server.stop()
    data_dir = server.config.data_dir
    args = ["-c", os.devnull, "-d", str(data_dir)]
    assert cli_main([*args, "restore", "--force", made.locator]) == 0
    catalog = Catalog(f"sqlite:///{data_dir / 'catalog.sqlite'}")
    assert catalog.oplog.last_seq() >= newest
    catalog.close()


def test_backups_are_pruned_scheduled_and_never_collected(
    start_server: Callable[..., RunningServer],
) -> None:
    server = start_server(chunk_size="1MiB", gc_interval=0, backup_interval=1, backup_keep=2)
    requests.put(server.url + "f", data=b"x").raise_for_status()
    server.ship()
    store = server.app.drive.backing_store
    deadline = time.monotonic() + 20
    while len(list_backups(store)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(list_backups(store)) >= 2
    server.stop()
    catalog = Catalog(server.config.catalog_url)
    for _ in range(3):
        backup_catalog(catalog, store, part_size=MiB)
    deleted = prune_backups(store, keep=2)
    kept = list_backups(store)
    assert len(kept) == 2 and deleted and all(d.created <= kept[0].created for d in deleted)
    parts = {loc for b in kept for loc in (p.locator for p in b.parts)} | {b.locator for b in kept}
    collect_garbage(catalog, store, grace=0)
    catalog.close()
    remaining = {loc for loc, _ in store.iter_chunks()}
    assert parts <= remaining  # gc leaves backups alone
    assert not {loc for d in deleted for loc in (p.locator for p in d.parts)} & remaining


def test_a_sqlite_backup_restores_into_postgresql_and_back(
    start_server: Callable[..., RunningServer], postgres_url: str, tmp_path: Path
) -> None:
    server, files = populated(start_server)
    made = backup_catalog(server.app.drive.catalog, server.app.drive.backing_store, part_size=MiB)
    before = everything(server.app.drive.catalog)
    pg = Catalog(postgres_url)
    restore_catalog(pg, server.app.drive.backing_store, made)
    assert tree(pg) == tree(server.app.drive.catalog)
    from_pg = backup_catalog(pg, server.app.drive.backing_store, part_size=MiB)
    pg.close()
    back = Catalog(f"sqlite:///{tmp_path / 'back.sqlite'}")
    restore_catalog(back, server.app.drive.backing_store, from_pg)
    assert everything(back) == before
    back.close()


def test_a_backup_made_while_files_were_staged_finds_them_in_the_store_once_shipped(
    start_server: Callable[..., RunningServer], monkeypatch, capsys
) -> None:
    """The backup names staged locators; by the time it is restored the chunks were
    shipped and their forward records are gone (or the staging folder with them)."""
    server = start_server(chunk_size="1MiB", gc_interval=0, backup_interval=0)
    files = {"big.bin": os.urandom(MiB + 5), "small.txt": b"packed, in the open pack"}
    monkeypatch.setattr("davfs.shipper.Shipper.run_once", lambda self: False)
    for path, data in files.items():
        requests.put(server.url + path, data=data).raise_for_status()
    backup_catalog(server.app.drive.catalog, server.app.drive.backing_store, part_size=MiB)
    monkeypatch.undo()
    server.ship()
    staging = server.app.drive.staging
    assert staging is not None
    staging.forget_forwards(time.time() + 1)  # a grace period later
    server.stop()
    args = ["-c", os.devnull, "-d", str(server.config.data_dir)]
    assert cli_main([*args, "restore", "--force"]) == 0
    assert "staged for shipping" not in capsys.readouterr().err
    restored = start_server(data_dir=server.config.data_dir, chunk_size="1MiB")
    for path, data in files.items():
        assert requests.get(restored.url + path).content == data, path
    assert cli_main([*args, "fsck", "--verify"]) == 0


def test_a_backup_naming_content_that_never_left_a_lost_machine_says_so(
    start_server: Callable[..., RunningServer], monkeypatch, capsys
) -> None:
    server = start_server(chunk_size="1MiB", gc_interval=0, backup_interval=0)
    requests.put(server.url + "shipped.txt", data=b"safe").raise_for_status()
    server.ship()
    monkeypatch.setattr("davfs.shipper.Shipper.run_once", lambda self: False)
    requests.put(server.url + "never-shipped.bin", data=os.urandom(MiB + 5)).raise_for_status()
    backup_catalog(server.app.drive.catalog, server.app.drive.backing_store, part_size=MiB)
    server.stop()
    data_dir = server.config.data_dir
    for path in sorted((data_dir / "staging").rglob("*"), reverse=True):  # the machine is gone
        path.rmdir() if path.is_dir() else path.unlink()
    (data_dir / "catalog.sqlite").unlink()
    args = ["-c", os.devnull, "-d", str(data_dir)]
    assert cli_main([*args, "restore"]) == 0
    assert "2 chunks were staged for shipping when the backup was made" in capsys.readouterr().err
    assert cli_main([*args, "fsck"]) == 1
    assert "/never-shipped.bin" in capsys.readouterr().out
    restored = start_server(data_dir=data_dir, chunk_size="1MiB")
    assert requests.get(restored.url + "shipped.txt").content == b"safe"
