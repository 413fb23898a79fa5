"""Plain data passed from the catalog to the reader.

A :class:`FileSnapshot` is built by the catalog in one transaction at request time and
is everything a download needs. The reader imports this module and never the catalog:
that import direction is how "snapshot before streaming" (invariant 1) stays true as
the code grows.
"""

from __future__ import annotations

from dataclasses import dataclass

BLOCK_SIZE = 1024 * 1024
"""Blocks are at most 1 MiB: Telegram's ``upload.getFile`` window, and small enough that
verifying a block before sending it costs little latency."""


@dataclass(frozen=True, slots=True)
class ChunkInfo:
    """One stored chunk: identity, location and the hashes of its blocks."""

    chunk_hash: str
    locator: str
    size: int
    block_size: int
    block_hashes: bytes
    """Concatenated 32-byte SHA-256 digests, one per block, in order."""

    def block_count(self) -> int:
        return len(self.block_hashes) // 32

    def block_digest(self, index: int) -> bytes:
        return self.block_hashes[index * 32 : (index + 1) * 32]


@dataclass(frozen=True, slots=True)
class Extent:
    """A run of bytes of one chunk. Blocks are aligned to the extent's start, which is
    the chunk's start as long as every extent covers its whole chunk."""

    chunk: ChunkInfo
    offset: int
    length: int


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
