"""A ChunkStore in a dict, for tests and the bench (restic's ``backend/mem``)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

from davfs.chunk import ChunkMeta
from davfs.errors import ChunkMissing
from davfs.stores.base import ChunkStore, StoreProperties


class MemoryStore:
    """Chunks live in process memory and vanish with it."""

    def __init__(self, max_chunk_size: int = 64 * 1024 * 1024) -> None:
        self.properties = StoreProperties("memory", max_chunk_size, concurrency=4)
        self._chunks: dict[str, tuple[bytes, ChunkMeta]] = {}
        self._lock = threading.Lock()

    def put(self, data: bytes | memoryview, meta: ChunkMeta) -> str:
        with self._lock:
            self._chunks[meta.chunk_hash] = (bytes(data), meta)
        return meta.chunk_hash

    def put_file(self, path: str, meta: ChunkMeta) -> str:
        try:
            with open(path, "rb") as spooled:
                return self.put(spooled.read(), meta)
        finally:
            os.unlink(path)

    def get(self, locator: str, offset: int, length: int) -> bytes:
        with self._lock:
            entry = self._chunks.get(locator)
        if entry is None:
            raise ChunkMissing(locator, self.properties.name)
        data = entry[0]
        if offset < 0 or length < 0 or offset + length > len(data):
            raise ValueError(f"range {offset}+{length} outside chunk of {len(data)} bytes")
        return data[offset : offset + length]

    def delete(self, locator: str) -> None:
        with self._lock:
            self._chunks.pop(locator, None)

    def exists(self, locator: str) -> bool:
        with self._lock:
            return locator in self._chunks

    def iter_chunks(self) -> Iterator[tuple[str, ChunkMeta]]:
        with self._lock:
            items = [(loc, meta) for loc, (_, meta) in self._chunks.items()]
        yield from items

    def close(self) -> None:
        pass

    def corrupt(self, locator: str, position: int) -> None:
        """Flip one byte of a stored chunk (tests of invariant 2)."""
        with self._lock:
            data, meta = self._chunks[locator]
            flipped = bytearray(data)
            flipped[position] ^= 0xFF
            self._chunks[locator] = (bytes(flipped), meta)


_check: type[ChunkStore] = MemoryStore
