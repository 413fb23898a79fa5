"""The ChunkStore contract as tests (rclone's fstests). A store is done when it passes.

A store's test module subclasses :class:`StoreConformance` and supplies a ``store``
fixture; options that a store cannot meet are declared on the subclass, never skipped
silently.
"""

from __future__ import annotations

import os
import threading

import pytest

from davfs.chunk import ChunkMeta
from davfs.errors import ChunkMissing
from davfs.stores.base import ChunkStore

MiB = 1024 * 1024


def chunk(size: int, seed: int = 0) -> tuple[bytes, ChunkMeta]:
    data = os.urandom(size) if seed == 0 else bytes((i * seed) % 251 for i in range(size))
    return data, ChunkMeta.of(data)


class StoreConformance:
    """Every ChunkStore must pass these."""

    largest_chunk: int = 64 * MiB

    def test_round_trip(self, store: ChunkStore) -> None:
        data, meta = chunk(3 * MiB + 17)
        locator = store.put(data, meta)
        assert store.exists(locator)
        assert store.get(locator, 0, len(data)) == data

    def test_ranged_get(self, store: ChunkStore) -> None:
        data, meta = chunk(2 * MiB + 5)
        locator = store.put(data, meta)
        for offset, length in [
            (0, 1),
            (1, 4095),
            (MiB - 3, 7),
            (2 * MiB, 5),
            (12345, MiB),
            (len(data) - 1, 1),
            (7, 0),
        ]:
            assert store.get(locator, offset, length) == data[offset : offset + length]

    def test_get_outside_the_chunk_is_refused(self, store: ChunkStore) -> None:
        data, meta = chunk(1000)
        locator = store.put(data, meta)
        with pytest.raises(ValueError):
            store.get(locator, 990, 20)

    def test_missing_chunk(self, store: ChunkStore) -> None:
        data, meta = chunk(100)
        locator = store.put(data, meta)
        store.delete(locator)
        assert not store.exists(locator)
        with pytest.raises(ChunkMissing):
            store.get(locator, 0, 10)

    def test_never_stored_chunk_is_missing(self, store: ChunkStore) -> None:
        with pytest.raises(ChunkMissing):
            store.get("0" * 64, 0, 1)
        assert not store.exists("0" * 64)

    def test_double_delete_is_safe(self, store: ChunkStore) -> None:
        data, meta = chunk(10)
        locator = store.put(data, meta)
        store.delete(locator)
        store.delete(locator)
        assert not store.exists(locator)

    def test_put_twice_is_safe(self, store: ChunkStore) -> None:
        data, meta = chunk(5000)
        first = store.put(data, meta)
        second = store.put(data, meta)
        assert (first == second) == store.properties.content_addressed
        assert store.get(second, 0, 5000) == data
        assert store.get(first, 0, 5000) == data

    def test_largest_chunk(self, store: ChunkStore) -> None:
        size = min(self.largest_chunk, store.properties.max_chunk_size)
        data, meta = chunk(size)
        locator = store.put(data, meta)
        assert store.get(locator, size - MiB, MiB) == data[-MiB:]
        assert store.get(locator, 0, 16) == data[:16]

    def test_concurrent_puts(self, store: ChunkStore) -> None:
        chunks = [chunk(256 * 1024 + i) for i in range(16)]
        locators: dict[int, str] = {}
        errors: list[BaseException] = []

        def put(i: int) -> None:
            try:
                locators[i] = store.put(*chunks[i])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=put, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors
        for i, (data, _) in enumerate(chunks):
            assert store.get(locators[i], 0, len(data)) == data

    def test_iteration_for_recovery(self, store: ChunkStore) -> None:
        stored = {}
        for i in range(3):
            data, meta = chunk(1000 + i)
            stored[store.put(data, meta)] = meta
        found = dict(store.iter_chunks())
        for locator, meta in stored.items():
            assert found[locator] == meta

    def test_put_file_adopts_the_spooled_file(self, store: ChunkStore, tmp_path) -> None:
        data, meta = chunk(MiB + 99)
        folder = store.properties.spool_dir or str(tmp_path)
        spooled = os.path.join(folder, "test.spool")
        with open(spooled, "wb") as out:
            out.write(data)
        locator = store.put_file(spooled, meta)
        assert not os.path.exists(spooled)
        assert store.get(locator, 0, len(data)) == data
        with open(spooled, "wb") as out:
            out.write(data)
        again = store.put_file(spooled, meta)  # the same chunk once more: file gone too
        assert (again == locator) == store.properties.content_addressed
        assert store.get(again, 0, len(data)) == data
        assert not os.path.exists(spooled)
