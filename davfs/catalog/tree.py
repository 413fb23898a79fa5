"""The tree: folders and files, their current versions and dead properties; what the
WebDAV provider and the command line read and change.

Versions are never rewritten. A replaced or deleted file's version is *retired*, not
removed: it keeps its chunks referenced so a download that started on it still finds
every block; ``gc`` drops retired versions after a grace period. Every change also
appends its :mod:`~davfs.catalog.oplog` entry in the same transaction.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError as SqlIntegrityError

from davfs.catalog import oplog
from davfs.catalog.db import ROOT_ID, Database, batches
from davfs.catalog.rows import (
    ABSENT,
    CHILD_BY_NAME,
    CHUNK_COLUMNS,
    NODE_BY_ID,
    NODE_COLUMNS,
    NODE_FROM,
    SAME_FOLD,
    Node,
    add_references,
    check_name_for_windows,
    check_new_name,
    check_twins,
    chunk_of,
    content_etag,
    insert_node,
    insert_version,
    node_of,
    optional_bytes,
    reference_chunks,
    require_folder,
    retire,
    version_pieces,
)
from davfs.catalog.schema import chunks, dead_props, extents, nodes, versions
from davfs.errors import (
    AlreadyExists,
    CatalogError,
    FolderNotEmpty,
    NotAllowed,
    NotFound,
    PreconditionFailed,
    TooManyProperties,
)
from davfs.snapshot import Extent, FileSnapshot

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
        extents.c.block_hashes.label("extent_hashes"),
        *CHUNK_COLUMNS,
        chunks.c.damaged,
    )
    .select_from(extents.join(chunks, chunks.c.chunk_hash == extents.c.chunk_hash))
    .where(extents.c.version_id == bindparam("version_id"))
    .order_by(extents.c.seq)
)


MAX_DEAD_PROPS = 1000
"""Dead properties one node may hold (Explorer sets a handful, Finder a few more)."""


class Tree:
    """Paths → nodes → versions, and the changes WebDAV makes to them. With
    ``windows_names``, a new name must be one Windows can open and tell apart from its
    siblings (:func:`~davfs.catalog.rows.check_new_name`)."""

    def __init__(self, db: Database, *, windows_names: bool = True) -> None:
        self._db = db
        self.windows_names = windows_names

    # --- reads -------------------------------------------------------------------

    def resolve(self, segments: Sequence[str]) -> Node | None:
        """The node at a path given as its segments (``[]`` is the root)."""
        with self._db.lean_read() as reader:  # every request starts here
            if not segments:
                return node_of(reader.first(NODE_BY_ID, {"node_id": ROOT_ID}))
            parent_id, node = ROOT_ID, None
            for name in segments:
                if node is not None and not node.is_dir:
                    return None
                row = reader.first(CHILD_BY_NAME, {"parent_id": parent_id, "name": name})
                if row is None:
                    return None
                node = node_of(row)
                parent_id = node.id
            return node

    def children(self, folder_id: int) -> list[Node]:
        with self._db.read() as conn:
            rows = conn.execute(
                select(*NODE_COLUMNS)
                .select_from(NODE_FROM)
                .where(nodes.c.parent_id == folder_id)
                .order_by(nodes.c.name)
            )
            return [node_of(r) for r in rows]

    def walk(self, folder_id: int = ROOT_ID, prefix: str = "") -> Iterator[tuple[str, Node]]:
        """Every node below a folder as (path, node), parents before children."""
        for child in self.children(folder_id):
            path = f"{prefix}/{child.name}"
            yield path, child
            if child.is_dir:
                yield from self.walk(child.id, path)

    def snapshot(self, version_id: int, path: str) -> FileSnapshot:
        """Everything a download of one version needs, read in one transaction."""
        with self._db.read() as conn:
            head = conn.execute(_VERSION_HEAD, {"version_id": version_id}).first()
            if head is None:
                raise NotFound(f"version {version_id} of {path}")
            rows = conn.execute(_VERSION_EXTENTS, {"version_id": version_id}).all()
        parts = tuple(Extent(chunk_of(r), r.offset, r.length, optional_bytes(r.extent_hashes)) for r in rows)
        if sum(e.length for e in parts) != head.size:
            raise CatalogError(f"version {version_id} of {path} has missing extents")
        damaged = next((f"chunk {r.chunk_hash[:16]} {r.damaged}" for r in rows if r.damaged), None)
        return FileSnapshot(path, version_id, head.size, head.modified or 0.0, head.etag, parts, damaged)

    def dead_props(self, node_id: int) -> dict[str, str]:
        with self._db.read() as conn:
            rows = conn.execute(
                select(dead_props.c.name, dead_props.c.value).where(dead_props.c.node_id == node_id)
            )
            return {r.name: r.value for r in rows}

    def children_dead_props(self, folder_id: int) -> dict[int, dict[str, str]]:
        """Dead properties of every member of a folder, in one query (PROPFIND Depth 1)."""
        with self._db.read() as conn:
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
        with self._db.read() as conn:
            total = conn.scalar(
                select(func.coalesce(func.sum(versions.c.size), 0)).select_from(
                    nodes.join(versions, nodes.c.version_id == versions.c.id)
                )
            )
            return int(total or 0)

    def is_empty(self) -> bool:
        """Whether the catalog holds nothing but the root folder."""
        with self._db.read() as conn:
            return not conn.scalar(select(func.count()).select_from(nodes).where(nodes.c.id != ROOT_ID))

    # --- changes -----------------------------------------------------------------

    def mkdir(self, parent_id: int, name: str) -> Node:
        with self._db.write() as conn:
            require_folder(conn, parent_id)
            check_new_name(conn, parent_id, name, windows=self.windows_names)
            now = time.time()
            try:
                node_id = insert_node(
                    conn, parent_id, name, is_dir=True, version_id=None, created=now, modified=now
                )
            except SqlIntegrityError:
                raise AlreadyExists(name) from None
            oplog.append(conn, oplog.NodeCreated(node_id, parent_id, name, True, now, now))
        return Node(node_id, parent_id, name, True, now, now, None, 0, None)

    def create_empty_file(self, parent_id: int, name: str) -> Node:
        """A new 0-byte file (LOCK on an unmapped URL); never replaces an existing one
        (a PUT may have committed since the caller looked)."""
        with self._db.write() as conn:
            node, _ = set_content(
                conn,
                parent_id,
                name,
                stored=(),
                size=0,
                mtime=None,
                expect_version=ABSENT,
                windows_names=self.windows_names,
            )
        return node

    def patch(self, node_id: int, props: Mapping[str, str | None], mtime: float | None = None) -> None:
        """Set (or, with ``None``, remove) dead properties of a node and set its
        modification time, all or none (PROPPATCH, RFC 4918 9.2). A node holds at most
        :data:`MAX_DEAD_PROPS` dead properties."""
        with self._db.write() as conn:
            if conn.scalar(_IS_NODE, {"node_id": node_id}) == 0:
                raise NotFound(f"node {node_id}")
            names = list(props)
            for batch in batches(names):
                conn.execute(_DROP_PROPS, {"node_id": node_id, "names": batch})
            rows = [{"node_id": node_id, "name": k, "value": v} for k, v in props.items() if v is not None]
            if rows:
                conn.execute(_INSERT_PROPS, rows)
                if (conn.scalar(_PROPS_HELD, {"node_id": node_id}) or 0) > MAX_DEAD_PROPS:
                    raise TooManyProperties(MAX_DEAD_PROPS)
            entries: list[oplog.Entry] = [oplog.PropSet(node_id, k, v) for k, v in props.items()]
            if mtime is not None:
                conn.execute(_SET_MTIME, {"node_id": node_id, "new_mtime": mtime})
                entries.append(oplog.MtimeSet(node_id, mtime))
            if entries:
                oplog.append(conn, *entries)

    def delete(self, node: Node, *, recursive: bool) -> None:
        """Delete a node (and, if ``recursive``, everything below it) in one transaction.

        The node must still be where the caller found it: a concurrent MOVE must not
        turn this into the deletion of whatever now has that id somewhere else."""
        if node.id == ROOT_ID:
            raise NotAllowed("deleting the root folder")
        with self._db.write() as conn:
            still_there = conn.scalar(
                select(func.count())
                .select_from(nodes)
                .where(nodes.c.id == node.id, nodes.c.parent_id == node.parent_id, nodes.c.name == node.name)
            )
            if not still_there:
                raise NotFound(node.name)
            delete_tree(conn, node.id, node.name, recursive=recursive)

    def move(self, node_id: int, new_parent_id: int, new_name: str) -> None:
        """Rename/move a node, replacing whatever is at the destination in the same
        transaction (wsgidav has checked ``Overwrite``; a file created there since it
        deleted the old destination must not turn the MOVE into a 405)."""
        with self._db.write() as conn:
            require_folder(conn, new_parent_id)
            if _is_below(conn, new_parent_id, node_id):
                raise NotAllowed("moving a folder below itself")
            occupant = conn.scalar(
                select(nodes.c.id).where(nodes.c.parent_id == new_parent_id, nodes.c.name == new_name)
            )
            if occupant is None:
                check_new_name(conn, new_parent_id, new_name, windows=self.windows_names, itself=node_id)
            elif occupant != node_id:
                if _is_below(conn, node_id, occupant):
                    raise NotAllowed("moving a node onto a folder that contains it")
                delete_tree(conn, occupant, new_name, recursive=True)
            try:
                moved = conn.execute(
                    update(nodes)
                    .where(nodes.c.id == node_id)
                    .values(parent_id=new_parent_id, name=new_name, fold=new_name.casefold())
                ).rowcount
            except SqlIntegrityError:
                raise AlreadyExists(new_name) from None
            if moved != 1:
                raise NotFound(f"node {node_id}")  # gone meanwhile: the whole move is undone
            oplog.append(conn, oplog.Moved(node_id, new_parent_id, new_name))

    def copy_node(self, node_id: int, dest_parent_id: int, dest_name: str) -> Node:
        """Copy one node (not its members): a file shares its chunks with the copy, a
        folder is created empty. Dead properties are copied; an existing destination
        file is replaced."""
        with self._db.write() as conn:
            require_folder(conn, dest_parent_id)
            src = conn.execute(NODE_BY_ID, {"node_id": node_id}).first()
            if src is None:
                raise NotFound(f"node {node_id}")
            source = node_of(src)
            now = time.time()
            dest = conn.execute(
                select(nodes.c.id, nodes.c.is_dir).where(
                    nodes.c.parent_id == dest_parent_id, nodes.c.name == dest_name
                )
            ).first()
            if dest is not None and bool(dest.is_dir) != source.is_dir:
                raise AlreadyExists(dest_name)
            if dest is None:
                check_new_name(conn, dest_parent_id, dest_name, windows=self.windows_names)
                dest_id = insert_node(
                    conn,
                    dest_parent_id,
                    dest_name,
                    is_dir=source.is_dir,
                    version_id=None,
                    created=now,
                    modified=source.modified,
                )
                oplog.append(
                    conn,
                    oplog.NodeCreated(
                        dest_id, dest_parent_id, dest_name, source.is_dir, now, source.modified
                    ),
                )
            else:
                dest_id = dest.id
            version_id = None
            if not source.is_dir and source.version_id is not None:
                pairs = version_pieces(conn, source.version_id)
                add_references(conn, Counter(p.chunk_hash for p in pairs))
                version_id = insert_version(conn, dest_id, source.size, source.etag or "", pairs, now)
                if dest is not None:
                    retire(conn, conn.scalar(select(nodes.c.version_id).where(nodes.c.id == dest_id)), now)
                conn.execute(
                    update(nodes)
                    .where(nodes.c.id == dest_id)
                    .values(version_id=version_id, modified=source.modified)
                )
                oplog.append(conn, oplog.VersionSet(dest_id, source.size, source.modified, pairs))
            conn.execute(delete(dead_props).where(dead_props.c.node_id == dest_id))
            props = conn.execute(
                select(dead_props.c.name, dead_props.c.value).where(dead_props.c.node_id == node_id)
            ).all()
            if props:
                conn.execute(
                    insert(dead_props),
                    [{"node_id": dest_id, "name": p.name, "value": p.value} for p in props],
                )
            oplog.append(conn, oplog.PropsReplaced(dest_id, {p.name: p.value for p in props}))
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


# Built once: Explorer sends two PROPPATCHes with every file it copies.
_IS_NODE = select(func.count()).select_from(nodes).where(nodes.c.id == bindparam("node_id"))
_DROP_PROPS = delete(dead_props).where(
    dead_props.c.node_id == bindparam("node_id"), dead_props.c.name.in_(bindparam("names", expanding=True))
)
_INSERT_PROPS = insert(dead_props)
_PROPS_HELD = select(func.count()).select_from(dead_props).where(dead_props.c.node_id == bindparam("node_id"))
_SET_MTIME = update(nodes).where(nodes.c.id == bindparam("node_id")).values(modified=bindparam("new_mtime"))
_SET_VERSION = (
    update(nodes)
    .where(nodes.c.id == bindparam("node_id"))
    .values(version_id=bindparam("new_version"), modified=bindparam("new_mtime"))
)


def set_content(
    conn: Connection,
    parent_id: int,
    name: str,
    *,
    stored: Sequence[Extent],
    size: int,
    mtime: float | None,
    expect_version: int | None = None,
    gc_epoch: int | None = None,
    windows_names: bool = True,
) -> tuple[Node, bool]:
    """Make the pieces ``stored`` holds the content of parent/name, inside the caller's
    transaction.

    Creates the file if needed and retires the version it replaces. Returns the node
    and whether it was created. ``expect_version`` makes it conditional: the file must
    still have that version, or not exist (:data:`ABSENT`); otherwise
    :class:`PreconditionFailed` (a conditional PUT must not overwrite a change made
    while its body was arriving). ``gc_epoch``: see :func:`reference_chunks`."""
    if sum(e.length for e in stored) != size:
        raise CatalogError(
            f"commit of {name}: its pieces hold {sum(e.length for e in stored)} bytes, not {size}"
        )
    require_folder(conn, parent_id)
    now = time.time()
    if stored:
        reference_chunks(conn, [e.chunk for e in stored], gc_epoch=gc_epoch, now=now)
    same_fold = conn.execute(SAME_FOLD, {"parent_id": parent_id, "fold": name.casefold()}).all()
    existing = next((row for row in same_fold if row.name == name), None)
    if existing is not None and existing.is_dir:
        raise AlreadyExists(name)
    current = ABSENT if existing is None else existing.version_id
    if expect_version is not None and current != expect_version:
        raise PreconditionFailed(name)
    parts = tuple(e.piece() for e in stored)
    etag = content_etag(parts, size)
    modified = now if mtime is None else mtime
    if existing is None:
        if windows_names:
            check_name_for_windows(name)
            check_twins(name, same_fold, windows=True)
        node_id = insert_node(
            conn, parent_id, name, is_dir=False, version_id=None, created=now, modified=modified
        )
        version_id = insert_version(conn, node_id, size, etag, parts, now)
        conn.execute(_SET_VERSION, {"node_id": node_id, "new_version": version_id, "new_mtime": modified})
        created = now
        oplog.append(
            conn,
            oplog.NodeCreated(node_id, parent_id, name, False, now, modified),
            oplog.VersionSet(node_id, size, modified, parts),
        )
    else:
        node_id = existing.id
        version_id = insert_version(conn, node_id, size, etag, parts, now)
        conn.execute(_SET_VERSION, {"node_id": node_id, "new_version": version_id, "new_mtime": modified})
        retire(conn, existing.version_id, now)
        created = existing.created
        oplog.append(conn, oplog.VersionSet(node_id, size, modified, parts))
    return Node(node_id, parent_id, name, False, created, modified, version_id, size, etag), existing is None


def _is_below(conn: Connection, node_id: int, ancestor_id: int) -> bool:
    """Whether ``ancestor_id`` is ``node_id`` or one of its ancestors."""
    current: int | None = node_id
    while current is not None:
        if current == ancestor_id:
            return True
        current = conn.scalar(select(nodes.c.parent_id).where(nodes.c.id == current))
    return False


def delete_tree(conn: Connection, node_id: int, name: str, *, recursive: bool) -> None:
    """Delete a node and, if ``recursive``, everything below it; retire their versions."""
    levels: list[list[int]] = [[node_id]]
    while levels[-1]:
        below: list[int] = []
        for batch in batches(levels[-1]):
            below.extend(conn.scalars(select(nodes.c.id).where(nodes.c.parent_id.in_(batch))))
        if below and not recursive:
            raise FolderNotEmpty(name)
        levels.append(below)
    now = time.time()
    for level in reversed(levels):
        for batch in batches(level):
            conn.execute(
                update(versions)
                .where(versions.c.node_id.in_(batch), versions.c.retired.is_(None))
                .values(retired=now)
            )
            conn.execute(delete(dead_props).where(dead_props.c.node_id.in_(batch)))
            conn.execute(delete(nodes).where(nodes.c.id.in_(batch)))
    oplog.append(conn, oplog.Deleted(node_id))
