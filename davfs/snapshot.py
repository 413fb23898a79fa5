"""Plain data passed from the catalog to the reader.

A :class:`FileSnapshot` is built by the catalog in one transaction at request time and
is everything a download needs. The reader imports this module and never the catalog:
that import direction is how "snapshot before streaming" (invariant 1) stays true as
the code grows.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from davfs.chunk import DIGEST_SIZE, ChunkRef, Piece


@dataclass(frozen=True, slots=True)
class Extent:
    """A run of bytes of one chunk. Blocks are aligned to the extent's start: for a
    whole chunk its own blocks; for a piece of a pack, ``block_hashes`` holds the
    BlockHashes of the piece's blocks."""

    chunk: ChunkRef
    offset: int
    length: int
    block_hashes: bytes | None = None

    def block_digest(self, index: int) -> bytes:
        """The BlockHash block ``index`` of this extent must have."""
        if self.block_hashes is None:
            return self.chunk.meta.block_digest(self.offset // self.chunk.meta.block_size + index)
        return self.block_hashes[index * DIGEST_SIZE : (index + 1) * DIGEST_SIZE]

    def piece(self) -> Piece:
        return Piece(self.chunk.chunk_hash, self.offset, self.length, self.block_hashes)

    @classmethod
    def whole(cls, chunk: ChunkRef) -> Extent:
        return cls(chunk, 0, chunk.size)


@dataclass(frozen=True, slots=True)
class FileSnapshot:
    """One committed version of a file, as plain immutable data."""

    path: str
    version_id: int
    size: int
    mtime: float
    etag: str
    extents: tuple[Extent, ...]
    damaged: str | None = None
    """Why ``fsck --repair`` found a chunk of this version unreadable, if it did."""


class SnapshotCache:
    """Snapshots of recently read versions, so a hot file's next request (a range, a
    resumed download) reads no extent or BlockHash rows: versions never change.

    What can change under a version is where its chunks are (shipped, or healed by a new
    upload or ``fsck --repair``), so an entry lives at most :attr:`ttl` seconds, and a
    caller whose read fails on a cached snapshot forgets it and asks the catalog again.
    Bounded by the BlockHash bytes held (plus a little per extent)."""

    def __init__(self, *, max_bytes: int = 8 * 1024 * 1024, ttl: float = 60.0) -> None:
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._entries: OrderedDict[int, tuple[float, int, FileSnapshot]] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def get(
        self, version_id: int, path: str, load: Callable[[int, str], FileSnapshot]
    ) -> tuple[FileSnapshot, bool]:
        """The snapshot of ``version_id`` named ``path``, and whether it came from the cache."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(version_id)
            if entry is not None and entry[0] > now:
                self._entries.move_to_end(version_id)
                snapshot = entry[2]
                return (snapshot if snapshot.path == path else replace(snapshot, path=path)), True
        snapshot = load(version_id, path)
        if snapshot.damaged is None:
            self._keep(version_id, snapshot, now + self._ttl)
        return snapshot, False

    def forget(self, version_id: int) -> None:
        with self._lock:
            entry = self._entries.pop(version_id, None)
            if entry is not None:
                self._held -= entry[1]

    def _keep(self, version_id: int, snapshot: FileSnapshot, expires: float) -> None:
        cost = sum(256 + len(e.block_hashes or e.chunk.meta.block_hashes) for e in snapshot.extents)
        if cost > self._max_bytes // 4:
            return  # one huge file would push out every other
        with self._lock:
            old = self._entries.pop(version_id, None)
            if old is not None:
                self._held -= old[1]
            self._entries[version_id] = (expires, cost, snapshot)
            self._held += cost
            while self._held > self._max_bytes:
                _, (_, gone, _) = self._entries.popitem(last=False)
                self._held -= gone
