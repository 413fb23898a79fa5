"""Plain data passed from the catalog to the reader.

A :class:`FileSnapshot` is built by the catalog in one transaction at request time and
is everything a download needs. The reader imports this module and never the catalog:
that import direction is how "snapshot before streaming" (invariant 1) stays true as
the code grows.
"""

from __future__ import annotations

from dataclasses import dataclass

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
