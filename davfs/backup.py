"""Catalog backups kept in the chunk store itself, so a Telegram-backed drive keeps its
own index in Telegram and losing the machine loses no file.

A backup is the whole catalog (every table, from one consistent read transaction) as
gzip-compressed JSON lines, cut into chunks of ``kind="backup-part"`` plus one small
index chunk of ``kind="backup"`` that lists the parts with their hashes. The format is
the same for SQLite and PostgreSQL catalogs, and a backup of either restores into
either: a logical dump rather than SQLite's page-level backup API, whose file only
SQLite could read. gc only touches ``data`` chunks, so backups are never collected; the
backup job itself keeps the newest ``keep``.

``restore`` verifies every part against the index before writing a single row.
Manifests cover the changes made after a backup: ``davfs recover`` rebuilds the
newest state from them alone.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from davfs.catalog import Catalog
from davfs.catalog.schema import SCHEMA_VERSION
from davfs.chunk import ChunkHasher, ChunkMeta, ChunkRef, read_verified, verified_blocks
from davfs.errors import CatalogError, DavfsError, IntegrityError
from davfs.periodic import Periodic
from davfs.staging import STAGED, StagingArea
from davfs.stores.base import ChunkStore

log = logging.getLogger(__name__)

FORMAT = "davfs-catalog-backup/1"
INDEX_KIND = "backup"
PART_KIND = "backup-part"


@dataclass(frozen=True)
class Backup:
    """One backup as its index chunk describes it."""

    locator: str
    """Of the index chunk; what ``davfs restore`` takes to name a backup."""
    created: float
    rows: int
    size: int
    parts: list[ChunkRef]
    """Each part, in order, with the record the index holds for it."""

    @property
    def label(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.created))
        return f"{self.locator}  {when}  {self.rows} rows, {self.size} bytes in {len(self.parts)} parts"


def backup_catalog(catalog: Catalog, store: ChunkStore, *, part_size: int) -> Backup:
    """Write a backup of ``catalog`` into ``store``; returns it."""
    created = time.time()
    parts: list[ChunkRef] = []
    rows = 0
    sink = _PartWriter(store, part_size, parts)
    try:
        with gzip.GzipFile(fileobj=sink, mode="wb", mtime=int(created)) as packed:
            header = {
                "format": FORMAT,
                "schema": SCHEMA_VERSION,
                "created": created,
                "last_seq": catalog.oplog.last_seq(),
            }
            packed.write(json.dumps(header).encode() + b"\n")
            for table, row in catalog.dump.rows():
                packed.write(json.dumps([table, _encode(row)], separators=(",", ":")).encode() + b"\n")
                rows += 1
        sink.close()
    except BaseException:
        sink.discard()  # parts without an index would never be listed or pruned
        raise
    listed = [[p.chunk_hash, p.locator, p.size, p.meta.to_dict()] for p in parts]
    index = json.dumps(
        {"format": FORMAT, "created": created, "rows": rows, "parts": listed}, separators=(",", ":")
    ).encode()
    locator = store.put(index, ChunkMeta.of(index, kind=INDEX_KIND))
    return Backup(locator, created, rows, sum(p.size for p in parts), parts)


def list_backups(store: ChunkStore) -> list[Backup]:
    """Every backup in the store, oldest first (reads each small index chunk)."""
    found = []
    for locator, meta in store.iter_chunks():
        if meta.kind != INDEX_KIND:
            continue
        try:
            found.append(_read_index(store, locator, meta))
        except (DavfsError, ValueError, KeyError) as exc:
            log.warning("skipping unreadable backup index %s: %s", locator, exc)
    return sorted(found, key=lambda b: b.created)


def restore_catalog(catalog: Catalog, store: ChunkStore, backup: Backup, *, replace: bool = False) -> int:
    """Load ``backup`` into the empty ``catalog`` (or over it, with ``replace``, in one
    transaction); returns the number of rows."""
    with _verified_parts(store, backup) as stream, gzip.GzipFile(fileobj=stream, mode="rb") as packed:
        header = json.loads(packed.readline())
        if header.get("format") != FORMAT:
            raise CatalogError(f"backup {backup.locator} is not a davfs catalog backup")
        rows = ((table, _decode(row)) for table, row in map(json.loads, packed))
        loaded = catalog.dump.load_rows(rows, schema_version=int(header.get("schema", 0)), replace=replace)
    catalog.oplog.continue_after(int(header.get("last_seq", 0)))
    return loaded


def settle_staged(catalog: Catalog, store: ChunkStore, staging: StagingArea | None) -> int:
    """A backup made while chunks were staged names them by staging locators. Point
    each one shipped since at its place in the store (its forward record, else found by
    one scan of the store); chunks still staged here stay for the shipper. Returns how
    many are nowhere: they were staged on a machine that is gone (``davfs fsck`` names
    the files that used them)."""
    unplaced: dict[str, ChunkRef] = {}
    for chunk in catalog.staging.all_waiting():
        name = chunk.locator.split(":", 1)[1]
        if staging is not None and staging.holds(name):
            continue
        forward = None if staging is None else staging.forward(name)
        if forward is not None and chunk.locator.startswith(STAGED) and store.exists(forward):
            catalog.staging.relocate(chunk.chunk_hash, chunk.locator, ChunkRef(forward, chunk.meta))
        else:
            unplaced[chunk.chunk_hash] = chunk
    if unplaced:
        try:
            for locator, meta in store.iter_chunks():
                staged = unplaced.pop(meta.chunk_hash, None)
                if staged is not None:
                    catalog.staging.relocate(meta.chunk_hash, staged.locator, ChunkRef(locator, meta))
        except DavfsError as exc:  # e.g. a bot, which cannot read a channel's history
            log.warning("could not look through the store for chunks shipped after the backup: %s", exc)
    return len(unplaced)


def prune_backups(store: ChunkStore, keep: int) -> list[Backup]:
    """Delete all but the newest ``keep`` backups; returns the deleted ones."""
    backups = list_backups(store)
    doomed = backups[: max(0, len(backups) - keep)]
    for backup in doomed:
        store.delete(backup.locator)  # the index first: a half-deleted backup is not listed
        for part in backup.parts:
            store.delete(part.locator)
    return doomed


def find_backup(store: ChunkStore, name: str | None) -> Backup:
    backups = list_backups(store)
    if not backups:
        raise CatalogError("the store holds no catalog backup; `davfs backup` makes one")
    if name in (None, "latest"):
        return backups[-1]
    for backup in backups:
        if backup.locator == name:
            return backup
    raise CatalogError(f"no backup {name!r} in the store; `davfs restore --list` lists them")


def backup_schedule(
    catalog: Catalog, store: ChunkStore, *, interval: float, keep: int, part_size: int
) -> Periodic:
    """The server's backups: one every ``interval`` seconds (one instance at a time),
    keeping the newest ``keep``."""

    def run() -> None:
        with catalog.db.single_instance("backup") as mine:
            if mine:
                made = backup_catalog(catalog, store, part_size=part_size)
                prune_backups(store, keep)
                log.info("catalog backup %s", made.label)

    return Periodic("catalog backup", interval, run)


class _PartWriter(io.RawIOBase):
    """A write-only stream that cuts what it is given into spooled parts of
    ``part_size`` bytes and puts each into the store as it fills (never a whole part
    in memory)."""

    def __init__(self, store: ChunkStore, part_size: int, parts: list[ChunkRef]) -> None:
        self._store = store
        self._part_size = part_size
        self._parts = parts
        self._spool: IO[bytes] | None = None
        self._spool_path = ""
        self._hasher = ChunkHasher(kind=PART_KIND)
        self._size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        while view:
            if self._spool is None:
                fd, self._spool_path = tempfile.mkstemp(
                    prefix="backup-", suffix=".spool", dir=self._store.properties.spool_dir
                )
                self._spool = os.fdopen(fd, "wb")
            take = min(self._part_size - self._size, len(view))
            self._spool.write(view[:take])
            self._hasher.update(view[:take])
            self._size += take
            view = view[take:]
            if self._size == self._part_size:
                self._ship()
        return total

    def _ship(self) -> None:
        assert self._spool is not None
        self._spool.close()
        self._spool = None
        meta = self._hasher.meta()
        locator = self._store.put_file(self._spool_path, meta)
        self._parts.append(ChunkRef(locator, meta))
        self._hasher = ChunkHasher(kind=PART_KIND)
        self._size = 0

    def close(self) -> None:
        """Store the last, partly filled part."""
        if not self.closed and self._spool is not None:
            self._ship()
        super().close()

    def discard(self) -> None:
        """Remove the spool and every part stored so far."""
        if self._spool is not None:
            self._spool.close()
            os.unlink(self._spool_path)
            self._spool = None
        for part in self._parts:
            self._store.delete(part.locator)
        self._parts.clear()
        super().close()


@contextmanager
def _verified_parts(store: ChunkStore, backup: Backup) -> Iterator[IO[bytes]]:
    """The parts of a backup read back in order into a temporary file, each checked
    against the index before anything is restored from it."""
    with tempfile.TemporaryFile() as joined:
        for part in backup.parts:
            try:
                for block in verified_blocks(store, part):
                    joined.write(block)
            except IntegrityError:
                raise CatalogError(
                    f"backup {backup.locator}: part {part.locator} is damaged; try an older backup"
                ) from None
        joined.seek(0)
        yield joined


def _read_index(store: ChunkStore, locator: str, meta: ChunkMeta) -> Backup:
    index = json.loads(read_verified(store, ChunkRef(locator, meta)))
    if index.get("format") != FORMAT:
        raise ValueError(f"unknown format {index.get('format')!r}")
    parts = [_part(entry) for entry in index["parts"]]
    return Backup(locator, float(index["created"]), int(index["rows"]), sum(p.size for p in parts), parts)


def _part(entry: list[Any]) -> ChunkRef:
    """A part as the index lists it: (ChunkHash, locator, size[, its record]). The first
    release listed no record. Its parts are format 1, whose ChunkHash is the SHA-256
    of the whole part: the BlockHash of a part read as one block, which is how they
    are checked (one part in memory at a time, during a restore)."""
    chunk_hash, locator, size = str(entry[0]), str(entry[1]), int(entry[2])
    if len(entry) > 3:
        meta = ChunkMeta.from_dict(entry[3])
        if (meta.chunk_hash, meta.size) != (chunk_hash, size):
            raise ValueError(f"part {locator} is listed twice differently")
        return ChunkRef(locator, meta)
    return ChunkRef(locator, ChunkMeta(chunk_hash, size, max(size, 1), bytes.fromhex(chunk_hash), PART_KIND))


def _encode(row: dict[str, Any]) -> dict[str, Any]:
    return {k: {"$b": bytes(v).hex()} if isinstance(v, (bytes, memoryview)) else v for k, v in row.items()}


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    return {k: bytes.fromhex(v["$b"]) if isinstance(v, dict) else v for k, v in row.items()}
