"""ChunkWriter: chunks stored while the body arrives, committed only when complete."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from davfs.catalog import ROOT_ID, Catalog, schema
from davfs.chunk import ChunkMeta
from davfs.errors import IncompleteUpload, StoreError, UploadError
from davfs.reader import ChunkReader
from davfs.stores.memory import MemoryStore
from davfs.writer import ChunkWriter, UploadTarget

MiB = 1024 * 1024
EXECUTOR = ThreadPoolExecutor(max_workers=8)


class RecordingStore(MemoryStore):
    def __init__(self, fail_on_put: int | None = None, delay: float = 0.0) -> None:
        super().__init__()
        self.puts = 0
        self.active = 0
        self.max_active = 0
        self._fail_on_put = fail_on_put
        self._delay = delay
        self._count_lock = threading.Lock()

    def put(self, data, meta):
        with self._count_lock:
            self.puts += 1
            number = self.puts
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self._delay)
            if number == self._fail_on_put:
                raise StoreError("recording", "injected failure")
            return super().put(data, meta)
        finally:
            with self._count_lock:
                self.active -= 1


@pytest.fixture
def catalog(tmp_path):
    cat = Catalog(f"sqlite:///{tmp_path}/c.sqlite")
    yield cat
    cat.close()


def writer(catalog, store, name="f", expected=None, chunk_size=MiB, in_flight=2):
    return ChunkWriter(
        UploadTarget(ROOT_ID, name, f"/{name}"),
        catalog.uploads,
        store,
        EXECUTOR,
        expected_size=expected,
        chunk_size=chunk_size,
        block_size=256 * 1024,
        in_flight=in_flight,
    )


def feed(w, data, piece=100_000):
    for i in range(0, len(data), piece):
        w.write(data[i : i + piece])


def read_back(catalog, store, name="f"):
    node = catalog.tree.resolve([name])
    with ChunkReader(catalog.tree.snapshot(node.version_id, f"/{name}"), store, EXECUTOR) as reader:
        return reader.read()


def test_multi_chunk_upload_round_trips(catalog):
    store = RecordingStore()
    data = os.urandom(3 * MiB + 4321)
    w = writer(catalog, store, expected=len(data))
    feed(w, data)
    w.close()
    assert w.created and w.node.size == len(data)
    assert store.puts == 4
    assert read_back(catalog, store) == data
    snap = catalog.tree.snapshot(w.node.version_id, "/f")
    assert [e.length for e in snap.extents] == [MiB, MiB, MiB, 4321]
    assert snap.extents[0].chunk.meta.block_count() == 4
    with catalog.db.engine.connect() as conn:
        assert conn.execute(select(schema.uploads)).first() is None


def test_identical_chunks_are_stored_once(catalog):
    store = RecordingStore()
    block = os.urandom(MiB)
    w = writer(catalog, store, expected=3 * MiB)
    feed(w, block * 3)
    w.close()
    assert store.puts == 1  # once per upload
    w2 = writer(catalog, store, name="g", expected=MiB)
    feed(w2, block)
    w2.close()
    assert len(list(store.iter_chunks())) == 1  # once in the store
    assert read_back(catalog, store) == block * 3
    assert read_back(catalog, store, "g") == block


def test_uploading_the_same_content_again_repairs_a_damaged_chunk(catalog):
    store = RecordingStore()
    data = os.urandom(MiB)
    w = writer(catalog, store, expected=len(data))
    feed(w, data)
    w.close()
    locator = catalog.tree.snapshot(w.node.version_id, "/f").extents[0].chunk.locator
    store.corrupt(locator, 5)
    w2 = writer(catalog, store, name="g", expected=len(data))
    feed(w2, data)
    w2.close()
    assert read_back(catalog, store, "g") == data
    assert read_back(catalog, store) == data


def test_short_body_commits_nothing(catalog):
    store = RecordingStore()
    w = writer(catalog, store, expected=5 * MiB)
    feed(w, os.urandom(2 * MiB + 10))
    with pytest.raises(IncompleteUpload):
        w.close()
    assert catalog.tree.resolve(["f"]) is None
    with catalog.db.engine.connect() as conn:
        assert conn.execute(select(schema.uploads)).first() is None
        rows = dict(conn.execute(select(schema.chunks.c.locator, schema.chunks.c.refcount)).all())
    # every chunk that did reach the store is recorded, unreferenced, for gc
    assert all(rows.get(locator) == 0 for locator, _ in store.iter_chunks())


def test_long_body_is_refused_as_it_arrives(catalog):
    w = writer(catalog, RecordingStore(), expected=10)
    with pytest.raises(IncompleteUpload):
        w.write(b"x" * 11)
    w.abort()
    assert catalog.tree.resolve(["f"]) is None


def test_store_failure_keeps_the_previous_version(catalog):
    store = RecordingStore()
    old = os.urandom(MiB + 5)
    w = writer(catalog, store, expected=len(old))
    feed(w, old)
    w.close()
    failing = RecordingStore(fail_on_put=2)
    failing._chunks = store._chunks
    w2 = writer(catalog, failing, expected=4 * MiB)
    with pytest.raises((UploadError, StoreError)):
        feed(w2, os.urandom(4 * MiB))
        w2.close()
    w2.abort()
    assert read_back(catalog, store) == old


def test_uploads_have_a_bounded_number_of_chunks_in_flight(catalog):
    store = RecordingStore(delay=0.05)
    data = os.urandom(8 * MiB)
    w = writer(catalog, store, expected=len(data), in_flight=2)
    feed(w, data, piece=MiB)
    w.close()
    assert store.max_active <= 2
    assert read_back(catalog, store) == data


def test_empty_upload(catalog):
    w = writer(catalog, RecordingStore(), expected=0)
    w.close()
    assert catalog.tree.resolve(["f"]).size == 0


def test_chunked_upload_without_announced_size(catalog):
    store = RecordingStore()
    data = os.urandom(MiB + 1)
    w = writer(catalog, store, expected=None)
    feed(w, data)
    w.close()
    assert hashlib.sha256(read_back(catalog, store)).digest() == hashlib.sha256(data).digest()


def test_a_caller_reusing_its_buffer_does_not_change_the_hash(catalog):
    store = RecordingStore()
    data = os.urandom(3 * MiB)
    w = writer(catalog, store, expected=len(data), chunk_size=2 * MiB)
    buffer = bytearray(256 * 1024)
    for i in range(0, len(data), len(buffer)):
        buffer[:] = data[i : i + len(buffer)]
        w.write(buffer)
    buffer[:] = b"\0" * len(buffer)
    w.close()
    snap = catalog.tree.snapshot(w.node.version_id, "/f")
    assert snap.extents[0].chunk.chunk_hash == ChunkMeta.of(data[: 2 * MiB], 256 * 1024).chunk_hash
    assert read_back(catalog, store) == data
