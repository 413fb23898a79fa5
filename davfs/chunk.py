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

- format 1 (the first release): blocks of 1 MiB; BlockHash = SHA-256 of the block;
  ChunkHash = SHA-256 of the chunk's bytes.
- format 2: blocks of 64 KiB; BlockHash = BLAKE3 of the block; ChunkHash = BLAKE3 of
  ``davfs-chunk/2``, the size, the block size and the BlockHashes, so each byte is
  hashed once (BLAKE3 runs at about four times SHA-256's speed here, and releases the
  GIL) and the ChunkHash still covers every byte. The small blocks let a 64 KiB range be
  verified without hashing the 1 MiB around it; stores are still read in aligned
  windows of up to :data:`BLOCK_SIZE` (Telegram's ``upload.getFile`` window).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import blake3

from davfs.errors import IntegrityError

BLOCK_SIZE = 1024 * 1024
"""Stores are read in windows of at most 1 MiB, aligned to it (Telegram's
``upload.getFile`` window); format 1's blocks are this size."""

DIGEST_SIZE = 32
"""Bytes per BlockHash."""

FORMAT_SHA256 = 1
"""The first release's format (see the module docstring)."""
FORMAT_BLAKE3 = 2
"""BLAKE3 over 64 KiB blocks (see the module docstring)."""
CURRENT_FORMAT = FORMAT_BLAKE3
"""The format new chunks are written in."""

FORMATS = frozenset({FORMAT_SHA256, FORMAT_BLAKE3})
"""Every chunk format this davfs reads."""

BLOCK_SIZES = {FORMAT_SHA256: BLOCK_SIZE, FORMAT_BLAKE3: 64 * 1024}
"""Each format's block size (a multiple of which divides :data:`BLOCK_SIZE`)."""

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
    def of(
        cls,
        data: bytes | memoryview,
        block_size: int | None = None,
        *,
        kind: str = "data",
        format: int | None = None,
    ) -> ChunkMeta:
        """Hash a whole chunk held in memory (manifests, backup indexes, tests)."""
        hasher = ChunkHasher(block_size, kind=kind, format=format)
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
    """The one definition of how chunks are hashed: fed a chunk's bytes in order, it
    gives their :class:`ChunkMeta`, in the current format unless told another (tests,
    and reading back a first-release chunk). ``block_size`` is the format's own unless
    given (tests)."""

    def __init__(
        self, block_size: int | None = None, *, kind: str = "data", format: int | None = None
    ) -> None:
        if format is None:
            format = CURRENT_FORMAT  # looked up here, so a test can write the first release's format
        if format not in FORMATS:
            raise ValueError(f"unknown chunk format {format}")
        self._format = format
        self._block_size = block_size or BLOCK_SIZES[format]
        self._kind = kind
        self._chunk = hashlib.sha256() if format == FORMAT_SHA256 else None
        self._block = _new_block_hash(format)
        self._in_block = 0
        self._size = 0
        self._digests: list[bytes] = []

    def update(self, piece: bytes | memoryview) -> None:
        view = memoryview(piece)
        if self._chunk is not None:
            self._chunk.update(view)
        self._size += len(view)
        while view:
            take = min(self._block_size - self._in_block, len(view))
            if take == self._block_size:  # a whole block at once: no hasher state to carry
                self._digests.append(block_hash(view[:take], self._format))
            else:
                self._block.update(view[:take])
                self._in_block += take
                if self._in_block == self._block_size:
                    self._end_block()
            view = view[take:]

    def _end_block(self) -> None:
        self._digests.append(self._block.digest())
        self._block = _new_block_hash(self._format)
        self._in_block = 0

    def meta(self) -> ChunkMeta:
        if self._in_block:
            self._end_block()
        digests = b"".join(self._digests)
        if self._chunk is not None:
            chunk_hash = self._chunk.hexdigest()
        else:
            chunk_hash = chunk_hash_of(self._size, self._block_size, digests)
        return ChunkMeta(chunk_hash, self._size, self._block_size, digests, self._kind, self._format)


def chunk_hash_of(size: int, block_size: int, block_hashes: bytes) -> str:
    """A format-2 ChunkHash: BLAKE3 over what identifies the chunk's bytes."""
    head = b"davfs-chunk/2\0" + size.to_bytes(8, "big") + block_size.to_bytes(4, "big")
    return blake3.blake3(head + block_hashes).hexdigest()


def _new_block_hash(format: int) -> _Hash:
    return hashlib.sha256() if format == FORMAT_SHA256 else blake3.blake3()


class _Hash(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...
    def digest(self) -> bytes: ...


def block_hash(data: bytes | memoryview, format: int) -> bytes:
    """The BlockHash of ``data`` in a chunk of the given format."""
    if format == FORMAT_BLAKE3:
        return blake3.blake3(data).digest()
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
    """Every byte of a chunk, in order, read in windows of at most :data:`BLOCK_SIZE`;
    every block of a window is checked before the window is yielded. ``before_read
    (length)`` runs before each read (a rate limit)."""
    meta = ref.meta
    blocks = -(-meta.size // meta.block_size)
    per_window = max(1, BLOCK_SIZE // meta.block_size)
    for first in range(0, blocks, per_window):
        last = min(blocks, first + per_window)
        offset = first * meta.block_size
        length = min(meta.size, last * meta.block_size) - offset
        if before_read is not None:
            before_read(length)
        data = store.get(ref.locator, offset, length)
        view = memoryview(data)
        for index in range(first, last):
            start = (index - first) * meta.block_size
            verify_block(meta, index, view[start : start + meta.block_span(index)[1]])
        yield data


def read_verified(store: ChunkSource, ref: ChunkRef) -> bytes:
    """A whole small chunk (a manifest, a backup index), verified block by block."""
    return b"".join(verified_blocks(store, ref))
