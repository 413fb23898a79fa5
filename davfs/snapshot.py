"""Plain data passed from the catalog to the reader.

A :class:`FileSnapshot` is built by the catalog in one transaction at request time and
is everything a download needs. The reader imports this module and never the catalog:
that import direction is how "snapshot before streaming" (invariant 1) stays true as
the code grows.
"""

from __future__ import annotations

from dataclasses import dataclass

from davfs.chunk import ChunkRef


@dataclass(frozen=True, slots=True)
class Extent:
    """A run of bytes of one chunk. Blocks are aligned to the extent's start, which is
    the chunk's start as long as every extent covers its whole chunk."""

    chunk: ChunkRef
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
