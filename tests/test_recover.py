"""Invariant 6: the store alone rebuilds the catalog (manifests + chunk metadata)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from davfs.catalog import Catalog
from davfs.cli import main as cli_main
from davfs.manifest import ManifestWriter, recover
from davfs.stores.base import ChunkStore
from davfs.stores.local import LocalStore
from tests.conftest import MiB, RunningServer

PROPPATCH = (
    '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x"><D:set><D:prop>'
    "<Z:colour>blue</Z:colour></D:prop></D:set></D:propertyupdate>"
)


def build_history(url: str) -> None:
    """Every kind of change the catalog logs, including ones later undone."""
    s = requests.Session()

    def ok(response: requests.Response) -> None:
        assert response.status_code < 300, (
            response.request.method,
            response.request.url,
            response.status_code,
        )

    ok(s.request("MKCOL", url + "docs"))
    ok(s.request("MKCOL", url + "docs/old"))
    ok(s.put(url + "docs/a.txt", data=b"alpha" * 1000))
    ok(s.put(url + "docs/big.bin", data=os.urandom(2 * MiB + 123)))
    ok(s.put(url + "docs/a.txt", data=b"alpha v2"))  # replaced
    ok(s.put(url + "docs/old/gone.txt", data=b"bye"))
    ok(s.request("DELETE", url + "docs/old"))  # recursive delete
    ok(s.request("MOVE", url + "docs/big.bin", headers={"Destination": url + "moved.bin"}))
    ok(s.request("COPY", url + "docs", headers={"Destination": url + "copy", "Depth": "infinity"}))
    ok(s.request("PROPPATCH", url + "moved.bin", data=PROPPATCH, headers={"Content-Type": "text/xml"}))
    ok(s.put(url + "empty.txt", data=b""))
    ok(s.put(url + "mtime.txt", data=b"x", headers={"X-OC-Mtime": "1000000000"}))
    ok(s.put("{}na\u00efve \u65e5\u672c.txt".format(url), data=b"unicode"))


def tree_of(catalog: Catalog) -> dict[str, Any]:
    """Everything a user could see: paths, kinds, sizes, ETags, mtimes, dead props."""
    return {
        path: (node.is_dir, node.size, node.etag, round(node.modified, 3), catalog.tree.dead_props(node.id))
        for path, node in catalog.tree.walk()
    }


def recovered_from(store: ChunkStore, tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    fresh = Catalog(f"sqlite:///{tmp_path / 'recovered.sqlite'}")
    try:
        report = recover(fresh, store)
        return tree_of(fresh), report.problems
    finally:
        fresh.close()


def test_recover_rebuilds_the_tree_from_the_store_alone(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    running = start_server(chunk_size="1MiB")
    build_history(running.url)
    running.ship()
    original = tree_of(running.app.drive.catalog)
    running.stop()  # writes the last manifest

    store = LocalStore(str(running.config.data_dir / "store"))
    tree, problems = recovered_from(store, tmp_path)
    assert problems == []
    assert tree == original
    assert "/docs/old" not in tree and "/docs/big.bin" not in tree and "/moved.bin" in tree
    assert ">blue<" in tree["/moved.bin"][4]["{urn:x}colour"]


def test_the_recovered_catalog_serves_the_same_bytes(start_server: Callable[..., RunningServer]) -> None:
    body = os.urandom(3 * MiB + 5)
    first = start_server(chunk_size="1MiB")
    requests.put(first.url + "f.bin", data=body).raise_for_status()
    first.ship()
    first.stop()
    data_dir = first.config.data_dir
    (data_dir / "catalog.sqlite").rename(data_dir / "lost.sqlite")
    assert cli_main(["-d", str(data_dir), "recover"]) == 0
    second = start_server(data_dir=data_dir, chunk_size="1MiB")
    assert requests.get(second.url + "f.bin").content == body
    requests.put(second.url + "g.bin", data=b"after recovery").raise_for_status()  # ids continue
    assert requests.get(second.url + "g.bin").content == b"after recovery"


def test_recover_refuses_to_overwrite_a_catalog(
    start_server: Callable[..., RunningServer], capsys: Any
) -> None:
    running = start_server()
    requests.put(running.url + "keep.txt", data=b"keep").raise_for_status()
    running.ship()
    running.stop()
    data_dir = running.config.data_dir
    assert cli_main(["-d", str(data_dir), "recover"]) != 0
    assert "--force" in capsys.readouterr().err
    assert cli_main(["-d", str(data_dir), "recover", "--force"]) == 0
    assert list(data_dir.glob("catalog.sqlite.before-recover-*"))  # set aside, not deleted
    again = start_server(data_dir=data_dir)
    assert requests.get(again.url + "keep.txt").content == b"keep"


def test_a_file_whose_chunks_are_gone_is_reported_not_restored(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    running = start_server(chunk_size="1MiB")
    # Over a quarter of a chunk each, so not packed together: one chunk apiece.
    requests.put(running.url + "lost.bin", data=b"L" * 300_000).raise_for_status()
    requests.put(running.url + "kept.bin", data=b"K" * 300_000).raise_for_status()
    running.ship()
    lost = running.app.drive.catalog.tree.resolve(["lost.bin"])
    assert lost is not None and lost.version_id is not None
    lost_chunk = (
        running.app.drive.catalog.tree.snapshot(lost.version_id, "/lost.bin").extents[0].chunk.locator
    )
    running.stop()
    store = LocalStore(str(running.config.data_dir / "store"))
    store.delete(lost_chunk)
    tree, problems = recovered_from(store, tmp_path)
    assert "/kept.bin" in tree and "/lost.bin" not in tree
    assert problems and "/lost.bin" in problems[0]


def test_changes_made_while_a_manifest_is_stored_wait_for_the_next_flush(tmp_path: Path) -> None:
    """On Telegram a manifest takes a third of a second to store; a folder copy commits
    files all the while. One flush must write one manifest, not chase every commit."""
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")
    store = LocalStore(str(tmp_path / "store"))
    real_put, names = store.put, iter(range(100))

    def slow_put(data: Any, meta: Any) -> str:
        catalog.tree.mkdir(1, f"made-meanwhile-{next(names)}")  # a commit during the put
        return real_put(data, meta)

    store.put = slow_put  # type: ignore[method-assign]
    writer = ManifestWriter(catalog, store, interval=3600)
    catalog.tree.mkdir(1, "first")
    assert writer.flush() == 1
    assert writer.flush() == 1  # the folder made during the first put
    assert sum(1 for _ in store.iter_chunks()) == 2
    catalog.close()


def test_a_flush_writes_pending_entries_once_and_recovery_replays_them(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")
    store = LocalStore(str(tmp_path / "store"))
    writer = ManifestWriter(catalog, store, interval=3600)
    folder = catalog.tree.mkdir(1, "a")
    assert writer.flush() == 1
    catalog.tree.mkdir(folder.id, "b")
    assert catalog.oplog.pending(10) and writer.flush() == 1
    assert writer.flush() == 0 and catalog.oplog.pending(10) == []
    kinds = [meta.kind for _, meta in store.iter_chunks()]
    assert kinds == ["manifest", "manifest"]
    tree, problems = recovered_from(store, tmp_path)
    assert set(tree) == {"/a", "/a/b"} and problems == []
    catalog.close()


def test_a_second_recovery_keeps_the_first_ones_history(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "store"))
    first = Catalog(f"sqlite:///{tmp_path / 'one.sqlite'}")
    first.tree.mkdir(first.tree.mkdir(1, "a").id, "inner")
    ManifestWriter(first, store, interval=3600).flush()
    first.close()
    second = Catalog(f"sqlite:///{tmp_path / 'two.sqlite'}")
    assert recover(second, store).problems == []
    second.tree.mkdir(1, "b")
    ManifestWriter(second, store, interval=3600).flush()
    second.close()
    tree, problems = recovered_from(store, tmp_path)
    assert problems == [] and set(tree) == {"/a", "/a/inner", "/b"}


def test_the_writer_thread_flushes_on_its_interval(tmp_path: Path) -> None:
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}")
    store = LocalStore(str(tmp_path / "store"))
    writer = ManifestWriter(catalog, store, interval=0.1)
    writer.start()
    try:
        catalog.tree.mkdir(1, "a")
        deadline = time.monotonic() + 10
        while catalog.oplog.pending(10) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert catalog.oplog.pending(10) == []
        assert [meta.kind for _, meta in store.iter_chunks()] == ["manifest"]
    finally:
        writer.close()
        catalog.close()
