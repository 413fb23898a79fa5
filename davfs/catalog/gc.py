"""What garbage collection asks of the catalog; :mod:`davfs.gc` drives these steps and
documents the protocol that keeps them safe while uploads run. Nothing here deletes
from a store.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, and_, delete, func, insert, or_, select, update

from davfs.catalog.db import Database, batches
from davfs.catalog.history import Retention, expired_versions
from davfs.catalog.rows import TOMBSTONE, chunk_row
from davfs.catalog.schema import chunks, extents, meta, strays, upload_chunks, uploads, versions
from davfs.chunk import ChunkRef
from davfs.staging import OPEN

Collectable = tuple[str, str, int]
"""(ChunkHash, locator, size) of a chunk gc may delete."""


class GcQueries:
    """Retired versions, orphans, deletion marks and tombstones."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def drop_retired(self, cutoff: float, retention: Retention | None = None) -> tuple[int, int]:
        """Forget versions retired before ``cutoff`` (but the previous versions
        ``retention`` keeps) and uploads started before it (their process died or gave
        up), so their chunks become unreferenced. Returns how many of each."""
        with self._db.write() as conn:
            now = time.time()
            retired = list(conn.scalars(expired_versions(cutoff, retention, now)))
            for batch in batches(retired):
                counts = Counter(
                    conn.scalars(select(extents.c.chunk_hash).where(extents.c.version_id.in_(batch)))
                )
                for chunk_hash, count in counts.items():
                    conn.execute(
                        update(chunks)
                        .where(chunks.c.chunk_hash == chunk_hash)
                        .values(refcount=chunks.c.refcount - count)
                    )
                for hashes in batches(list(counts)):
                    conn.execute(
                        update(chunks)
                        .where(chunks.c.chunk_hash.in_(hashes), chunks.c.refcount <= 0)
                        .values(
                            refcount=0, unreferenced_since=func.coalesce(chunks.c.unreferenced_since, now)
                        )
                    )
                conn.execute(delete(extents).where(extents.c.version_id.in_(batch)))
                conn.execute(delete(versions).where(versions.c.id.in_(batch)))
            # An abandoned upload's chunks become unknown to the catalog; the store scan
            # that follows finds them and adopts them with their metadata.
            abandoned = list(conn.scalars(select(uploads.c.id).where(uploads.c.started < cutoff)))
            for batch in batches(abandoned):
                conn.execute(delete(upload_chunks).where(upload_chunks.c.upload_id.in_(batch)))
                conn.execute(delete(uploads).where(uploads.c.id.in_(batch)))
        return len(retired), len(abandoned)

    def unknown_chunks(self, found: Sequence[ChunkRef]) -> list[ChunkRef]:
        """Of chunks a store holds, those the catalog has no row or journal entry for
        (an upload that died between its put and its commit), or only as deleted (an
        upload stored the bytes again after gc deleted them, and did not commit)."""
        known: set[str] = set()
        with self._db.read() as conn:
            for batch in batches([c.chunk_hash for c in found]):
                known.update(
                    conn.scalars(
                        select(chunks.c.chunk_hash).where(chunks.c.chunk_hash.in_(batch), ~TOMBSTONE)
                    )
                )
                known.update(
                    conn.scalars(
                        select(upload_chunks.c.chunk_hash).where(upload_chunks.c.chunk_hash.in_(batch))
                    )
                )
        return [c for c in found if c.chunk_hash not in known]

    def adopt_orphans(self, orphans: Sequence[ChunkRef]) -> int:
        """Record store chunks nobody knew as unreferenced from now (an upload that put
        one and has yet to commit it then finds the row and references it)."""
        adopted = 0
        with self._db.write() as conn:
            now = time.time()
            for chunk in orphans:
                # A deleted chunk stored again keeps its deletion epoch: an upload from
                # before that deletion still may not commit it.
                reappeared = conn.execute(
                    update(chunks)
                    .where(chunks.c.chunk_hash == chunk.chunk_hash, TOMBSTONE)
                    .values(locator=chunk.locator, unreferenced_since=now)
                ).rowcount
                exists = reappeared or conn.scalar(
                    select(func.count()).select_from(chunks).where(chunks.c.chunk_hash == chunk.chunk_hash)
                )
                if not exists:
                    conn.execute(insert(chunks).values(**chunk_row(chunk, refcount=0, now=now)))
                adopted += bool(reappeared or not exists)
        return adopted

    def strays(self, found: Sequence[ChunkRef], cutoff: float) -> list[tuple[str, str]]:
        """Of chunks a store holds, the second copies of chunks the catalog has at
        another locator: noted when first seen; returned, as (ChunkHash, locator), once
        first seen before ``cutoff`` (a shipment in flight is a stray for a moment)."""
        now = time.time()
        due: list[tuple[str, str]] = []
        with self._db.write() as conn:
            for batch in batches(list(found)):
                tracked = {
                    r.chunk_hash: r.locator
                    for r in conn.execute(
                        select(chunks.c.chunk_hash, chunks.c.locator).where(
                            chunks.c.chunk_hash.in_([c.chunk_hash for c in batch]), ~TOMBSTONE
                        )
                    )
                }
                noted = {
                    r.locator: r.first_seen
                    for r in conn.execute(
                        select(strays.c.locator, strays.c.first_seen).where(
                            strays.c.locator.in_([c.locator for c in batch])
                        )
                    )
                }
                for chunk in batch:
                    if chunk.chunk_hash not in tracked or tracked[chunk.chunk_hash] == chunk.locator:
                        if chunk.locator in noted:  # no stray any more (its shipment landed)
                            conn.execute(delete(strays).where(strays.c.locator == chunk.locator))
                        continue
                    if chunk.locator not in noted:
                        conn.execute(
                            insert(strays).values(
                                locator=chunk.locator, chunk_hash=chunk.chunk_hash, first_seen=now
                            )
                        )
                    elif noted[chunk.locator] < cutoff:
                        due.append((chunk.chunk_hash, chunk.locator))
        return due

    def forget_strays(self, locators: Sequence[str]) -> None:
        with self._db.write() as conn:
            for batch in batches(list(locators)):
                conn.execute(delete(strays).where(strays.c.locator.in_(batch)))

    def collectable(
        self, cutoff: float, retention: Retention | None = None
    ) -> tuple[list[Collectable], int, int]:
        """What gc would delete now, changing nothing: chunks unreferenced since before
        ``cutoff`` or referenced only by versions retired before it, that no running
        upload has journaled; and how many retired versions and abandoned uploads it
        would drop."""
        with self._db.read() as conn:
            rows: list[Any] = list(conn.execute(_collectable(cutoff)).all())
            retired = list(conn.scalars(expired_versions(cutoff, retention, time.time())))
            abandoned = conn.scalar(
                select(func.count()).select_from(uploads).where(uploads.c.started < cutoff)
            )
            freed: Counter[str] = Counter()
            for batch in batches(retired):
                freed.update(
                    conn.scalars(select(extents.c.chunk_hash).where(extents.c.version_id.in_(batch)))
                )
            journaled = set(conn.scalars(select(upload_chunks.c.chunk_hash)))
            for hashes in batches(list(freed)):
                for r in conn.execute(
                    select(chunks.c.chunk_hash, chunks.c.locator, chunks.c.size, chunks.c.refcount).where(
                        chunks.c.chunk_hash.in_(hashes)
                    )
                ):
                    if r.refcount == freed[r.chunk_hash] and r.chunk_hash not in journaled:
                        rows.append(r)
        return [(r.chunk_hash, r.locator, int(r.size)) for r in rows], len(retired), int(abandoned or 0)

    def mark_for_deletion(
        self, cutoff: float, limit: int, *, stale: float, retry_before: float
    ) -> list[Collectable]:
        """Claim up to ``limit`` collectable chunks for deletion from the store: those
        unreferenced since before ``cutoff``, those whose deletion failed before
        ``retry_before``, and the marks of a gc that died ``stale`` seconds ago. From
        here until :meth:`forget_deleted`, an upload that stored the same bytes at the
        same locator cannot commit them (:class:`~davfs.errors.ChunkCollected`)."""
        with self._db.write() as conn:
            now = time.time()
            query = _collectable(cutoff, stale_before=now - stale, retry_before=retry_before)
            rows = conn.execute(query.limit(limit)).all()
            for batch in batches([r.chunk_hash for r in rows]):
                conn.execute(
                    update(chunks)
                    .where(chunks.c.chunk_hash.in_(batch))
                    .values(deleting=now, deleted_epoch=None)
                )
        return [(r.chunk_hash, r.locator, int(r.size)) for r in rows]

    def forget_deleted(
        self, deleted: Sequence[tuple[str, str]], failed: Sequence[tuple[str, str]] = ()
    ) -> None:
        """These chunks are gone from the store: leave tombstones under a new gc epoch,
        so an upload that read an older epoch before storing them does not commit.
        ``failed`` deletions may or may not have happened (a lost answer): they get the
        same protection and stay marked, for the next run to try again."""
        if not deleted and not failed:
            return
        with self._db.write() as conn:
            epoch = int(conn.scalar(select(meta.c.value).where(meta.c.key == "gc_epoch")) or 0) + 1
            if epoch == 1:
                conn.execute(insert(meta).values(key="gc_epoch", value="1"))
            else:
                conn.execute(update(meta).where(meta.c.key == "gc_epoch").values(value=str(epoch)))
            now = time.time()
            gone = {"deleted_epoch": epoch, "deleted_at": now, "deleting": None, "unreferenced_since": None}
            for pairs, values in ((deleted, gone), (failed, {"deleted_epoch": epoch, "deleted_at": now})):
                for chunk_hash, locator in pairs:
                    conn.execute(
                        update(chunks)
                        .where(
                            chunks.c.chunk_hash == chunk_hash,
                            chunks.c.locator == locator,
                            chunks.c.refcount == 0,
                            chunks.c.deleting.is_not(None),
                        )
                        .values(**values)
                    )

    def prune_tombstones(self, before: float) -> int:
        """Drop tombstones of chunks deleted before ``before`` (no upload runs that long)."""
        with self._db.write() as conn:
            return int(conn.execute(delete(chunks).where(TOMBSTONE, chunks.c.deleted_at < before)).rowcount)


def _collectable(
    cutoff: float, *, stale_before: float | None = None, retry_before: float | None = None
) -> Select[Any]:
    """Unreferenced chunks past the grace period that no upload journal names (also one
    stored again after gc deleted it); with ``retry_before``, deletions that failed
    before then; with ``stale_before``, marks of a gc that died before then."""
    due = and_(chunks.c.deleting.is_(None), chunks.c.unreferenced_since < cutoff)
    if retry_before is not None:
        due = or_(
            due,
            and_(
                chunks.c.deleting.is_not(None),
                chunks.c.deleted_epoch.is_not(None),
                chunks.c.deleted_at < retry_before,
            ),
        )
    if stale_before is not None:
        due = or_(due, and_(chunks.c.deleted_epoch.is_(None), chunks.c.deleting < stale_before))
    return select(chunks.c.chunk_hash, chunks.c.locator, chunks.c.size).where(
        chunks.c.refcount == 0,
        due,
        chunks.c.chunk_hash.not_in(select(upload_chunks.c.chunk_hash)),
        ~chunks.c.locator.like(OPEN + "%"),  # the pack small files are being appended to
    )
