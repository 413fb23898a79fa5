"""The trash: what DELETE took away, kept ``trash_days`` so a person can bring it back.

A WebDAV DELETE of a mapped drive skips the Windows Recycle Bin, so davfs keeps one. A
deleted file or folder is not removed: its node is *moved out of the tree*, under the
trash folder (a second node without a parent, so no path reaches it and no WebDAV
listing shows it), renamed to its trash id, with a row saying where it was and when it
went. Its versions stay current and keep their chunks; its properties and modification
times stay on the nodes. Restoring moves it back (recreating missing parent folders,
and picking a free name if the old one is taken again); emptying deletes it for real
(its versions are retired, and gc takes their chunks after ``gc_grace``).

The oplog says :class:`~davfs.catalog.oplog.Trashed`, then a ``Moved`` back or a
``Deleted``, so ``recover`` rebuilds the tree as it was (the trash itself starts empty
after a recover; a restored backup keeps it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, insert, select, update

from davfs.catalog import oplog
from davfs.catalog.db import ROOT_ID, Database, batches, new_id
from davfs.catalog.rows import NODE_BY_ID, SAME_FOLD, check_name_for_windows, free_name, insert_node, node_of
from davfs.catalog.schema import nodes, trash, versions
from davfs.catalog.tree import delete_tree
from davfs.errors import FolderNotEmpty, NotAllowed, NotFound
from davfs.paths import split_path

TRASH_FOLDER = ".trash"
"""Name of the trash folder node (parent NULL, like the root, whose name is empty)."""


@dataclass(frozen=True, slots=True)
class TrashItem:
    id: int
    path: str
    """Where it was."""
    is_dir: bool
    deleted_at: float
    size: int
    """Bytes of the current versions of the files it holds."""
    files: int


class Trash:
    """Putting nodes in the trash, listing, restoring and emptying it."""

    def __init__(self, db: Database, *, windows_names: bool = True) -> None:
        self._db = db
        self._windows_names = windows_names

    def put(self, node_id: int, parent_id: int | None, name: str, path: str, *, recursive: bool) -> int:
        """Move a node (still at ``parent_id``/``name``, or nothing happens: a
        concurrent MOVE must not trash whatever now has that id) into the trash."""
        if node_id == ROOT_ID:
            raise NotAllowed("deleting the root folder")
        with self._db.write() as conn:
            node = conn.execute(
                select(nodes.c.is_dir).where(
                    nodes.c.id == node_id, nodes.c.parent_id == parent_id, nodes.c.name == name
                )
            ).first()
            if node is None:
                raise NotFound(name)
            if node.is_dir and not recursive:
                if conn.scalar(select(func.count()).select_from(nodes).where(nodes.c.parent_id == node_id)):
                    raise FolderNotEmpty(name)
            now = time.time()
            item = new_id(conn.execute(insert(trash).values(node_id=node_id, path=path, deleted_at=now)))
            holder = _trash_folder(conn)
            conn.execute(
                update(nodes)
                .where(nodes.c.id == node_id)
                .values(parent_id=holder, name=str(item), fold=str(item))
            )
            oplog.append(conn, oplog.Trashed(node_id))
            return item

    def items(self, under: str = "/") -> list[TrashItem]:
        """What the trash holds from ``under`` (a path) down, newest first."""
        prefix = "/" + "/".join(split_path(under))
        with self._db.read() as conn:
            rows = conn.execute(select(trash).order_by(trash.c.deleted_at.desc(), trash.c.id.desc())).all()
            found = []
            for r in rows:
                if prefix != "/" and r.path != prefix and not r.path.startswith(prefix + "/"):
                    continue
                is_dir, size, files = _measure(conn, r.node_id)
                found.append(TrashItem(r.id, r.path, is_dir, r.deleted_at, size, files))
        return found

    def restore(self, item_id: int, to: str | None = None) -> str:
        """Put an item back where it was, or at ``to``; never over something that is
        there now (a free name is picked: ``name (restored).ext``, then ``(restored
        2)``…). Missing parent folders are made again. Returns the path it is at."""
        with self._db.write() as conn:
            row = conn.execute(select(trash).where(trash.c.id == item_id)).first()
            if row is None:
                raise NotFound(f"trash item {item_id}")
            segments = split_path(to if to is not None else row.path)
            if not segments:
                raise NotAllowed("restoring over the root folder")
            parent_id, folders = _make_folders(conn, segments[:-1], windows=self._windows_names)
            name = free_name(conn, parent_id, segments[-1], _restored)
            if self._windows_names:
                check_name_for_windows(name)
            conn.execute(
                update(nodes)
                .where(nodes.c.id == row.node_id)
                .values(parent_id=parent_id, name=name, fold=name.casefold())
            )
            conn.execute(delete(trash).where(trash.c.id == item_id))
            oplog.append(conn, oplog.Moved(row.node_id, parent_id, name))
            return "/" + "/".join([*folders, name])

    def empty(self, deleted_before: float | None = None) -> int:
        """Delete for good what went into the trash before ``deleted_before`` (None:
        everything). Returns how many items."""
        with self._db.write() as conn:
            query = select(trash.c.id, trash.c.node_id)
            if deleted_before is not None:
                query = query.where(trash.c.deleted_at < deleted_before)
            rows = conn.execute(query).all()
            for r in rows:
                delete_tree(conn, r.node_id, str(r.id), recursive=True)
            for batch in batches([r.id for r in rows]):
                conn.execute(delete(trash).where(trash.c.id.in_(batch)))
        return len(rows)

    def count(self, deleted_before: float) -> int:
        """How many items went into the trash before ``deleted_before``."""
        with self._db.read() as conn:
            found = conn.scalar(
                select(func.count()).select_from(trash).where(trash.c.deleted_at < deleted_before)
            )
        return int(found or 0)

    def held_bytes(self) -> int:
        """Bytes of the current versions of every file in the trash."""
        with self._db.read() as conn:
            return sum(_measure(conn, node_id)[1] for node_id in conn.scalars(select(trash.c.node_id)))


def _trash_folder(conn: Connection) -> int:
    """The id of the trash folder node, made on first use."""
    found = conn.scalar(select(nodes.c.id).where(nodes.c.parent_id.is_(None), nodes.c.name == TRASH_FOLDER))
    if found is not None:
        return int(found)
    now = time.time()
    return new_id(
        conn.execute(
            insert(nodes).values(
                parent_id=None, name=TRASH_FOLDER, fold=TRASH_FOLDER, is_dir=True, created=now, modified=now
            )
        )
    )


def _measure(conn: Connection, node_id: int) -> tuple[bool, int, int]:
    """(is a folder, bytes, files) of a node and everything below it."""
    top = conn.execute(NODE_BY_ID, {"node_id": node_id}).first()
    if top is None:
        return False, 0, 0
    node = node_of(top)
    if not node.is_dir:
        return False, node.size, 1
    size = files = 0
    level = [node_id]
    while level:
        below: list[int] = []
        for batch in batches(level):
            for r in conn.execute(
                select(nodes.c.id, nodes.c.is_dir, versions.c.size)
                .select_from(nodes.outerjoin(versions, nodes.c.version_id == versions.c.id))
                .where(nodes.c.parent_id.in_(batch))
            ):
                if r.is_dir:
                    below.append(r.id)
                else:
                    size, files = size + int(r.size or 0), files + 1
        level = below
    return True, size, files


def _restored(attempt: int) -> str:
    return "restored" if attempt == 1 else f"restored {attempt}"


def _make_folders(conn: Connection, segments: list[str], *, windows: bool) -> tuple[int, list[str]]:
    """The folder at ``segments``, made (with its missing parents) if need be: its id
    and the names it has on the way."""
    parent_id = ROOT_ID
    names: list[str] = []
    for name in segments:
        # The folder as it is now, also if only its case changed (Windows cannot tell).
        same = conn.execute(SAME_FOLD, {"parent_id": parent_id, "fold": name.casefold()}).all()
        folder = next((r for r in same if r.is_dir and r.name == name), None) or next(
            (r for r in same if r.is_dir), None
        )
        if folder is not None:
            parent_id = folder.id
            names.append(folder.name)
            continue
        if same:
            name = free_name(conn, parent_id, name, _restored)  # a file took the folder's name
        if windows:
            check_name_for_windows(name)
        now = time.time()
        made = insert_node(conn, parent_id, name, is_dir=True, version_id=None, created=now, modified=now)
        oplog.append(conn, oplog.NodeCreated(made, parent_id, name, True, now, now))
        parent_id = made
        names.append(name)
    return parent_id, names
