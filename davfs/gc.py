"""Garbage collection: delete from the store the chunks nothing needs any more.

A chunk becomes garbage when no file version references it: its file was replaced or
deleted (the old version is *retired* and kept for ``grace`` seconds, so a download that
started on it can finish), an upload died after storing it, or a client gave up. gc runs
while the server serves traffic, so it must never delete a chunk that an upload is about
to commit. The protocol, all in catalog transactions (which are serialized, on SQLite and
on PostgreSQL alike):

1. Drop versions retired more than ``grace`` ago (but the previous versions of existing
   files that ``retention`` keeps, see :mod:`davfs.catalog.history`) and uploads
   started more than ``grace`` ago; their chunks' reference counts fall.
2. Scan the store; every chunk the catalog has never heard of (an upload that stored it
   and died, or has not committed yet) gets a row with no references, from now.
3. *Mark* chunks unreferenced for longer than ``grace`` that no upload journal names
   (``deleting``), delete them from the store, then turn the marks into *tombstones*
   under a new gc epoch. A delete that failed (perhaps it happened and only the answer
   was lost) gets the same epoch but stays marked; the next run tries it again.
   A tombstoned chunk that turns up in the store again (an upload stored the bytes
   anew and did not commit) is adopted in step 2 like any unknown chunk.

An upload reads the gc epoch before it stores its first chunk and commits with it. If a
chunk it stored is being deleted at the same locator, or was deleted in a later epoch,
its copy may be the one gc deleted, and the commit fails with ``ChunkCollected`` (HTTP
503; the client uploads again and the next attempt stores the chunk anew). That is the only
case where gc and an upload meet; committed files never lose a chunk.

Limits: a chunk stored twice under different locators (a crash between a put and its
commit on Telegram, for content the catalog already has) is not found by the scan;
only one copy per ChunkHash is tracked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from davfs.catalog import Catalog
from davfs.catalog.history import Retention
from davfs.chunk import ChunkRef
from davfs.errors import DavfsError
from davfs.periodic import Periodic
from davfs.stores.base import ChunkStore

log = logging.getLogger(__name__)

STALE_MARK = 3600.0
"""A deletion mark this old belongs to a gc that died; the next gc finishes it."""
TOMBSTONE_DAYS = 7
"""Tombstones are kept this long; an upload older than that is not protected by them."""
BATCH = 200


@dataclass
class GcReport:
    """What one gc run did (or, with ``dry_run``, would do)."""

    dry_run: bool = False
    trash_expired: int = 0
    """Items deleted from the trash, ``trash_days`` after they went in."""
    versions_dropped: int = 0
    uploads_abandoned: int = 0
    orphans_adopted: int = 0
    deleted: list[tuple[str, str, int]] = field(default_factory=list)
    """(ChunkHash, locator, size) deleted from the store, or to delete with ``dry_run``."""
    failed: list[str] = field(default_factory=list)
    busy: bool = False
    """Another instance was collecting; this run did nothing."""

    @property
    def bytes_freed(self) -> int:
        return sum(size for _, _, size in self.deleted)

    def lines(self) -> list[str]:
        if self.busy:
            return ["another davfs instance is collecting garbage right now; nothing done"]
        verb = "would delete" if self.dry_run else "deleted"
        lines = [
            f"{verb} {chunk_hash[:16]}… at {locator} ({size} bytes)"
            for chunk_hash, locator, size in self.deleted
        ]
        lines += [f"could not delete: {failure}" for failure in self.failed]
        if self.trash_expired:
            emptied = "would empty" if self.dry_run else "emptied"
            lines.append(f"{emptied} {self.trash_expired} items out of the trash (kept their days)")
        lines.append(
            f"{verb} {len(self.deleted)} chunks ({self.bytes_freed} bytes); "
            f"{self.versions_dropped} old versions and {self.uploads_abandoned} abandoned uploads "
            f"{'past' if self.dry_run else 'dropped after'} the grace period; "
            f"{self.orphans_adopted} unknown chunks found in the store"
        )
        return lines


def collect_garbage(
    catalog: Catalog,
    store: ChunkStore,
    *,
    grace: float,
    retention: Retention | None = None,
    dry_run: bool = False,
    progress: Callable[[int], object] | None = None,
) -> GcReport:
    """One gc run (see the module docstring). Safe to run while the server serves."""
    report = GcReport(dry_run=dry_run)
    with catalog.db.single_instance("gc") as mine:
        if not mine:
            report.busy = True
            return report
        if dry_run:
            return _dry_run(catalog, store, grace, retention, report)
        if retention is not None and retention.trash_days:
            report.trash_expired = catalog.trash.empty(
                deleted_before=time.time() - retention.trash_days * 86400
            )
        report.versions_dropped, report.uploads_abandoned = catalog.gc.drop_retired(
            time.time() - grace, retention
        )
        found = _stored_data_chunks(store)
        report.orphans_adopted = catalog.gc.adopt_orphans(catalog.gc.unknown_chunks(found))
        _collect_strays(catalog, store, found, time.time() - grace, report, progress)
        started = time.time()
        cutoff = started - grace  # after the scan: with no grace, orphans go in this run
        while batch := catalog.gc.mark_for_deletion(cutoff, BATCH, stale=STALE_MARK, retry_before=started):
            done: list[tuple[str, str]] = []
            failed: list[tuple[str, str]] = []
            for chunk_hash, locator, size in batch:
                try:
                    store.delete(locator)
                except DavfsError as exc:  # perhaps deleted, perhaps not: the next run retries
                    report.failed.append(f"{chunk_hash[:16]}… at {locator}: {exc}")
                    failed.append((chunk_hash, locator))
                    continue
                done.append((chunk_hash, locator))
                report.deleted.append((chunk_hash, locator, size))
                if progress is not None:
                    progress(size)
            catalog.gc.forget_deleted(done, failed)
        catalog.gc.prune_tombstones(time.time() - TOMBSTONE_DAYS * 86400)
    return report


def _dry_run(
    catalog: Catalog, store: ChunkStore, grace: float, retention: Retention | None, report: GcReport
) -> GcReport:
    """What a run would delete now, changing nothing. Chunks the store holds that the
    catalog does not know are counted; a run deletes them one grace period after it
    first finds them (at once with no grace)."""
    cutoff = time.time() - grace
    if retention is not None and retention.trash_days:
        expiry = time.time() - retention.trash_days * 86400
        report.trash_expired = catalog.trash.count(deleted_before=expiry)
    report.deleted, report.versions_dropped, report.uploads_abandoned = catalog.gc.collectable(
        cutoff, retention
    )
    orphans = catalog.gc.unknown_chunks(_stored_data_chunks(store))
    report.orphans_adopted = len(orphans)
    if grace <= 0:
        report.deleted += [(c.chunk_hash, c.locator, c.size) for c in orphans]
    return report


def _stored_data_chunks(store: ChunkStore) -> list[ChunkRef]:
    """Every file-content chunk in the store (manifests and backups are not gc's)."""
    return [ChunkRef(locator, meta) for locator, meta in store.iter_chunks() if meta.kind in ("data", "pack")]


def _collect_strays(
    catalog: Catalog,
    store: ChunkStore,
    found: list[ChunkRef],
    cutoff: float,
    report: GcReport,
    progress: Callable[[int], object] | None,
) -> None:
    """Delete second copies of chunks the catalog has elsewhere, once strays for the grace
    period (a Telegram send whose confirmation was lost long ago, a shipment repeated
    after a crash)."""
    sizes = {c.locator: c.size for c in found}
    gone: list[str] = []
    for chunk_hash, locator in catalog.gc.strays(found, cutoff):
        try:
            store.delete(locator)
        except DavfsError as exc:
            report.failed.append(f"stray copy of {chunk_hash[:16]}… at {locator}: {exc}")
            continue
        gone.append(locator)
        report.deleted.append((chunk_hash, locator, sizes.get(locator, 0)))
        if progress is not None:
            progress(sizes.get(locator, 0))
    catalog.gc.forget_strays(gone)


def gc_schedule(
    catalog: Catalog, store: ChunkStore, *, interval: float, grace: float, retention: Retention
) -> Periodic:
    """The server's gc: :func:`collect_garbage` every ``interval`` seconds."""

    def run() -> None:
        log.info("gc: %s", collect_garbage(catalog, store, grace=grace, retention=retention).lines()[-1])

    return Periodic("gc", interval, run)
