"""`davfs gc`: deletes what no file needs, keeps what a download or an upload may still
need, and never leaves a committed file with a missing chunk, even while uploads of the
same bytes race it."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from davfs.catalog import ROOT_ID, Catalog, schema
from davfs.chunk import ChunkMeta
from davfs.cli import main as cli_main
from davfs.errors import ChunkCollected
from davfs.fsck import fsck
from davfs.gc import collect_garbage
from davfs.reader import ChunkReader
from davfs.stores.base import ChunkStore
from davfs.stores.faulty import FaultPlan, FaultyStore
from davfs.stores.local import LocalStore
from davfs.writer import ChunkWriter, UploadTarget
from tests.conftest import MiB, RunningServer

EXECUTOR = ThreadPoolExecutor(4)


@pytest.fixture
def drive(tmp_path: Path):
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    store = LocalStore(tmp_path / "store")
    yield catalog, store
    catalog.close()
    store.close()


def upload(catalog: Catalog, store: ChunkStore, name: str, data: bytes, **kwargs) -> ChunkWriter:
    writer = ChunkWriter(
        UploadTarget(ROOT_ID, name, f"/{name}"),
        catalog.uploads,
        store,
        EXECUTOR,
        expected_size=len(data),
        chunk_size=MiB,
        **kwargs,
    )
    writer.write(data)
    return writer


def read(catalog: Catalog, store: ChunkStore, name: str) -> bytes:
    node = catalog.tree.resolve([name])
    assert node is not None and node.version_id is not None
    snapshot = catalog.tree.snapshot(node.version_id, f"/{name}")
    with ChunkReader(snapshot, store, EXECUTOR) as reader:
        return reader.read()


def stored_locators(store: LocalStore) -> set[str]:
    return {locator for locator, _ in store.iter_chunks()}


def test_replaced_and_deleted_files_lose_their_chunks_and_live_ones_keep_theirs(drive):
    catalog, store = drive
    keep, old, gone = os.urandom(2 * MiB + 1), os.urandom(MiB + 5), os.urandom(3000)
    for name, data in (("keep", keep), ("f", old), ("gone", gone)):
        upload(catalog, store, name, data).close()
    upload(catalog, store, "f", b"new content").close()
    catalog.tree.delete(catalog.tree.resolve(["gone"]), recursive=False)
    before = stored_locators(store)

    kept = collect_garbage(catalog, store, grace=3600)
    assert kept.deleted == [] and stored_locators(store) == before  # within the grace period

    report = collect_garbage(catalog, store, grace=0)
    assert report.versions_dropped == 2
    assert {h for h, _, _ in report.deleted} == {
        ChunkMeta.of(old[:MiB]).chunk_hash,
        ChunkMeta.of(old[MiB:]).chunk_hash,
        ChunkMeta.of(gone).chunk_hash,
    }
    assert report.bytes_freed == len(old) + len(gone)
    assert stored_locators(store) == before - {loc for _, loc, _ in report.deleted}
    assert read(catalog, store, "keep") == keep and read(catalog, store, "f") == b"new content"
    check = fsck(catalog, store, verify=True)
    assert check.clean, check.lines()
    assert collect_garbage(catalog, store, grace=0).deleted == []  # nothing left to do


def test_shared_chunks_stay_while_any_file_uses_them(drive):
    catalog, store = drive
    data = os.urandom(MiB + 10)
    upload(catalog, store, "a", data).close()
    catalog.tree.copy_node(catalog.tree.resolve(["a"]).id, ROOT_ID, "b")
    catalog.tree.delete(catalog.tree.resolve(["a"]), recursive=False)
    assert collect_garbage(catalog, store, grace=0).deleted == []
    assert read(catalog, store, "b") == data


def test_dry_run_lists_and_changes_nothing(drive):
    catalog, store = drive
    upload(catalog, store, "f", os.urandom(5000)).close()
    catalog.tree.delete(catalog.tree.resolve(["f"]), recursive=False)
    orphan = os.urandom(700)
    store.put(orphan, ChunkMeta.of(orphan))
    before = stored_locators(store)
    report = collect_garbage(catalog, store, grace=0, dry_run=True)
    assert len(report.deleted) == 2 and report.versions_dropped == 1 and report.orphans_adopted == 1
    assert "would delete 2 chunks" in report.lines()[-1]
    assert stored_locators(store) == before
    assert len(collect_garbage(catalog, store, grace=0).deleted) == 2


def test_chunks_unknown_to_the_catalog_get_a_grace_period_then_go(drive):
    """An upload that died between its put and its commit leaves a chunk nobody knows."""
    catalog, store = drive
    orphan = os.urandom(900)
    locator = store.put(orphan, ChunkMeta.of(orphan))
    first = collect_garbage(catalog, store, grace=3600)
    assert first.orphans_adopted == 1 and first.deleted == [] and store.exists(locator)
    assert collect_garbage(catalog, store, grace=0).deleted == [
        (ChunkMeta.of(orphan).chunk_hash, locator, 900)
    ]
    assert not store.exists(locator)


def test_an_adopted_orphan_that_an_upload_then_commits_is_kept(drive):
    """The orphan may be an upload that has not committed yet: it finds the row."""
    catalog, store = drive
    data = os.urandom(MiB // 2)
    writer = upload(catalog, store, "late", data)
    writer._ship_chunk(last=True)  # stored, not committed (what close() does first)
    assert collect_garbage(catalog, store, grace=3600).orphans_adopted == 1
    writer.close()
    assert collect_garbage(catalog, store, grace=0).deleted == []
    assert read(catalog, store, "late") == data


def test_abandoned_uploads_are_dropped_and_their_chunks_collected(drive):
    catalog, store = drive
    data = os.urandom(3 * MiB)
    writer = upload(catalog, store, "big", data[: 2 * MiB])  # two full chunks journaled
    for future, _ in writer._pending:
        future.result()
    journaled = stored_locators(store)
    assert len(journaled) == 2
    assert collect_garbage(catalog, store, grace=3600).deleted == []  # the upload may still finish
    report = collect_garbage(catalog, store, grace=0)
    assert report.uploads_abandoned == 1 and {loc for _, loc, _ in report.deleted} == journaled
    assert stored_locators(store) == set()


def test_an_upload_racing_gc_for_the_same_bytes_never_commits_a_deleted_chunk(drive):
    """The one meeting point of gc and uploads: the upload stores bytes whose old copy is
    garbage, and gc deletes that locator before the upload commits."""
    catalog, store = drive
    data = os.urandom(4000)
    upload(catalog, store, "old", data).close()
    catalog.tree.delete(catalog.tree.resolve(["old"]), recursive=False)

    racing = upload(catalog, store, "new", data)
    racing._ship_chunk(last=True)  # the same chunk, stored again at the same locator
    assert len(collect_garbage(catalog, store, grace=0).deleted) == 1  # ... and deleted by gc
    with pytest.raises(ChunkCollected) as raised:
        racing.close()
    assert raised.value.http_status == 503
    assert catalog.tree.resolve(["new"]) is None
    upload(catalog, store, "new", data).close()  # the client's retry stores it anew
    assert read(catalog, store, "new") == data
    assert fsck(catalog, store, verify=True).clean


def test_an_upload_committing_while_gc_deletes_its_chunk_is_refused(drive):
    catalog, store = drive
    data = os.urandom(4000)
    upload(catalog, store, "old", data).close()
    catalog.tree.delete(catalog.tree.resolve(["old"]), recursive=False)
    catalog.gc.drop_retired(time.time() + 1)
    racing = upload(catalog, store, "new", data)
    racing._ship_chunk(last=True)
    marked = catalog.gc.mark_for_deletion(time.time() + 1, 10, stale=3600, retry_before=0)  # gc is mid-way
    assert len(marked) == 1
    with pytest.raises(ChunkCollected):
        racing.close()
    assert catalog.uploads.locator_of(marked[0][0]) is None  # and no upload reuses a copy being deleted


def test_uploads_and_deletes_racing_a_gc_loop_leave_every_file_whole(drive):
    """Bounded stress: few distinct contents, so uploads keep storing bytes gc is
    collecting; every commit either holds all its chunks or was refused."""
    catalog, store = drive
    contents = [os.urandom(MiB + 1000 * i) for i in range(3)]
    stop = threading.Event()
    refused = 0
    gc_runs = 0

    def client(index: int) -> None:
        nonlocal refused
        for round_ in range(25):
            if stop.is_set():
                return
            name = f"c{index}-{round_ % 3}"
            try:
                upload(catalog, store, name, contents[(index + round_) % 3]).close()
            except ChunkCollected:
                refused += 1
            if round_ % 2:
                node = catalog.tree.resolve([name])
                if node is not None:
                    catalog.tree.delete(node, recursive=False)

    def collector() -> None:
        nonlocal gc_runs
        while not stop.is_set():
            collect_garbage(catalog, store, grace=0)
            gc_runs += 1

    gc_thread = threading.Thread(target=collector)
    gc_thread.start()
    deadline = time.monotonic() + 60
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client, i) for i in range(4)]
        for future in futures:
            future.result(timeout=max(1, deadline - time.monotonic()))
    stop.set()
    gc_thread.join(timeout=60)
    assert gc_runs > 0
    for _, node in catalog.tree.walk():
        if not node.is_dir:
            assert read(catalog, store, node.name) in contents
    report = fsck(catalog, store, verify=True)
    assert report.clean, report.lines()
    collect_garbage(catalog, store, grace=0)
    live = {c.locator for c, _ in catalog.fsck.referenced_chunks()}
    assert stored_locators(store) == live  # no orphan remains


def test_the_server_collects_on_its_schedule(start_server: Callable[..., RunningServer]):
    server = start_server(gc_interval=1, gc_grace=0, chunk_size="1MiB", versions_keep=0)
    # Over a quarter of a chunk, so not packed: the first version has a chunk of its own.
    requests.put(server.url + "f", data=b"first" * 60_000).raise_for_status()
    node = server.app.drive.catalog.tree.resolve(["f"])
    assert node is not None and node.version_id is not None
    first = server.app.drive.catalog.tree.snapshot(node.version_id, "/f").extents[0].chunk
    requests.put(server.url + "f", data=b"second").raise_for_status()
    deadline = time.monotonic() + 15
    while server.app.drive.store.exists(first.locator) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not server.app.drive.store.exists(first.locator)
    assert requests.get(server.url + "f").content == b"second"


def test_davfs_gc_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    catalog = Catalog(f"sqlite:///{data_dir / 'catalog.sqlite'}")
    store = LocalStore(data_dir / "store")
    upload(catalog, store, "f", b"x" * 5000).close()
    node = catalog.tree.resolve(["f"])
    assert node is not None
    catalog.tree.delete(node, recursive=False)
    catalog.close()
    args = ["-c", os.devnull, "-d", str(data_dir), "gc", "--grace", "0"]
    assert cli_main([*args, "--dry-run"]) == 0
    assert "would delete 1 chunks (5000 bytes)" in capsys.readouterr().out
    data_chunks = lambda: [loc for loc, meta in store.iter_chunks() if meta.kind == "data"]  # noqa: E731
    assert len(data_chunks()) == 1
    assert cli_main(args) == 0
    assert "deleted 1 chunks (5000 bytes)" in capsys.readouterr().out
    assert data_chunks() == []  # the manifests (the store's own index) stay


def test_a_schema_2_catalog_is_brought_forward(tmp_path: Path):
    path = tmp_path / "catalog.sqlite"
    Catalog(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE chunks DROP COLUMN deleting")
        db.execute("ALTER TABLE chunks DROP COLUMN deleted_epoch")
        db.execute("ALTER TABLE chunks DROP COLUMN deleted_at")
        db.execute("ALTER TABLE chunks DROP COLUMN damaged")
        db.execute("DROP INDEX ix_nodes_fold")  # schema 4's
        db.execute("ALTER TABLE nodes DROP COLUMN fold")
        db.execute("ALTER TABLE chunks DROP COLUMN kind")
        db.execute("ALTER TABLE chunks DROP COLUMN format")
        db.execute("ALTER TABLE extents DROP COLUMN block_hashes")
        db.execute("DROP TABLE locks")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    catalog = Catalog(f"sqlite:///{path}")
    assert catalog.db.schema_version() == schema.SCHEMA_VERSION and catalog.uploads.gc_epoch() == 0
    store = LocalStore(tmp_path / "store")
    upload(catalog, store, "f", b"abc").close()
    node = catalog.tree.resolve(["f"])
    assert node is not None
    catalog.tree.delete(node, recursive=False)
    assert len(collect_garbage(catalog, store, grace=0).deleted) == 1
    catalog.close()


@pytest.mark.parametrize("fault", ["E", "L"])
def test_a_failed_delete_is_retried_by_the_next_run_and_blocks_no_later_upload(tmp_path: Path, fault: str):
    """E: the store refused; L: it deleted but the answer was lost. Either way the next
    run finishes the job, and an upload that starts after the attempt is not refused."""
    catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    store = FaultyStore(LocalStore(tmp_path / "store"))
    data = os.urandom(4000)
    upload(catalog, store, "f", data).close()
    node = catalog.tree.resolve(["f"])
    assert node is not None
    catalog.tree.delete(node, recursive=False)
    store.arm(FaultPlan(delete=fault))
    first = collect_garbage(catalog, store, grace=0)
    assert len(first.failed) == 1 and first.deleted == []
    upload(catalog, store, "again", data).close()  # not refused: it began after the attempt
    assert read(catalog, store, "again") == data
    again = catalog.tree.resolve(["again"])
    assert again is not None
    catalog.tree.delete(again, recursive=False)
    second = collect_garbage(catalog, store, grace=0)
    assert len(second.deleted) == 1 and second.failed == []
    assert [loc for loc, meta in store.iter_chunks() if meta.kind == "data"] == []
    catalog.close()


def test_bytes_stored_again_after_gc_deleted_them_and_never_committed_are_collected(drive):
    catalog, store = drive
    data = os.urandom(4000)
    upload(catalog, store, "old", data).close()
    catalog.tree.delete(catalog.tree.resolve(["old"]), recursive=False)
    assert len(collect_garbage(catalog, store, grace=0).deleted) == 1
    abandoned = upload(catalog, store, "new", data)
    abandoned._ship_chunk(last=True)
    abandoned.abort()  # the client went away: the chunk is in the store, the row a tombstone
    assert len(list(store.iter_chunks())) == 1
    report = collect_garbage(catalog, store, grace=0)
    assert report.orphans_adopted == 1 and len(report.deleted) == 1
    assert list(store.iter_chunks()) == []
    upload(catalog, store, "new", data).close()
    assert read(catalog, store, "new") == data
