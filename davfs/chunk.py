"""Chunks: the block size, how a chunk is hashed, the one chunk record, and checking
stored bytes against it.

A *chunk* is one immutable object in a store. Its record, :class:`ChunkMeta`, is what
the chunk proves about itself and travels with it (the local store's sidecar, the
Telegram trailer, the catalog's ``chunks`` row): its ChunkHash (identity, for dedup), its
size, the BlockHash of every block of at most :data:`BLOCK_SIZE` bytes from its start,
what it holds (``kind``) and how it is written (``format``). A :class:`ChunkRef` adds
where a store keeps it.

``format`` names how a chunk is hashed (and, as later formats add it, packed and
encrypted); every format ever written stays readable, so code that checks a hash goes
through :func:`verify_block` and the readers below, which know them all:

- format 1: BlockHash = SHA-256 of the block; ChunkHash = SHA-256 of the chunk's bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from davfs.errors import IntegrityError

BLOCK_SIZE = 1024 * 1024
"""Blocks are at most 1 MiB: Telegram's ``upload.getFile`` window, and small enough that
verifying a block before sending it costs little latency."""

DIGEST_SIZE = 32
"""Bytes per BlockHash."""

FORMAT_SHA256 = 1
"""The first release's format (see the module docstring)."""

FORMATS = frozenset({FORMAT_SHA256})
"""Every chunk format this davfs reads."""

_FORMAT_NAME = "davfs-chunk/{}"


@dataclass(frozen=True, slots=True)
class ChunkMeta:
    """The one chunk record: what a chunk proves about itself, stored with it."""

    chunk_hash: str
    size: int
    block_size: int
    block_hashes: bytes
    """Concatenated :data:`DIGEST_SIZE`-byte BlockHashes, one per block, in order."""
    kind: str = "data"
    """``data`` (file contents), ``manifest`` (catalog changes, for recovery),
    ``backup`` / ``backup-part`` (catalog backups)."""
    format: int = FORMAT_SHA256

    def block_count(self) -> int:
        return len(self.block_hashes) // DIGEST_SIZE

    def block_digest(self, index: int) -> bytes:
        return self.block_hashes[index * DIGEST_SIZE : (index + 1) * DIGEST_SIZE]

    def block_span(self, index: int) -> tuple[int, int]:
        """(offset, length) of block ``index`` in the chunk."""
        offset = index * self.block_size
        return offset, min(self.block_size, self.size - offset)

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "format": _FORMAT_NAME.format(self.format),
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
        """Read a stored record; a format this davfs does not know is a ValueError."""
        name = str(data.get("format", _FORMAT_NAME.format(FORMAT_SHA256)))
        prefix, _, number = name.rpartition("/")
        if prefix != "davfs-chunk" or not number.isdigit() or int(number) not in FORMATS:
            raise ValueError(f"unknown chunk format {name!r}; a newer davfs wrote it")
        return cls(
            chunk_hash=str(data["chunk_hash"]),
            size=int(str(data["size"])),
            block_size=int(str(data["block_size"])),
            block_hashes=bytes.fromhex(str(data["block_hashes"])),
            kind=str(data.get("kind", "data")),
            format=int(number),
        )

    @classmethod
    def of(cls, data: bytes | memoryview, block_size: int = BLOCK_SIZE, *, kind: str = "data") -> ChunkMeta:
        """Hash a whole chunk held in memory (manifests, backup indexes, tests)."""
        hasher = ChunkHasher(block_size, kind=kind)
        hasher.update(data)
        return hasher.meta()


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """A chunk and where a store keeps it (a file name, a Telegram message id)."""

    locator: str
    meta: ChunkMeta

    @property
    def chunk_hash(self) -> str:
        return self.meta.chunk_hash

    @property
    def size(self) -> int:
        return self.meta.size


@dataclass(frozen=True, slots=True)
class Piece:
    """A run of bytes of one chunk as a file version lists it. A piece of a whole chunk
    is checked against the chunk's BlockHashes; a piece of a pack (many small files in
    one chunk) carries the BlockHashes of its own blocks, which start at its offset."""

    chunk_hash: str
    offset: int
    length: int
    block_hashes: bytes | None = None

    @property
    def whole(self) -> bool:
        return self.block_hashes is None


class ChunkHasher:
    """The one definition of how new chunks are hashed: fed a chunk's bytes in order,
    it gives their :class:`ChunkMeta` in the current format."""

    def __init__(self, block_size: int = BLOCK_SIZE, *, kind: str = "data") -> None:
        self._block_size = block_size
        self._kind = kind
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
        return ChunkMeta(
            self._chunk.hexdigest(), self._size, self._block_size, b"".join(self._digests), self._kind
        )


def block_hash(data: bytes | memoryview, format: int) -> bytes:
    """The BlockHash of ``data`` in a chunk of the given format."""
    if format == FORMAT_SHA256:
        return hashlib.sha256(data).digest()
    raise ValueError(f"unknown chunk format {format}")


def verify_block(meta: ChunkMeta, index: int, data: bytes | memoryview) -> None:
    """Raise :class:`IntegrityError` unless ``data`` is block ``index`` of the chunk."""
    expected = meta.block_digest(index)
    actual = block_hash(data, meta.format)
    if actual != expected:
        raise IntegrityError(index, meta.chunk_hash, expected.hex(), actual.hex())


class ChunkSource(Protocol):
    """What the verified readers need of a store."""

    def get(self, locator: str, offset: int, length: int) -> bytes: ...


def verified_blocks(
    store: ChunkSource, ref: ChunkRef, *, before_read: Callable[[int], object] | None = None
) -> Iterator[bytes]:
    """Every block of a chunk, in order, each checked before it is yielded.
    ``before_read(length)`` runs before each read (a rate limit)."""
    meta = ref.meta
    for index in range(-(-meta.size // meta.block_size)):
        offset, length = meta.block_span(index)
        if before_read is not None:
            before_read(length)
        data = store.get(ref.locator, offset, length)
        verify_block(meta, index, data)
        yield data


def read_verified(store: ChunkSource, ref: ChunkRef) -> bytes:
    """A whole small chunk (a manifest, a backup index), verified block by block."""
    return b"".join(verified_blocks(store, ref))
