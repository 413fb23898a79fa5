"""The one narrow interface every chunk store implements.

Stores are synchronous: WSGI calls us from cheroot worker threads, and a store that needs
asyncio (Telegram) keeps its loop inside its own module. A store knows nothing about
files or paths; it keeps immutable chunks, each with the metadata that makes the store
self-describing (invariant 6): its ChunkHash, size and BlockHashes.
"""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from davfs.errors import StoreError, StoreFull
from davfs.snapshot import BLOCK_SIZE


@dataclass(frozen=True, slots=True)
class StoreProperties:
    """What callers may rely on: the largest chunk this store accepts, how many
    requests are worth having in flight at once, and where uploads should spool chunks
    so that :meth:`ChunkStore.put_file` can adopt them cheaply (None: the system's
    temporary folder). ``content_addressed``: putting the same chunk twice gives the
    same locator and one stored copy; where it does not (Telegram: every put is a new
    message), uploads reuse a chunk the catalog already has instead of storing it again."""

    name: str
    max_chunk_size: int
    concurrency: int
    spool_dir: str | None = None
    content_addressed: bool = True


@dataclass(frozen=True, slots=True)
class ChunkMeta:
    """Self-describing metadata stored with every chunk (a sidecar file, a caption)."""

    chunk_hash: str
    size: int
    block_size: int
    block_hashes: bytes
    kind: str = "data"
    """``data`` (file contents) or ``manifest`` (a batch of catalog changes, for recovery)."""

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "format": "davfs-chunk/1",
            "chunk_hash": self.chunk_hash,
            "size": self.size,
            "block_size": self.block_size,
            "block_hashes": self.block_hashes.hex(),
        }
        if self.kind != "data":
            data["kind"] = self.kind
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> ChunkMeta:
        return cls(
            chunk_hash=str(data["chunk_hash"]),
            size=int(str(data["size"])),
            block_size=int(str(data["block_size"])),
            block_hashes=bytes.fromhex(str(data["block_hashes"])),
            kind=str(data.get("kind", "data")),
        )

    @classmethod
    def of(cls, data: bytes | memoryview, block_size: int = BLOCK_SIZE) -> ChunkMeta:
        """Hash a whole chunk held in memory (tests, recovery checks)."""
        hasher = ChunkHasher(block_size)
        hasher.update(data)
        return hasher.meta()


class ChunkHasher:
    """The one definition of a chunk's hashes: its ChunkHash and, for every block of
    ``block_size`` bytes from its start, a BlockHash. Fed the chunk's bytes in order."""

    def __init__(self, block_size: int = BLOCK_SIZE) -> None:
        self._block_size = block_size
        self._chunk = hashlib.sha256()
        self._block = hashlib.sha256()
        self._in_block = 0
        self._size = 0
        self._digests: list[bytes] = []

    def update(self, piece: bytes | memoryview) -> None:
        view = memoryview(piece)
        self._chunk.update(view)
        self._size += len(view)
        while view:
            take = min(self._block_size - self._in_block, len(view))
            self._block.update(view[:take])
            self._in_block += take
            view = view[take:]
            if self._in_block == self._block_size:
                self._end_block()

    def _end_block(self) -> None:
        self._digests.append(self._block.digest())
        self._block = hashlib.sha256()
        self._in_block = 0

    def meta(self) -> ChunkMeta:
        if self._in_block:
            self._end_block()
        return ChunkMeta(self._chunk.hexdigest(), self._size, self._block_size, b"".join(self._digests))


def store_error(store: str, exc: OSError) -> StoreError:
    """The StoreError for an OS error: a full disk is StoreFull (HTTP 507)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFull(store, exc.strerror)
    return StoreError(store, f"{exc.strerror or exc}: {exc.filename or ''}")


@runtime_checkable
class ChunkStore(Protocol):
    """Keeps immutable chunks.

    Contracts shared by every implementation (and checked by
    ``tests/stores/conformance.py``):

    - ``put`` returns only once the chunk is durable; it returns the locator to pass to
      ``get``/``delete``. Putting a chunk with the same hash twice is safe (and gives the
      same locator if the store is ``content_addressed``).
    - ``put_file`` does the same for a chunk spooled to a file, and takes the file over:
      it is moved into the store or deleted, whether the put succeeds or not. Uploads
      use it so a chunk never has to sit in memory (invariant 5).
    - ``get`` returns exactly ``length`` bytes starting at ``offset``, or raises
      :class:`~davfs.errors.ChunkMissing` if the chunk is gone. It never verifies:
      verification belongs to the reader, the trust boundary.
    - ``delete`` of a missing chunk is not an error (deleting twice is safe).
    - ``iter_chunks`` yields every chunk's locator and metadata, for recovery.
    - All methods may be called from many threads at once.
    """

    properties: StoreProperties

    def put(self, data: bytes | memoryview, meta: ChunkMeta) -> str: ...

    def put_file(self, path: str, meta: ChunkMeta) -> str: ...

    def get(self, locator: str, offset: int, length: int) -> bytes: ...

    def delete(self, locator: str) -> None: ...

    def exists(self, locator: str) -> bool: ...

    def iter_chunks(self) -> Iterator[tuple[str, ChunkMeta]]: ...

    def close(self) -> None: ...
