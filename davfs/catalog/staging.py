"""What write-back asks of the catalog (:mod:`davfs.staging`, :mod:`davfs.shipper`):
sealing packs, the staged chunks to ship, switching a chunk to its store locator, and
how much waits."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, distinct, func, insert, select, update

from davfs.catalog.db import Database, batches
from davfs.catalog.rows import CHUNK_COLUMNS, chunk_of
from davfs.catalog.schema import chunks, extents, nodes
from davfs.catalog.schema import meta as meta_table
from davfs.chunk import ChunkMeta, ChunkRef
from davfs.staging import OPEN, STAGED

_WAITING = chunks.c.locator.like(STAGED + "%") | chunks.c.locator.like(OPEN + "%")
_TROUBLE = "shipping:last-error"


@dataclass(frozen=True)
class Pending:
    """What waits in the staging area for the store."""

    files: int
    chunks: int
    bytes: int
    oldest: float | None
    """Seconds the longest-waiting chunk has waited."""


class StagingQueries:
    """Packs, staged chunks and their shipping."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def note_trouble(self, error: str | None) -> None:
        """Keep the shipper's last store error (None: shipping works again) where
        ``davfs status`` and every instance's health endpoint see it."""
        with self._db.write() as conn:
            conn.execute(delete(meta_table).where(meta_table.c.key == _TROUBLE))
            if error is not None:
                conn.execute(insert(meta_table).values(key=_TROUBLE, value=json.dumps([error, time.time()])))

    def trouble(self) -> tuple[str, float] | None:
        """The last store error the shipper met and when, while shipping fails."""
        with self._db.read() as conn:
            value = conn.scalar(select(meta_table.c.value).where(meta_table.c.key == _TROUBLE))
        if value is None:
            return None
        error, at = json.loads(value)
        return str(error), float(at)

    def seal(self, pack_id: str, meta: ChunkMeta) -> bool:
        """An open pack is whole: from now on an ordinary staged chunk with these hashes.
        False if no file uses it (no commit ever referenced it)."""
        with self._db.write() as conn:
            changed = conn.execute(
                update(chunks)
                .where(chunks.c.chunk_hash == pack_id, chunks.c.locator == OPEN + pack_id)
                .values(
                    locator=STAGED + pack_id,
                    size=meta.size,
                    block_size=meta.block_size,
                    block_hashes=meta.block_hashes,
                    format=meta.format,
                )
            ).rowcount
        return bool(changed)

    def all_waiting(self) -> list[ChunkRef]:
        """Every chunk row with a staging locator, used or not."""
        with self._db.read() as conn:
            return [chunk_of(row) for row in conn.execute(select(*CHUNK_COLUMNS).where(_WAITING))]

    def relocate(self, chunk_hash: str, staged: str, stored: ChunkRef) -> None:
        """A chunk the catalog names by a staging locator is in the store as ``stored``
        (found after a restore): point the row there, with the stored chunk's record
        (a pack may have grown after the backup was made)."""
        with self._db.write() as conn:
            conn.execute(
                update(chunks)
                .where(chunks.c.chunk_hash == chunk_hash, chunks.c.locator == staged)
                .values(
                    locator=stored.locator,
                    size=stored.meta.size,
                    block_size=stored.meta.block_size,
                    block_hashes=stored.meta.block_hashes,
                    format=stored.meta.format,
                )
            )

    def waiting(self, chunk_hashes: Iterable[str]) -> set[str]:
        """Which of these chunks are staged (or in the open pack) and will be shipped."""
        found: set[str] = set()
        with self._db.read() as conn:
            for batch in batches(list(chunk_hashes)):
                found.update(
                    conn.scalars(
                        select(chunks.c.chunk_hash).where(
                            chunks.c.chunk_hash.in_(batch),
                            _WAITING,
                            chunks.c.refcount > 0,
                            chunks.c.deleting.is_(None),
                        )
                    )
                )
        return found

    def open_packs(self) -> dict[str, tuple[int, int]]:
        """Every open pack, with the (format, block size) its pieces were hashed in."""
        with self._db.read() as conn:
            rows = conn.execute(
                select(chunks.c.chunk_hash, chunks.c.format, chunks.c.block_size).where(
                    chunks.c.locator.like(OPEN + "%")
                )
            )
            return {row.chunk_hash: (row.format, row.block_size) for row in rows}

    def to_ship(self, limit: int) -> list[ChunkRef]:
        """Staged chunks some version uses, the longest-waiting first (unused ones are
        gc's: an upload that failed)."""
        with self._db.read() as conn:
            rows = conn.execute(
                select(*CHUNK_COLUMNS)
                .where(
                    chunks.c.locator.like(STAGED + "%"), chunks.c.refcount > 0, chunks.c.deleting.is_(None)
                )
                .order_by(chunks.c.created)
                .limit(limit)
            )
            return [chunk_of(row) for row in rows]

    def shipped(self, chunk_hash: str, staged: str, locator: str) -> bool:
        """The chunk is in the store at ``locator``: point the catalog there, unless gc
        took the staged chunk meanwhile (then False: the stored copy is nobody's)."""
        with self._db.write() as conn:
            changed = conn.execute(
                update(chunks)
                .where(
                    chunks.c.chunk_hash == chunk_hash, chunks.c.locator == staged, chunks.c.deleting.is_(None)
                )
                .values(locator=locator)
            ).rowcount
        return bool(changed)

    def locator_of(self, chunk_hash: str) -> str | None:
        with self._db.read() as conn:
            return conn.scalar(select(chunks.c.locator).where(chunks.c.chunk_hash == chunk_hash))

    def known(self, names: Iterable[str]) -> set[str]:
        """Which of these ChunkHashes (or pack ids) the catalog has a row for."""
        found: set[str] = set()
        with self._db.read() as conn:
            for batch in batches(list(names)):
                found.update(conn.scalars(select(chunks.c.chunk_hash).where(chunks.c.chunk_hash.in_(batch))))
        return found

    def pending(self) -> Pending:
        with self._db.read() as conn:
            row = conn.execute(
                select(
                    func.count(), func.coalesce(func.sum(chunks.c.size), 0), func.min(chunks.c.created)
                ).where(_WAITING, chunks.c.refcount > 0)
            ).one()
            files = conn.scalar(
                select(func.count(distinct(nodes.c.id)))
                .select_from(
                    nodes.join(extents, extents.c.version_id == nodes.c.version_id).join(
                        chunks, chunks.c.chunk_hash == extents.c.chunk_hash
                    )
                )
                .where(_WAITING)
            )
        oldest = None if row[2] is None else max(0.0, time.time() - float(row[2]))
        return Pending(int(files or 0), int(row[0]), int(row[1]), oldest)
