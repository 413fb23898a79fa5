"""The catalog: the only code in davfs that speaks SQL.

Every public method is one transaction, so every change a client can observe is atomic:
a PUT's new version, a MOVE, a recursive DELETE. Versions are never rewritten. A
replaced or deleted file's version is *retired*, not removed: it keeps its chunks
referenced so a download that started on it still finds every block, and a later
``gc`` (after a grace period) drops retired versions and then the chunks nobody
references. Nothing here deletes from a store.

Every change also appends an entry to the ``oplog`` in its own transaction; the
:mod:`davfs.manifest` writer moves those entries into manifests in the store, from which
``davfs recover`` rebuilds the tree if the database is lost (design invariant 6).
Entries name nodes by id, so a MOVE or COPY is logged without computing paths.

Written against SQLAlchemy Core with nothing engine-specific outside ``dialect.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, CursorResult, Select, and_, bindparam, func, insert, or_, select, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError as SqlIntegrityError
from sqlalchemy.exc import SQLAlchemyError

from davfs.catalog import schema
from davfs.catalog.dialect import WRITE, make_engine, schema_lock, single_instance
from davfs.catalog.schema import (
    chunks,
    dead_props,
    extents,
    meta,
    nodes,
    oplog,
    upload_chunks,
    uploads,
    versions,
)
from davfs.errors import (
    AlreadyExists,
    BadPath,
    CatalogError,
    ChunkCollected,
    FolderNotEmpty,
    NotAFolder,
    NotAllowed,
    NotFound,
    PreconditionFailed,
)
from davfs.snapshot import ChunkInfo, Extent, FileSnapshot

_Key = TypeVar("_Key", int, str)
ROOT_ID = 1
ABSENT = -1
"""``expect_version`` for "the file must not exist yet" (version ids are positive)."""
_BATCH = 500


@dataclass(frozen=True, slots=True)
class Node:
    """A folder or file as the provider sees it (one row of the tree plus its version)."""

    id: int
    parent_id: int | None
    name: str
    is_dir: bool
    created: float
    modified: float
    version_id: int | None
    size: int
    etag: str | None


@dataclass(frozen=True, slots=True)
class RecoveredNode:
    """One node of a tree rebuilt from manifests; ``chunks`` is None for folders and
    (ChunkHash, length) pairs for files."""

    id: int
    parent: int | None
    name: str
    is_dir: bool
    created: float
    modified: float
    size: int = 0
    chunks: list[tuple[str, int]] | None = None
    props: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """A chunk an upload has stored, ready to be committed."""

    chunk_hash: str
    locator: str
    size: int
    block_size: int
    block_hashes: bytes


MAX_NAME_BYTES = 255
"""Longest name in UTF-8 bytes: what Linux, macOS and Windows file systems hold, so every
client can keep a local copy of every file."""
_FORBIDDEN_IN_NAMES = re.compile(r"[\x00-\x1f\x7f\\]")
"""Control characters, and backslashes, which Windows reads as a path separator."""


def split_path(path: str) -> list[str]:
    """A path → its name segments; the one gate every path passes (server and CLI).

    Rejects ``.`` and ``..`` (no client may use them as names), control characters and
    backslashes, and names longer than :data:`MAX_NAME_BYTES`."""
    segments = [s for s in path.split("/") if s]
    for segment in segments:
        if segment in (".", "..") or _FORBIDDEN_IN_NAMES.search(segment):
            raise BadPath(repr(path), f"the name {segment!r} is not allowed")
        if len(segment.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise BadPath(repr(path)[:80], f"a name may be at most {MAX_NAME_BYTES} bytes long")
    return segments


def content_etag(chunk_hashes: Iterable[str], size: int) -> str:
    """Strong ETag derived from content: equal bytes give equal tags, across instances."""
    digest = hashlib.sha256(str(size).encode())
    for chunk_hash in chunk_hashes:
        digest.update(chunk_hash.encode())
    return digest.hexdigest()[:32]


_NODE_COLUMNS = (
    nodes.c.id,
    nodes.c.parent_id,
    nodes.c.name,
    nodes.c.is_dir,
    nodes.c.created,
    nodes.c.modified,
    nodes.c.version_id,
    versions.c.size,
    versions.c.etag,
)
_NODE_FROM = nodes.outerjoin(versions, nodes.c.version_id == versions.c.id)
# Built once: path resolution runs these for every request.
_NODE_BY_ID = select(*_NODE_COLUMNS).select_from(_NODE_FROM).where(nodes.c.id == bindparam("node_id"))
_CHILD_BY_NAME = (
    select(*_NODE_COLUMNS)
    .select_from(_NODE_FROM)
    .where(nodes.c.parent_id == bindparam("parent_id"), nodes.c.name == bindparam("name"))
)
# Built once too: every download takes a snapshot with these two.
_VERSION_HEAD = (
    select(versions.c.size, versions.c.etag, nodes.c.modified)
    .select_from(versions.outerjoin(nodes, nodes.c.id == versions.c.node_id))
    .where(versions.c.id == bindparam("version_id"))
)
_VERSION_EXTENTS = (
    select(
        extents.c.offset,
        extents.c.length,
        chunks.c.chunk_hash,
        chunks.c.locator,
        chunks.c.size,
        chunks.c.block_size,
        chunks.c.block_hashes,
        chunks.c.damaged,
    )
    .select_from(extents.join(chunks, chunks.c.chunk_hash == extents.c.chunk_hash))
    .where(extents.c.version_id == bindparam("version_id"))
    .order_by(extents.c.seq)
)
_IS_DIR = select(nodes.c.is_dir).where(nodes.c.id == bindparam("node_id"))


def _node(row: Any) -> Node:
    """A Node from a row of ``_NODE_COLUMNS`` (by position: listings build thousands)."""
    node_id, parent_id, name, is_dir, created, modified, version_id, size, etag = row
    return Node(node_id, parent_id, name, bool(is_dir), created, modified, version_id, size or 0, etag)


class Catalog:
    """Paths → nodes → versions → chunks, in one database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        try:
            self._migrate()
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise CatalogError(
                f"cannot open the catalog {_safe_url(url)}: {getattr(exc, 'orig', None) or exc}"
            ) from None

    # --- connections -------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with _database_errors(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with _database_errors(), self.engine.connect() as conn:
            conn.execution_options(**{WRITE: True})
            with conn.begin():
                yield conn

    def close(self) -> None:
        self.engine.dispose()

    def _migrate(self) -> None:
        with schema_lock(self.engine):
            schema.metadata.create_all(self.engine)
            self._bring_schema_forward()

    def _bring_schema_forward(self) -> None:
        with self._write() as conn:
            current = conn.scalar(select(meta.c.value).where(meta.c.key == "schema_version"))
            if current is None:
                conn.execute(insert(meta).values(key="schema_version", value=str(schema.SCHEMA_VERSION)))
                now = time.time()
                conn.execute(
                    insert(nodes).values(
                        id=ROOT_ID,
                        parent_id=None,
                        name="",
                        is_dir=True,
                        version_id=None,
                        created=now,
                        modified=now,
                    )
                )
                _continue_ids_after(conn)
                return
            version = int(current)
            if version > schema.SCHEMA_VERSION:
                raise CatalogError(
                    f"catalog schema {version} is newer than this davfs "
                    f"({schema.SCHEMA_VERSION}); upgrade davfs"
                )
            while version < schema.SCHEMA_VERSION:
                schema.MIGRATIONS[version](conn)
                version += 1
            conn.execute(update(meta).where(meta.c.key == "schema_version").values(value=str(version)))

    def schema_version(self) -> int:
        with self._read() as conn:
            return int(conn.scalar(select(meta.c.value).where(meta.c.key == "schema_version")) or 0)

    # --- lookups -----------------------------------------------------------------

    def resolve(self, segments: Sequence[str]) -> Node | None:
        """The node at a path given as its segments (``[]`` is the root)."""
        with self._read() as conn:
            return self._resolve(conn, segments)

    def _resolve(self, conn: Connection, segments: Sequence[str]) -> Node | None:
        if not segments:
            return _node(conn.execute(_NODE_BY_ID, {"node_id": ROOT_ID}).first())
        parent_id, node = ROOT_ID, None
        for name in segments:
            if node is not None and not node.is_dir:
                return None
            row = conn.execute(_CHILD_BY_NAME, {"parent_id": parent_id, "name": name}).first()
            if row is None:
                return None
            node = _node(row)
            parent_id = node.id
        return node

    def children(self, folder_id: int) -> list[Node]:
        with self._read() as conn:
            rows = conn.execute(
                select(*_NODE_COLUMNS)
                .select_from(_NODE_FROM)
                .where(nodes.c.parent_id == folder_id)
                .order_by(nodes.c.name)
            )
            return [_node(r) for r in rows]

    def snapshot(self, version_id: int, path: str) -> FileSnapshot:
        """Everything a download of one version needs, read in one statement."""
        with self._read() as conn:
            head = conn.execute(_VERSION_HEAD, {"version_id": version_id}).first()
            if head is None:
                raise NotFound(f"version {version_id} of {path}")
            rows = conn.execute(_VERSION_EXTENTS, {"version_id": version_id}).all()
        parts = tuple(
            Extent(
                ChunkInfo(r.chunk_hash, r.locator, r.size, r.block_size, bytes(r.block_hashes)),
                r.offset,
                r.length,
            )
            for r in rows
        )
        if sum(e.length for e in parts) != head.size:
            raise CatalogError(f"version {version_id} of {path} has missing extents")
        damaged = next((f"chunk {r.chunk_hash[:16]} {r.damaged}" for r in rows if r.damaged), None)
        return FileSnapshot(path, version_id, head.size, head.modified or 0.0, head.etag, parts, damaged)

    def locator_of(self, chunk_hash: str) -> str | None:
        """Where the store keeps a chunk the catalog knows, if it does (and gc is not
        deleting it: an upload must not count on that copy)."""
        with self._read() as conn:
            return conn.scalar(
                select(chunks.c.locator).where(
                    chunks.c.chunk_hash == chunk_hash,
                    chunks.c.deleting.is_(None),
                    chunks.c.deleted_epoch.is_(None),
                    chunks.c.damaged.is_(None),
                )
            )

    # --- garbage collection (davfs.gc drives these) ------------------------------

    def mark_damaged(self, chunk_hash: str, reason: str | None) -> None:
        """Record that a chunk cannot be read back (``fsck --repair``): downloads of the
        files using it fail at once with ``reason`` instead of midway. ``None`` clears
        the mark (the chunk read back intact after all)."""
        with self._write() as conn:
            conn.execute(update(chunks).where(chunks.c.chunk_hash == chunk_hash).values(damaged=reason))

    def relocate_chunk(self, chunk_hash: str, locator: str) -> None:
        """Point a chunk at another, intact copy in the store; clears its damage mark."""
        with self._write() as conn:
            conn.execute(
                update(chunks).where(chunks.c.chunk_hash == chunk_hash).values(locator=locator, damaged=None)
            )

    def damaged_chunks(self) -> dict[str, str]:
        """ChunkHash → reason, for every chunk marked damaged."""
        with self._read() as conn:
            rows = conn.execute(
                select(chunks.c.chunk_hash, chunks.c.damaged).where(chunks.c.damaged.is_not(None))
            )
            return {r.chunk_hash: r.damaged for r in rows}

    def gc_epoch(self) -> int:
        """How many gc deletion batches have completed; uploads read it before storing."""
        with self._read() as conn:
            value = conn.scalar(select(meta.c.value).where(meta.c.key == "gc_epoch"))
        return int(value or 0)

    def drop_retired(self, cutoff: float) -> tuple[int, int]:
        """Forget versions retired before ``cutoff`` and uploads started before it (their
        process died or gave up), so their chunks become unreferenced. Returns how many
        of each."""
        with self._write() as conn:
            now = time.time()
            retired = list(conn.scalars(select(versions.c.id).where(versions.c.retired < cutoff)))
            for batch in _batches(retired):
                counts = Counter(
                    conn.scalars(select(extents.c.chunk_hash).where(extents.c.version_id.in_(batch)))
                )
                for chunk_hash, count in counts.items():
                    conn.execute(
                        update(chunks)
                        .where(chunks.c.chunk_hash == chunk_hash)
                        .values(refcount=chunks.c.refcount - count)
                    )
                for hashes in _batches(list(counts)):
                    conn.execute(
                        update(chunks)
                        .where(chunks.c.chunk_hash.in_(hashes), chunks.c.refcount <= 0)
                        .values(
                            refcount=0, unreferenced_since=func.coalesce(chunks.c.unreferenced_since, now)
                        )
                    )
                conn.execute(sql_delete(extents).where(extents.c.version_id.in_(batch)))
                conn.execute(sql_delete(versions).where(versions.c.id.in_(batch)))
            # An abandoned upload's chunks become unknown to the catalog; the store scan
            # that follows finds them and adopts them with their metadata.
            abandoned = list(conn.scalars(select(uploads.c.id).where(uploads.c.started < cutoff)))
            for batch in _batches(abandoned):
                conn.execute(sql_delete(upload_chunks).where(upload_chunks.c.upload_id.in_(batch)))
                conn.execute(sql_delete(uploads).where(uploads.c.id.in_(batch)))
        return len(retired), len(abandoned)

    def unknown_chunks(self, found: Sequence[StoredChunk]) -> list[StoredChunk]:
        """Of chunks a store holds, those the catalog has no row or journal entry for
        (an upload that died between its put and its commit), or only as deleted (an
        upload stored the bytes again after gc deleted them, and did not commit)."""
        known: set[str] = set()
        with self._read() as conn:
            for batch in _batches([c.chunk_hash for c in found]):
                known.update(
                    conn.scalars(
                        select(chunks.c.chunk_hash).where(chunks.c.chunk_hash.in_(batch), ~_TOMBSTONE)
                    )
                )
                known.update(
                    conn.scalars(
                        select(upload_chunks.c.chunk_hash).where(upload_chunks.c.chunk_hash.in_(batch))
                    )
                )
        return [c for c in found if c.chunk_hash not in known]

    def adopt_orphans(self, orphans: Sequence[StoredChunk]) -> int:
        """Record store chunks nobody knew as unreferenced from now (an upload that put
        one and has yet to commit it then finds the row and references it)."""
        adopted = 0
        with self._write() as conn:
            now = time.time()
            for chunk in orphans:
                row = _chunk_row(chunk, refcount=0, now=now)
                # A deleted chunk stored again keeps its deletion epoch: an upload from
                # before that deletion still may not commit it.
                reappeared = conn.execute(
                    update(chunks)
                    .where(chunks.c.chunk_hash == chunk.chunk_hash, _TOMBSTONE)
                    .values(locator=row["locator"], unreferenced_since=now)
                ).rowcount
                exists = reappeared or conn.scalar(
                    select(func.count()).select_from(chunks).where(chunks.c.chunk_hash == chunk.chunk_hash)
                )
                if not exists:
                    conn.execute(insert(chunks).values(**row))
                adopted += bool(reappeared or not exists)
        return adopted

    def collectable(self, cutoff: float) -> tuple[list[tuple[str, str, int]], int, int]:
        """What gc would delete now, changing nothing: (ChunkHash, locator, size) of
        chunks unreferenced since before ``cutoff`` or referenced only by versions
        retired before it, that no running upload has journaled; and how many retired
        versions and abandoned uploads it would drop."""
        with self._read() as conn:
            rows: list[Any] = list(conn.execute(_collectable(cutoff)).all())
            retired = list(conn.scalars(select(versions.c.id).where(versions.c.retired < cutoff)))
            abandoned = conn.scalar(
                select(func.count()).select_from(uploads).where(uploads.c.started < cutoff)
            )
            freed: Counter[str] = Counter()
            for batch in _batches(retired):
                freed.update(
                    conn.scalars(select(extents.c.chunk_hash).where(extents.c.version_id.in_(batch)))
                )
            journaled = set(conn.scalars(select(upload_chunks.c.chunk_hash)))
            for hashes in _batches(list(freed)):
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
    ) -> list[tuple[str, str, int]]:
        """Claim up to ``limit`` collectable chunks for deletion from the store: those
        unreferenced since before ``cutoff``, those whose deletion failed before
        ``retry_before``, and the marks of a gc that died ``stale`` seconds ago. From
        here until :meth:`forget_deleted`, an upload that stored the same bytes at the
        same locator cannot commit them (:class:`ChunkCollected`)."""
        with self._write() as conn:
            now = time.time()
            query = _collectable(cutoff, stale_before=now - stale, retry_before=retry_before)
            rows = conn.execute(query.limit(limit)).all()
            for batch in _batches([r.chunk_hash for r in rows]):
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
        with self._write() as conn:
            epoch = int(conn.scalar(select(meta.c.value).where(meta.c.key == "gc_epoch")) or 0) + 1
            if epoch == 1:
                conn.execute(insert(meta).values(key="gc_epoch", value="1"))
            else:
                conn.execute(update(meta).where(meta.c.key == "gc_epoch").values(value=str(epoch)))
            now = time.time()
            for pairs, values in (
                (
                    deleted,
                    {"deleted_epoch": epoch, "deleted_at": now, "deleting": None, "unreferenced_since": None},
                ),
                (failed, {"deleted_epoch": epoch, "deleted_at": now}),
            ):
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
        with self._write() as conn:
            return int(
                conn.execute(sql_delete(chunks).where(_TOMBSTONE, chunks.c.deleted_at < before)).rowcount
            )

    def dead_props(self, node_id: int) -> dict[str, str]:
        with self._read() as conn:
            rows = conn.execute(
                select(dead_props.c.name, dead_props.c.value).where(dead_props.c.node_id == node_id)
            )
            return {r.name: r.value for r in rows}

    def children_dead_props(self, folder_id: int) -> dict[int, dict[str, str]]:
        """Dead properties of every member of a folder, in one query (PROPFIND Depth 1)."""
        with self._read() as conn:
            rows = conn.execute(
                select(dead_props.c.node_id, dead_props.c.name, dead_props.c.value)
                .select_from(dead_props.join(nodes, nodes.c.id == dead_props.c.node_id))
                .where(nodes.c.parent_id == folder_id)
            )
            result: dict[int, dict[str, str]] = {}
            for r in rows:
                result.setdefault(r.node_id, {})[r.name] = r.value
            return result

    def used_bytes(self) -> int:
        """Logical size of every current file."""
        with self._read() as conn:
            return int(
                conn.scalar(
                    select(func.coalesce(func.sum(versions.c.size), 0)).select_from(
                        nodes.join(versions, nodes.c.version_id == versions.c.id)
                    )
                )
                or 0
            )

    def walk(self, folder_id: int = ROOT_ID, prefix: str = "") -> Iterator[tuple[str, Node]]:
        """Every node below a folder as (path, node), parents before children."""
        for child in self.children(folder_id):
            path = f"{prefix}/{child.name}"
            yield path, child
            if child.is_dir:
                yield from self.walk(child.id, path)

    # --- checks ------------------------------------------------------------------

    def integrity_problems(self) -> list[str]:
        """Every way the catalog disagrees with itself ([] when consistent): reference
        counts that do not match the extents using a chunk (a chunk with no extents and
        a count of one is a manifest, kept on purpose), extents naming unknown chunks,
        nodes under a missing parent or without their own live version."""
        problems: list[str] = []
        with self._read() as conn:
            counts = {r[0]: int(r[1]) for r in conn.execute(select(chunks.c.chunk_hash, chunks.c.refcount))}
            uses = Counter(conn.scalars(select(extents.c.chunk_hash)))
            tree = {
                r[0]: (r[1], bool(r[2]), r[3])
                for r in conn.execute(
                    select(nodes.c.id, nodes.c.parent_id, nodes.c.is_dir, nodes.c.version_id)
                )
            }
            owners = {
                r[0]: (r[1], r[2])
                for r in conn.execute(select(versions.c.id, versions.c.node_id, versions.c.retired))
            }
        for chunk_hash, refcount in counts.items():
            used = uses.get(chunk_hash, 0)
            if refcount != used and not (used == 0 and refcount == 1):
                problems.append(
                    f"chunk {chunk_hash[:16]}: reference count {refcount}, used by {used} extents"
                )
        for chunk_hash in uses.keys() - counts.keys():
            problems.append(f"chunk {chunk_hash[:16]} is used by a version but unknown to the catalog")
        for node_id, (parent_id, is_dir, version_id) in tree.items():
            if parent_id is not None and (parent_id not in tree or not tree[parent_id][1]):
                problems.append(f"node {node_id}: its parent {parent_id} is not a folder")
            if version_id is not None and owners.get(version_id) != (node_id, None):
                problems.append(f"node {node_id}: version {version_id} is not its own live version")
            if version_id is None and not is_dir:
                problems.append(f"file node {node_id} has no version")
        return problems

    def referenced_chunks(self) -> Iterator[tuple[StoredChunk, list[str]]]:
        """Every chunk something still references, with the paths of the current files
        using it (none for chunks only replaced versions or a manifest hold)."""
        paths = {node.version_id: path for path, node in self.walk() if node.version_id is not None}
        users: dict[str, list[str]] = {}
        with self._read() as conn:
            for version_id, chunk_hash in conn.execute(select(extents.c.version_id, extents.c.chunk_hash)):
                if version_id in paths:
                    users.setdefault(chunk_hash, []).append(paths[version_id])
            rows = conn.execute(
                select(
                    chunks.c.chunk_hash,
                    chunks.c.locator,
                    chunks.c.size,
                    chunks.c.block_size,
                    chunks.c.block_hashes,
                ).where(chunks.c.refcount > 0)
            ).all()
        for r in rows:
            yield (
                StoredChunk(r.chunk_hash, r.locator, r.size, r.block_size, bytes(r.block_hashes)),
                sorted(set(users.get(r.chunk_hash, ()))),
            )

    # --- changes -----------------------------------------------------------------

    def mkdir(self, parent_id: int, name: str) -> Node:
        with self._write() as conn:
            self._require_folder(conn, parent_id)
            now = time.time()
            try:
                node_id = _insert_node(
                    conn, parent_id, name, is_dir=True, version_id=None, created=now, modified=now
                )
            except SqlIntegrityError:
                raise AlreadyExists(name) from None
            _log_node(conn, node_id, parent_id, name, True, now, now)
        return Node(node_id, parent_id, name, True, now, now, None, 0, None)

    def create_empty_file(self, parent_id: int, name: str) -> Node:
        """A new 0-byte file (LOCK on an unmapped URL); never replaces an existing one
        (a PUT may have committed since the caller looked). PUT uses :meth:`commit_file`."""
        node, created = self.commit_file(
            parent_id, name, upload_id=None, stored=(), size=0, mtime=None, expect_version=ABSENT
        )
        return node

    def begin_upload(self, path: str) -> int:
        with self._write() as conn:
            return int(_new_id(conn.execute(insert(uploads).values(path=path, started=time.time()))))

    def journal_chunk(self, upload_id: int, chunk_hash: str, locator: str) -> None:
        """Record a chunk stored for an upload that has not committed yet."""
        with self._write() as conn:
            exists = conn.scalar(
                select(func.count())
                .select_from(upload_chunks)
                .where(upload_chunks.c.upload_id == upload_id, upload_chunks.c.chunk_hash == chunk_hash)
            )
            if not exists:
                conn.execute(
                    insert(upload_chunks).values(upload_id=upload_id, chunk_hash=chunk_hash, locator=locator)
                )

    def abort_upload(self, upload_id: int, stored: Sequence[StoredChunk]) -> None:
        """Forget an upload. Its chunks stay in the store, recorded as unreferenced, so
        ``gc`` removes them after the grace period (another upload may be sharing them)."""
        with self._write() as conn:
            now = time.time()
            for chunk in stored:
                if conn.scalar(
                    select(func.count()).select_from(chunks).where(chunks.c.chunk_hash == chunk.chunk_hash)
                ):
                    continue
                conn.execute(insert(chunks).values(**_chunk_row(chunk, refcount=0, now=now)))
            conn.execute(sql_delete(upload_chunks).where(upload_chunks.c.upload_id == upload_id))
            conn.execute(sql_delete(uploads).where(uploads.c.id == upload_id))

    def commit_file(
        self,
        parent_id: int,
        name: str,
        *,
        upload_id: int | None,
        stored: Sequence[StoredChunk],
        size: int,
        mtime: float | None,
        expect_version: int | None = None,
        gc_epoch: int | None = None,
    ) -> tuple[Node, bool]:
        """Make ``stored`` the content of parent/name in one transaction.

        Creates the file if needed and retires the version it replaces. Returns the node
        and whether it was created. ``expect_version`` makes the commit conditional:
        the file must still have that version, or not exist (:data:`ABSENT`); otherwise
        :class:`PreconditionFailed` (a conditional PUT must not overwrite a change made
        while its body was arriving). ``gc_epoch`` is :meth:`gc_epoch` read before the
        first chunk was stored: a chunk gc deleted since then may have taken the
        upload's copy with it (:class:`ChunkCollected`, the upload is retried)."""
        if sum(c.size for c in stored) != size:
            raise CatalogError(
                f"commit of {name}: chunks hold {sum(c.size for c in stored)} bytes, not {size}"
            )
        with self._write() as conn:
            self._require_folder(conn, parent_id)
            now = time.time()
            self._reference_chunks(conn, stored, now, gc_epoch=gc_epoch)
            existing = conn.execute(
                select(nodes.c.id, nodes.c.is_dir, nodes.c.version_id, nodes.c.created).where(
                    nodes.c.parent_id == parent_id, nodes.c.name == name
                )
            ).first()
            if existing is not None and existing.is_dir:
                raise AlreadyExists(name)
            current = ABSENT if existing is None else existing.version_id
            if expect_version is not None and current != expect_version:
                raise PreconditionFailed(name)
            etag = content_etag((c.chunk_hash for c in stored), size)
            node_id = existing.id if existing is not None else None
            version_id = self._insert_version(
                conn, node_id or 0, size, etag, [(c.chunk_hash, c.size) for c in stored], now
            )
            modified = now if mtime is None else mtime
            if existing is None:
                node_id = _insert_node(
                    conn, parent_id, name, is_dir=False, version_id=version_id, created=now, modified=modified
                )
                conn.execute(update(versions).where(versions.c.id == version_id).values(node_id=node_id))
                created = now
            else:
                conn.execute(
                    update(nodes)
                    .where(nodes.c.id == node_id)
                    .values(version_id=version_id, modified=modified)
                )
                self._retire(conn, existing.version_id, now)
                created = existing.created
            version_entry = _entry(
                "version",
                node=node_id,
                size=size,
                modified=modified,
                chunks=[[c.chunk_hash, c.size] for c in stored],
            )
            if existing is None:  # one statement for both entries
                node_entry = _entry(
                    "node", id=node_id, parent=parent_id, name=name, dir=False, created=now, modified=modified
                )
                conn.execute(insert(oplog), [{"entry": node_entry}, {"entry": version_entry}])
            else:
                conn.execute(insert(oplog).values(entry=version_entry))
            if upload_id is not None:
                conn.execute(sql_delete(upload_chunks).where(upload_chunks.c.upload_id == upload_id))
                conn.execute(sql_delete(uploads).where(uploads.c.id == upload_id))
        assert node_id is not None
        return Node(
            node_id, parent_id, name, False, created, modified, version_id, size, etag
        ), existing is None

    def set_modified(self, node_id: int, mtime: float) -> None:
        with self._write() as conn:
            conn.execute(update(nodes).where(nodes.c.id == node_id).values(modified=mtime))
            _log(conn, "mtime", node=node_id, modified=mtime)

    def set_dead_prop(self, node_id: int, name: str, value: str | None) -> None:
        with self._write() as conn:
            conn.execute(
                sql_delete(dead_props).where(dead_props.c.node_id == node_id, dead_props.c.name == name)
            )
            if value is not None:
                conn.execute(insert(dead_props).values(node_id=node_id, name=name, value=value))
            _log(conn, "prop", node=node_id, name=name, value=value)

    def delete(self, node: Node, *, recursive: bool) -> None:
        """Delete a node (and, if ``recursive``, everything below it) in one transaction.

        The node must still be where the caller found it: a concurrent MOVE must not
        turn this into the deletion of whatever now has that id somewhere else."""
        if node.id == ROOT_ID:
            raise NotAllowed("deleting the root folder")
        with self._write() as conn:
            still_there = conn.scalar(
                select(func.count())
                .select_from(nodes)
                .where(nodes.c.id == node.id, nodes.c.parent_id == node.parent_id, nodes.c.name == node.name)
            )
            if not still_there:
                raise NotFound(node.name)
            _delete_tree(conn, node.id, node.name, recursive=recursive)

    def move(self, node_id: int, new_parent_id: int, new_name: str) -> None:
        """Rename/move a node, replacing whatever is at the destination in the same
        transaction (wsgidav has checked ``Overwrite``; a file created there since it
        deleted the old destination must not turn the MOVE into a 405)."""
        with self._write() as conn:
            self._require_folder(conn, new_parent_id)
            ancestor: int | None = new_parent_id
            while ancestor is not None:
                if ancestor == node_id:
                    raise NotAllowed("moving a folder below itself")
                ancestor = conn.scalar(select(nodes.c.parent_id).where(nodes.c.id == ancestor))
            occupant = conn.scalar(
                select(nodes.c.id).where(nodes.c.parent_id == new_parent_id, nodes.c.name == new_name)
            )
            if occupant is not None and occupant != node_id:
                above: int | None = node_id
                while above is not None:
                    if above == occupant:
                        raise NotAllowed("moving a node onto a folder that contains it")
                    above = conn.scalar(select(nodes.c.parent_id).where(nodes.c.id == above))
                _delete_tree(conn, occupant, new_name, recursive=True)
            try:
                moved = conn.execute(
                    update(nodes).where(nodes.c.id == node_id).values(parent_id=new_parent_id, name=new_name)
                ).rowcount
            except SqlIntegrityError:
                raise AlreadyExists(new_name) from None
            if moved != 1:
                raise NotFound(f"node {node_id}")  # gone meanwhile: the whole move is undone
            _log(conn, "move", node=node_id, parent=new_parent_id, name=new_name)

    def copy_node(self, node_id: int, dest_parent_id: int, dest_name: str) -> Node:
        """Copy one node (not its members): a file shares its chunks with the copy, a
        folder is created empty. Dead properties are copied; an existing destination
        file is replaced."""
        with self._write() as conn:
            self._require_folder(conn, dest_parent_id)
            src = conn.execute(_NODE_BY_ID, {"node_id": node_id}).first()
            if src is None:
                raise NotFound(f"node {node_id}")
            source = _node(src)
            now = time.time()
            dest = conn.execute(
                select(nodes.c.id, nodes.c.is_dir).where(
                    nodes.c.parent_id == dest_parent_id, nodes.c.name == dest_name
                )
            ).first()
            if dest is not None and bool(dest.is_dir) != source.is_dir:
                raise AlreadyExists(dest_name)
            if dest is None:
                dest_id = _insert_node(
                    conn,
                    dest_parent_id,
                    dest_name,
                    is_dir=source.is_dir,
                    version_id=None,
                    created=now,
                    modified=source.modified,
                )
                _log_node(conn, dest_id, dest_parent_id, dest_name, source.is_dir, now, source.modified)
            else:
                dest_id = dest.id
            version_id = None
            if not source.is_dir and source.version_id is not None:
                parts = conn.execute(
                    select(extents.c.chunk_hash, extents.c.length)
                    .where(extents.c.version_id == source.version_id)
                    .order_by(extents.c.seq)
                ).all()
                self._add_references(conn, Counter(p.chunk_hash for p in parts))
                version_id = self._insert_version(
                    conn,
                    dest_id,
                    source.size,
                    source.etag or "",
                    [(p.chunk_hash, p.length) for p in parts],
                    now,
                )
                if dest is not None:
                    old = conn.scalar(select(nodes.c.version_id).where(nodes.c.id == dest_id))
                    self._retire(conn, old, now)
                conn.execute(
                    update(nodes)
                    .where(nodes.c.id == dest_id)
                    .values(version_id=version_id, modified=source.modified)
                )
                _log(
                    conn,
                    "version",
                    node=dest_id,
                    size=source.size,
                    modified=source.modified,
                    chunks=[[p.chunk_hash, p.length] for p in parts],
                )
            conn.execute(sql_delete(dead_props).where(dead_props.c.node_id == dest_id))
            props = conn.execute(
                select(dead_props.c.name, dead_props.c.value).where(dead_props.c.node_id == node_id)
            ).all()
            if props:
                conn.execute(
                    insert(dead_props),
                    [{"node_id": dest_id, "name": p.name, "value": p.value} for p in props],
                )
            _log(conn, "props", node=dest_id, props={p.name: p.value for p in props})
        return Node(
            dest_id,
            dest_parent_id,
            dest_name,
            source.is_dir,
            now,
            source.modified,
            version_id,
            source.size,
            source.etag,
        )

    # --- manifests and recovery ---------------------------------------------------

    @contextmanager
    def single_instance(self, job: str) -> Iterator[bool]:
        """Whether this instance is the one to run ``job`` now (see the dialect)."""
        with _database_errors(), single_instance(self.engine, job) as acquired:
            yield acquired

    def pending_log(self, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """The oldest oplog entries not yet in a manifest, as (seq, entry)."""
        with self._read() as conn:
            rows = conn.execute(select(oplog.c.seq, oplog.c.entry).order_by(oplog.c.seq).limit(limit))
            return [(int(r.seq), json.loads(r.entry)) for r in rows]

    def log_stored(self, last_seq: int, manifest: StoredChunk) -> None:
        """A manifest holding every entry up to ``last_seq`` is in the store: drop those
        entries and keep the manifest's chunk referenced (gc must never take it)."""
        with self._write() as conn:
            self._reference_chunks(conn, [manifest], time.time())
            conn.execute(sql_delete(oplog).where(oplog.c.seq <= last_seq))

    def is_empty(self) -> bool:
        """Whether the catalog holds nothing but the root folder."""
        with self._read() as conn:
            return not conn.scalar(select(func.count()).select_from(nodes).where(nodes.c.id != ROOT_ID))

    def load_tree(
        self, tree: Iterable[RecoveredNode], stored: Mapping[str, StoredChunk], *, last_seq: int = 0
    ) -> None:
        """Write a recovered tree (parents before children) into this empty catalog in one
        transaction, keeping node ids, and continue the oplog after ``last_seq``, so the
        manifests written from now on extend the recovered history instead of reusing
        its sequence numbers (a second recovery replays both)."""
        with self._write() as conn:
            now = time.time()
            for item in tree:
                version_id = None
                if item.chunks is not None:
                    self._reference_chunks(conn, [stored[h] for h, _ in item.chunks], now)
                    etag = content_etag((h for h, _ in item.chunks), item.size)
                    version_id = self._insert_version(conn, item.id, item.size, etag, item.chunks, now)
                if item.id == ROOT_ID:
                    conn.execute(update(nodes).where(nodes.c.id == ROOT_ID).values(modified=item.modified))
                else:
                    assert item.parent is not None  # only the root has no parent
                    _insert_node(
                        conn,
                        item.parent,
                        item.name,
                        is_dir=item.is_dir,
                        version_id=version_id,
                        created=item.created,
                        modified=item.modified,
                        node_id=item.id,
                    )
                if item.props:
                    conn.execute(
                        insert(dead_props),
                        [{"node_id": item.id, "name": k, "value": v} for k, v in item.props.items()],
                    )
            _continue_ids_after(conn)
            _continue_sequence(conn, "oplog", "seq", last_seq)

    # --- backup and restore (davfs.backup drives these) --------------------------

    def dump_rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every row of every table as (table, {column: value}), all from one consistent
        snapshot of the database (one read transaction, repeatable on PostgreSQL),
        streamed so a large catalog never sits in memory."""
        with _database_errors(), self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                for table in schema.metadata.sorted_tables:
                    result = conn.execution_options(yield_per=1000).execute(select(table))
                    for row in result:
                        yield table.name, dict(row._mapping)

    def load_rows(self, rows: Iterable[tuple[str, dict[str, Any]]], *, replace: bool = False) -> int:
        """Fill this empty catalog (or, with ``replace``, this one instead of what it
        holds) with dumped rows in one transaction: parents before children, whatever
        order the dump has, and every id sequence continued after the loaded rows.
        Returns the number of rows."""
        if not replace and not self.is_empty():
            raise CatalogError("the catalog is not empty; restore only into an empty catalog")
        tables = {table.name: table for table in schema.metadata.sorted_tables}
        loaded = 0
        with self._write() as conn:
            for table in reversed(schema.metadata.sorted_tables):
                conn.execute(sql_delete(table))
            tree: list[dict[str, Any]] = []
            pending: dict[str, list[dict[str, Any]]] = {}
            for name, row in rows:
                if name not in tables:
                    raise CatalogError(f"the backup holds an unknown table {name!r}")
                if name == "nodes":
                    tree.append(row)
                    continue
                batch = pending.setdefault(name, [])
                batch.append(row)
                if len(batch) >= _BATCH:
                    conn.execute(insert(tables[name]), batch)
                    loaded += len(batch)
                    batch.clear()
            for name, batch in pending.items():
                if batch:
                    conn.execute(insert(tables[name]), batch)
                    loaded += len(batch)
            ordered = _parents_first(tree)
            for i in range(0, len(ordered), _BATCH):
                conn.execute(insert(nodes), ordered[i : i + _BATCH])
            loaded += len(ordered)
            _continue_ids_after(conn)
            for table, column in (("versions", "id"), ("uploads", "id"), ("oplog", "seq")):
                largest = conn.scalar(select(func.max(tables[table].c[column])))
                _continue_sequence(conn, table, column, int(largest or 0))
        return loaded

    def last_seq(self) -> int:
        """The number of the newest change this catalog has logged (its entries may
        since have moved into manifests), 0 if none."""
        with self._read() as conn:
            newest = int(conn.scalar(select(func.max(oplog.c.seq))) or 0)
            if conn.dialect.name == "postgresql":
                sequence = conn.scalar(select(func.pg_get_serial_sequence("oplog", "seq")))
                counter = conn.exec_driver_sql(
                    f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {sequence}"
                )
                return max(newest, int(counter.scalar() or 0))
            if conn.dialect.name == "sqlite":
                counter = conn.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = 'oplog'")
                return max(newest, int(counter.scalar() or 0))
            return newest

    def continue_log_after(self, seq: int) -> None:
        """Number the next change after ``seq``: after a restore, the store may hold
        manifests newer than the backup, whose numbers must not be reused."""
        with self._write() as conn:
            _continue_sequence(conn, "oplog", "seq", seq)

    # --- helpers -----------------------------------------------------------------

    def _require_folder(self, conn: Connection, folder_id: int) -> None:
        is_dir = conn.scalar(_IS_DIR, {"node_id": folder_id})
        if is_dir is None:
            raise NotFound(f"folder {folder_id}")
        if not is_dir:
            raise NotAFolder(f"node {folder_id}")

    def _retire(self, conn: Connection, version_id: int | None, now: float) -> None:
        if version_id is not None:
            conn.execute(update(versions).where(versions.c.id == version_id).values(retired=now))

    def _reference_chunks(
        self, conn: Connection, stored: Sequence[StoredChunk], now: float, *, gc_epoch: int | None = None
    ) -> None:
        """Count a new version's references; chunks the catalog has not seen get a row.

        A known chunk takes the locator just stored: in a store that is not
        content-addressed (Telegram) an upload stores a chunk again when its old copy
        is gone, and the old locator must not outlive that. A chunk gc is deleting, or
        deleted after ``gc_epoch``, at the locator just stored may be gone from the store
        although the upload put it there: :class:`ChunkCollected`."""
        first = {c.chunk_hash: c for c in stored}
        counts = Counter(c.chunk_hash for c in stored)
        collected = conn.execute(
            select(chunks.c.chunk_hash, chunks.c.locator, chunks.c.deleting, chunks.c.deleted_epoch).where(
                chunks.c.chunk_hash.in_(list(first)),
                or_(chunks.c.deleting.is_not(None), chunks.c.deleted_epoch.is_not(None)),
            )
        ).all()
        for row in collected:
            chunk = first[row.chunk_hash]
            if row.deleted_epoch is not None and (gc_epoch is None or row.deleted_epoch > gc_epoch):
                raise ChunkCollected(chunk.chunk_hash[:16])  # deleted after this upload began
            if row.deleted_epoch is None and row.locator == chunk.locator:
                raise ChunkCollected(chunk.chunk_hash[:16])  # being deleted right now
            if row.deleted_epoch is not None:  # deleted before this upload stored it anew
                conn.execute(
                    update(chunks)
                    .where(chunks.c.chunk_hash == row.chunk_hash)
                    .values(
                        **_chunk_row(chunk, refcount=0, now=now),
                        deleting=None,
                        deleted_epoch=None,
                        deleted_at=None,
                    )
                )
            else:  # gc deletes the old locator; this upload stored a new one
                unmark = update(chunks).where(chunks.c.chunk_hash == row.chunk_hash).values(deleting=None)
                conn.execute(unmark)
        unknown = self._add_references(conn, counts, {h: c.locator for h, c in first.items()})
        for chunk_hash, count in unknown.items():
            conn.execute(insert(chunks).values(**_chunk_row(first[chunk_hash], refcount=count, now=now)))

    def _add_references(
        self, conn: Connection, counts: Counter[str], locators: Mapping[str, str] | None = None
    ) -> Counter[str]:
        """Raise reference counts of known chunks (and set their locators, if given);
        return the counts of unknown ones."""
        unknown: Counter[str] = Counter()
        for chunk_hash, count in counts.items():
            values: dict[str, Any] = {"refcount": chunks.c.refcount + count, "unreferenced_since": None}
            if locators is not None:  # a fresh copy was just stored: whatever was damaged is healed
                values.update(locator=locators[chunk_hash], damaged=None)
            updated = conn.execute(
                update(chunks).where(chunks.c.chunk_hash == chunk_hash).values(**values)
            ).rowcount
            if not updated:
                unknown[chunk_hash] = count
        return unknown

    def _insert_version(
        self,
        conn: Connection,
        node_id: int,
        size: int,
        etag: str,
        parts: Sequence[tuple[str, int]],
        now: float,
    ) -> int:
        version_id = int(
            _new_id(conn.execute(insert(versions).values(node_id=node_id, size=size, etag=etag, created=now)))
        )
        if parts:
            conn.execute(
                insert(extents),
                [
                    {"version_id": version_id, "seq": seq, "chunk_hash": h, "offset": 0, "length": n}
                    for seq, (h, n) in enumerate(parts)
                ],
            )
        return version_id


@contextmanager
def _database_errors() -> Iterator[None]:
    """The database failed (locked too long, disk full, I/O): a CatalogError, so callers
    see one error type and users one line. Constraint violations the methods expect
    (a name taken) are caught inside them first."""
    try:
        yield
    except SqlIntegrityError:
        raise
    except SQLAlchemyError as exc:
        raise CatalogError(f"database error: {getattr(exc, 'orig', None) or exc}") from exc


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def _delete_tree(conn: Connection, node_id: int, name: str, *, recursive: bool) -> None:
    """Delete a node and, if ``recursive``, everything below it; retire their versions."""
    levels: list[list[int]] = [[node_id]]
    while levels[-1]:
        frontier = levels[-1]
        below: list[int] = []
        for batch in _batches(frontier):
            below.extend(conn.scalars(select(nodes.c.id).where(nodes.c.parent_id.in_(batch))))
        if below and not recursive:
            raise FolderNotEmpty(name)
        levels.append(below)
    now = time.time()
    for level in reversed(levels):
        for batch in _batches(level):
            conn.execute(
                update(versions)
                .where(versions.c.node_id.in_(batch), versions.c.retired.is_(None))
                .values(retired=now)
            )
            conn.execute(sql_delete(dead_props).where(dead_props.c.node_id.in_(batch)))
            conn.execute(sql_delete(nodes).where(nodes.c.id.in_(batch)))
    _log(conn, "delete", node=node_id)


def _log(conn: Connection, op: str, **fields: Any) -> None:
    conn.execute(insert(oplog).values(entry=_entry(op, **fields)))


def _entry(op: str, **fields: Any) -> str:
    return json.dumps({"op": op, **fields}, separators=(",", ":"))


def _log_node(
    conn: Connection, node_id: int, parent_id: int, name: str, is_dir: bool, created: float, modified: float
) -> None:
    _log(
        conn, "node", id=node_id, parent=parent_id, name=name, dir=is_dir, created=created, modified=modified
    )


def _parents_first(tree: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Node rows ordered so every parent precedes its children (a MOVE can put a node
    under a folder created after it, so ids alone do not give this order)."""
    children: dict[Any, list[dict[str, Any]]] = {}
    for row in tree:
        children.setdefault(row["parent_id"], []).append(row)
    ordered: list[dict[str, Any]] = []
    frontier = children.get(None, [])
    while frontier:
        ordered.extend(frontier)
        frontier = [child for row in frontier for child in children.get(row["id"], [])]
    if len(ordered) != len(tree):
        raise CatalogError(
            f"the backup's tree is broken: {len(tree) - len(ordered)} nodes have no path to the root"
        )
    return ordered


def _continue_ids_after(conn: Connection) -> None:
    """After inserting explicit ids, make the next automatic id follow the largest one
    (SQLite's AUTOINCREMENT does this itself; PostgreSQL's sequence does not)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "SELECT setval(pg_get_serial_sequence('nodes', 'id'), (SELECT max(id) FROM nodes))"
        )


def _continue_sequence(conn: Connection, table: str, column: str, after: int) -> None:
    """Make the next automatic ``column`` value of ``table`` larger than ``after``."""
    if after <= 0:
        return
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), {int(after)})")
    elif conn.dialect.name == "sqlite":
        updated = conn.exec_driver_sql(
            f"UPDATE sqlite_sequence SET seq = max(seq, {int(after)}) WHERE name = '{table}'"
        ).rowcount
        if not updated:
            conn.exec_driver_sql(f"INSERT INTO sqlite_sequence (name, seq) VALUES ('{table}', {int(after)})")


def _insert_node(
    conn: Connection,
    parent_id: int,
    name: str,
    *,
    is_dir: bool,
    version_id: int | None,
    created: float,
    modified: float,
    node_id: int | None = None,
) -> int:
    """Insert a node; ``node_id`` keeps a recovered node's id, else the database picks one."""
    values = {"id": node_id} if node_id is not None else {}
    statement = insert(nodes).values(
        parent_id=parent_id,
        name=name,
        is_dir=is_dir,
        version_id=version_id,
        created=created,
        modified=modified,
        **values,
    )
    return _new_id(conn.execute(statement))


_TOMBSTONE = and_(
    chunks.c.deleted_epoch.is_not(None), chunks.c.deleting.is_(None), chunks.c.unreferenced_since.is_(None)
)
"""A chunk gc deleted from the store; the row stays so uploads from before can be refused."""


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
    )


def _chunk_row(chunk: StoredChunk, *, refcount: int, now: float) -> dict[str, Any]:
    """A ``chunks`` row for a stored chunk; unreferenced (gc may take it later) if refcount is 0."""
    return {
        "chunk_hash": chunk.chunk_hash,
        "locator": chunk.locator,
        "size": chunk.size,
        "block_size": chunk.block_size,
        "block_hashes": chunk.block_hashes,
        "refcount": refcount,
        "unreferenced_since": None if refcount else now,
        "created": now,
    }


def _new_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def _batches(ids: Sequence[_Key]) -> Iterator[list[_Key]]:
    for i in range(0, len(ids), _BATCH):
        yield list(ids[i : i + _BATCH])


__all__ = [
    "ABSENT",
    "Catalog",
    "Node",
    "ROOT_ID",
    "RecoveredNode",
    "StoredChunk",
    "content_etag",
    "split_path",
]
