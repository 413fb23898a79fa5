"""Row-level pieces several catalog modules share: nodes as :class:`Node`, new versions
with their extents, and chunk rows with their reference counts. Each helper works
inside a transaction its caller opened; none opens one.

A chunk's ``refcount`` counts the extents (of live and retired versions) and manifests
that use it; gc deletes only chunks at zero, after a grace period (``davfs.gc``).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, insert, or_, select, update

from davfs.catalog.db import new_id
from davfs.catalog.schema import chunks, extents, nodes, versions
from davfs.chunk import ChunkMeta, ChunkRef, Piece
from davfs.errors import BadPath, CaseTwin, ChunkCollected, NotAFolder, NotFound
from davfs.paths import windows_problem

ABSENT = -1
"""``expect_version`` for "the file must not exist yet" (version ids are positive)."""


@dataclass(frozen=True, slots=True)
class Node:
    """A folder or file as the adapters see it (one row of the tree plus its version)."""

    id: int
    parent_id: int | None
    name: str
    is_dir: bool
    created: float
    modified: float
    version_id: int | None
    size: int
    etag: str | None


NODE_COLUMNS = (
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
NODE_FROM = nodes.outerjoin(versions, nodes.c.version_id == versions.c.id)
# Built once: path resolution runs these for every request.
NODE_BY_ID = select(*NODE_COLUMNS).select_from(NODE_FROM).where(nodes.c.id == bindparam("node_id"))
CHILD_BY_NAME = (
    select(*NODE_COLUMNS)
    .select_from(NODE_FROM)
    .where(nodes.c.parent_id == bindparam("parent_id"), nodes.c.name == bindparam("name"))
)
_IS_DIR = select(nodes.c.is_dir).where(nodes.c.id == bindparam("node_id"))
# Built once too: every upload's commit runs these (building a statement costs more
# than running it on SQLite).
SAME_FOLD = select(nodes.c.id, nodes.c.name, nodes.c.is_dir, nodes.c.version_id, nodes.c.created).where(
    nodes.c.parent_id == bindparam("parent_id"), nodes.c.fold == bindparam("fold")
)
"""The nodes in a folder whose names equal a name but for case (the name itself too)."""
_INSERT_NODE = insert(nodes)
_INSERT_VERSION = insert(versions)
_INSERT_EXTENTS = insert(extents)
_INSERT_CHUNK = insert(chunks)
_RETIRE = update(versions).where(versions.c.id == bindparam("version_id")).values(retired=bindparam("now"))
_COLLECTED = select(chunks.c.chunk_hash, chunks.c.locator, chunks.c.deleting, chunks.c.deleted_epoch).where(
    chunks.c.chunk_hash.in_(bindparam("hashes", expanding=True)),
    or_(chunks.c.deleting.is_not(None), chunks.c.deleted_epoch.is_not(None)),
)
_ADD_REFERENCES = (
    update(chunks)
    .where(chunks.c.chunk_hash == bindparam("hash"))
    .values(refcount=chunks.c.refcount + bindparam("count"), unreferenced_since=None)
)
_ADD_REFERENCES_AT = _ADD_REFERENCES.values(locator=bindparam("at"), damaged=None)


def node_of(row: Any) -> Node:
    """A Node from a row of ``NODE_COLUMNS`` (by position: listings build thousands)."""
    node_id, parent_id, name, is_dir, created, modified, version_id, size, etag = row
    return Node(node_id, parent_id, name, bool(is_dir), created, modified, version_id, size or 0, etag)


def content_etag(pieces: Iterable[Piece], size: int) -> str:
    """Strong ETag derived from content: equal bytes give equal tags, across instances.
    A whole chunk counts by its ChunkHash, a piece of a pack by its BlockHashes (the
    pack's identity says nothing about the piece's bytes)."""
    digest = hashlib.sha256(str(size).encode())
    for piece in pieces:
        digest.update(
            piece.chunk_hash.encode() if piece.block_hashes is None else piece.block_hashes.hex().encode()
        )
    return digest.hexdigest()[:32]


def check_new_name(
    conn: Connection, parent_id: int, name: str, *, windows: bool, itself: int | None = None
) -> None:
    """A name about to appear in a folder, for a drive that Windows maps (``windows``):
    one Windows can open, and not one that differs from a sibling's only in case
    (``itself``: the node taking the name, which may be its own twin, as in a rename
    from ``a.txt`` to ``A.txt``)."""
    if not windows:
        return
    check_name_for_windows(name)
    same_fold = conn.execute(SAME_FOLD, {"parent_id": parent_id, "fold": name.casefold()})
    check_twins(name, same_fold, windows=windows, itself=itself)


def check_name_for_windows(name: str) -> None:
    """:class:`BadPath` for a name Windows cannot open."""
    problem = windows_problem(name)
    if problem is not None:
        raise BadPath(repr(name), problem + " (davfs.windows_names: false allows it)")


def check_twins(name: str, same_fold: Iterable[Any], *, windows: bool, itself: int | None = None) -> None:
    """:class:`CaseTwin` if one of ``same_fold`` (rows of :data:`SAME_FOLD`) is another
    node whose name differs from ``name`` only in case."""
    if not windows:
        return
    for row in same_fold:
        if row.name != name and row.id != itself:
            raise CaseTwin(name, row.name)


def require_folder(conn: Connection, folder_id: int) -> None:
    is_dir = conn.scalar(_IS_DIR, {"node_id": folder_id})
    if is_dir is None:
        raise NotFound(f"folder {folder_id}")
    if not is_dir:
        raise NotAFolder(f"node {folder_id}")


def insert_node(
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
    row = {
        "fold": name.casefold(),
        "parent_id": parent_id,
        "name": name,
        "is_dir": is_dir,
        "version_id": version_id,
        "created": created,
        "modified": modified,
        **values,
    }
    return new_id(conn.execute(_INSERT_NODE, row))


def insert_version(
    conn: Connection, node_id: int, size: int, etag: str, pieces: Sequence[Piece], now: float
) -> int:
    """A new version of a node, made of ``pieces`` in order."""
    version_id = new_id(
        conn.execute(_INSERT_VERSION, {"node_id": node_id, "size": size, "etag": etag, "created": now})
    )
    if pieces:
        conn.execute(
            _INSERT_EXTENTS,
            [
                {
                    "version_id": version_id,
                    "seq": seq,
                    "chunk_hash": p.chunk_hash,
                    "offset": p.offset,
                    "length": p.length,
                    "block_hashes": p.block_hashes,
                }
                for seq, p in enumerate(pieces)
            ],
        )
    return version_id


def retire(conn: Connection, version_id: int | None, now: float) -> None:
    """A replaced version stops being current but keeps its chunks until gc."""
    if version_id is not None:
        conn.execute(_RETIRE, {"version_id": version_id, "now": now})


def chunk_row(chunk: ChunkRef, *, refcount: int, now: float) -> dict[str, Any]:
    """A ``chunks`` row for a stored chunk; unreferenced (gc may take it later) if refcount is 0."""
    meta = chunk.meta
    return {
        "chunk_hash": meta.chunk_hash,
        "locator": chunk.locator,
        "size": meta.size,
        "block_size": meta.block_size,
        "block_hashes": meta.block_hashes,
        "kind": meta.kind,
        "format": meta.format,
        "refcount": refcount,
        "unreferenced_since": None if refcount else now,
        "created": now,
    }


def optional_bytes(value: Any) -> bytes | None:
    """A binary column that may be NULL (drivers return memoryview or bytes)."""
    return None if value is None else bytes(value)


def chunk_of(row: Any) -> ChunkRef:
    """A ChunkRef from a row of :data:`CHUNK_COLUMNS`."""
    meta = ChunkMeta(row.chunk_hash, row.size, row.block_size, bytes(row.block_hashes), row.kind, row.format)
    return ChunkRef(row.locator, meta)


CHUNK_COLUMNS = (
    chunks.c.chunk_hash,
    chunks.c.locator,
    chunks.c.size,
    chunks.c.block_size,
    chunks.c.block_hashes,
    chunks.c.kind,
    chunks.c.format,
)


def reference_chunks(
    conn: Connection, stored: Sequence[ChunkRef], *, gc_epoch: int | None = None, now: float | None = None
) -> None:
    """Count a new version's (or manifest's) references; chunks the catalog has not
    seen get a row.

    A known chunk takes the locator just stored: in a store that is not
    content-addressed (Telegram) an upload stores a chunk again when its old copy is
    gone, and the old locator must not outlive that. A chunk gc is deleting, or deleted
    after ``gc_epoch``, at the locator just stored may be gone from the store although
    the upload put it there: :class:`ChunkCollected`."""
    now = time.time() if now is None else now
    first = {c.chunk_hash: c for c in stored}
    counts = Counter(c.chunk_hash for c in stored)
    collected = conn.execute(_COLLECTED, {"hashes": list(first)}).all()
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
                    **chunk_row(chunk, refcount=0, now=now),
                    deleting=None,
                    deleted_epoch=None,
                    deleted_at=None,
                )
            )
        else:  # gc deletes the old locator; this upload stored a new one
            conn.execute(update(chunks).where(chunks.c.chunk_hash == row.chunk_hash).values(deleting=None))
    # A pack's locator belongs to the staging area (it seals and ships the pack).
    locators = {h: c.locator for h, c in first.items() if c.meta.kind != "pack"}
    unknown = add_references(conn, counts, locators)
    for chunk_hash, count in unknown.items():
        conn.execute(_INSERT_CHUNK, chunk_row(first[chunk_hash], refcount=count, now=now))


def add_references(
    conn: Connection, counts: Counter[str], locators: Mapping[str, str] | None = None
) -> Counter[str]:
    """Raise reference counts of known chunks (and set their locators, if given);
    return the counts of unknown ones."""
    unknown: Counter[str] = Counter()
    for chunk_hash, count in counts.items():
        if locators is not None and chunk_hash in locators:  # a fresh copy was just stored: healed
            params = {"hash": chunk_hash, "count": count, "at": locators[chunk_hash]}
            updated = conn.execute(_ADD_REFERENCES_AT, params).rowcount
        else:
            updated = conn.execute(_ADD_REFERENCES, {"hash": chunk_hash, "count": count}).rowcount
        if not updated:
            unknown[chunk_hash] = count
    return unknown


TOMBSTONE = and_(
    chunks.c.deleted_epoch.is_not(None), chunks.c.deleting.is_(None), chunks.c.unreferenced_since.is_(None)
)
"""A chunk gc deleted from the store; the row stays so uploads from before can be refused."""


def version_pieces(conn: Connection, version_id: int) -> tuple[Piece, ...]:
    """The pieces that make up a version, in order (to give another version the same content)."""
    rows = conn.execute(
        select(extents.c.chunk_hash, extents.c.offset, extents.c.length, extents.c.block_hashes)
        .where(extents.c.version_id == version_id)
        .order_by(extents.c.seq)
    ).all()
    return tuple(
        Piece(r.chunk_hash, r.offset, r.length, None if r.block_hashes is None else bytes(r.block_hashes))
        for r in rows
    )


def free_name(conn: Connection, parent_id: int, name: str, label: Callable[[int], str]) -> str:
    """``name``, or the first of ``stem (label(1)).ext``, ``stem (label(2)).ext``… that no
    sibling has (compared case-folded, as Windows would): where a restore or an import
    puts something whose name is taken."""
    stem, dot, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    candidate, attempt = name, 0
    while conn.execute(SAME_FOLD, {"parent_id": parent_id, "fold": candidate.casefold()}).first() is not None:
        attempt += 1
        candidate = f"{stem} ({label(attempt)}){dot}{ext}"
    return candidate
