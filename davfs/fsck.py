"""``davfs fsck``: is every file whole?

Two levels. The catalog check (always) compares the catalog with itself: reference
counts, extents, the tree. ``--verify`` then reads every block of every chunk a current
file uses back from the store and checks its SHA-256, exactly as a download would, and
names the files a missing or damaged chunk belongs to. Chunks that only replaced
versions (which a running download may still read) or manifests hold are checked for
presence. Nothing is changed: fsck only
reports, and its exit code says clean (0) or not (1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from davfs.catalog import Catalog
from davfs.errors import ChunkMissing, StoreError
from davfs.stores.base import ChunkStore


@dataclass
class FsckReport:
    """What fsck found: catalog problems, and chunks missing or damaged in the store
    with the paths of the files they break."""

    catalog: list[str] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)
    damaged: dict[str, list[str]] = field(default_factory=dict)
    chunks_verified: int = 0
    bytes_verified: int = 0

    @property
    def clean(self) -> bool:
        return not (self.catalog or self.missing or self.damaged)

    def lines(self) -> list[str]:
        found = [f"catalog: {problem}" for problem in self.catalog]
        for label, chunks in (("missing from the store", self.missing), ("damaged", self.damaged)):
            for chunk_hash, paths in chunks.items():
                found.append(f"chunk {chunk_hash[:16]} {label}; affects {', '.join(paths)}")
        return found


def fsck(
    catalog: Catalog, store: ChunkStore, *, verify: bool, progress: Callable[[int], None] | None = None
) -> FsckReport:
    report = FsckReport(catalog=catalog.integrity_problems())
    for chunk, paths in catalog.referenced_chunks():
        if not (verify and paths):  # chunks no current file uses are checked for presence only
            if not store.exists(chunk.locator):
                report.missing[chunk.chunk_hash] = paths or [
                    "no current file (replaced versions or a manifest)"
                ]
            continue
        try:
            intact = _verify_chunk(
                store, chunk.locator, chunk.size, chunk.block_size, chunk.block_hashes, progress
            )
        except ChunkMissing:
            report.missing[chunk.chunk_hash] = paths
            continue
        except StoreError as exc:
            report.catalog.append(f"chunk {chunk.chunk_hash[:16]} could not be read ({exc}); try again")
            continue
        if not intact:
            report.damaged[chunk.chunk_hash] = paths
        report.chunks_verified += 1
        report.bytes_verified += chunk.size
    return report


def _verify_chunk(
    store: ChunkStore,
    locator: str,
    size: int,
    block_size: int,
    block_hashes: bytes,
    progress: Callable[[int], None] | None,
) -> bool:
    """Whether every block of the chunk matches its BlockHash."""
    for index, offset in enumerate(range(0, size, block_size)):
        length = min(block_size, size - offset)
        data = store.get(locator, offset, length)
        if hashlib.sha256(data).digest() != block_hashes[index * 32 : index * 32 + 32]:
            return False
        if progress is not None:
            progress(length)
    return True
