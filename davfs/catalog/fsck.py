"""What ``davfs fsck`` asks of the catalog: does it agree with itself, which chunks are
still needed and by which files, and the marks ``--repair`` leaves on chunks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from sqlalchemy import select, update

from davfs.catalog.db import Database
from davfs.catalog.rows import CHUNK_COLUMNS, chunk_of
from davfs.catalog.schema import chunks, extents, nodes, versions
from davfs.catalog.tree import Tree
from davfs.chunk import ChunkRef


class FsckQueries:
    """Consistency checks and damage marks."""

    def __init__(self, db: Database, tree: Tree) -> None:
        self._db = db
        self._tree = tree

    def integrity_problems(self) -> list[str]:
        """Every way the catalog disagrees with itself ([] when consistent): reference
        counts that do not match the extents using a chunk (a chunk with no extents and
        a count of one is a manifest, kept on purpose), extents naming unknown chunks,
        nodes under a missing parent or without their own live version."""
        problems: list[str] = []
        with self._db.read() as conn:
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

    def referenced_chunks(self) -> Iterator[tuple[ChunkRef, list[str]]]:
        """Every chunk something still references, with the paths of the current files
        using it (none for chunks only replaced versions or a manifest hold)."""
        paths = {node.version_id: path for path, node in self._tree.walk() if node.version_id is not None}
        users: dict[str, list[str]] = {}
        with self._db.read() as conn:
            for version_id, chunk_hash in conn.execute(select(extents.c.version_id, extents.c.chunk_hash)):
                if version_id in paths:
                    users.setdefault(chunk_hash, []).append(paths[version_id])
            rows = conn.execute(select(*CHUNK_COLUMNS).where(chunks.c.refcount > 0)).all()
        for r in rows:
            yield chunk_of(r), sorted(set(users.get(r.chunk_hash, ())))

    def damaged_chunks(self) -> dict[str, str]:
        """ChunkHash → reason, for every chunk marked damaged."""
        with self._db.read() as conn:
            rows = conn.execute(
                select(chunks.c.chunk_hash, chunks.c.damaged).where(chunks.c.damaged.is_not(None))
            )
            return {r.chunk_hash: r.damaged for r in rows}

    def mark_damaged(self, chunk_hash: str, reason: str | None) -> None:
        """Record that a chunk cannot be read back (``fsck --repair``): downloads of the
        files using it fail at once with ``reason`` instead of midway. ``None`` clears
        the mark (the chunk read back intact after all)."""
        with self._db.write() as conn:
            conn.execute(update(chunks).where(chunks.c.chunk_hash == chunk_hash).values(damaged=reason))

    def relocate_chunk(self, chunk_hash: str, locator: str) -> None:
        """Point a chunk at another, intact copy in the store; clears its damage mark."""
        with self._db.write() as conn:
            conn.execute(
                update(chunks).where(chunks.c.chunk_hash == chunk_hash).values(locator=locator, damaged=None)
            )
