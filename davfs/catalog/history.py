"""Previous versions of files: what an overwrite left behind, kept so a person can get
it back (``davfs versions``).

A version is never rewritten; an overwrite *retires* the old one, and gc drops retired
versions after ``gc_grace``. A retired version of a file that still exists is a
*previous version*: gc keeps the newest ``versions_keep`` of them per file for
``version_days`` (:func:`expired_versions` is that rule, the one gc asks). A file that
is deleted takes its previous versions with it (after ``gc_grace``, as before).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import Connection, Select, and_, func, not_, select, update

from davfs.catalog import oplog
from davfs.catalog.db import Database
from davfs.catalog.rows import (
    NODE_BY_ID,
    Node,
    add_references,
    insert_version,
    node_of,
    retire,
    version_pieces,
)
from davfs.catalog.schema import nodes, versions
from davfs.errors import NotAFile, NotFound


@dataclass(frozen=True, slots=True)
class Retention:
    """What gc keeps for people: how many previous versions of a file and for how many
    days, and how many days deleted things stay in the trash (0: none)."""

    keep: int
    days: float
    trash_days: float = 0

    @property
    def keeps_any(self) -> bool:
        return self.keep > 0 and self.days > 0


@dataclass(frozen=True, slots=True)
class PreviousVersion:
    number: int
    """1 for the oldest version still kept, counting up to the current one."""
    version_id: int
    size: int
    written: float
    """When this content was committed."""
    replaced: float | None
    """When it stopped being current (None: it is current)."""


def expired_versions(cutoff: float, retention: Retention | None, now: float) -> Select[tuple[int]]:
    """Ids of the retired versions gc may drop: retired before ``cutoff``, and not one of
    a still existing file's newest ``retention.keep`` previous versions replaced within
    ``retention.days``."""
    if retention is None or not retention.keeps_any:
        return select(versions.c.id).where(versions.c.retired < cutoff)
    rank = func.row_number().over(
        partition_by=versions.c.node_id, order_by=(versions.c.retired.desc(), versions.c.id.desc())
    )
    ranked = (
        select(versions.c.id, versions.c.retired, nodes.c.id.label("live_node"), rank.label("rank"))
        .select_from(versions.outerjoin(nodes, nodes.c.id == versions.c.node_id))
        .where(versions.c.retired.is_not(None))
        .subquery()
    )
    kept = and_(
        ranked.c.live_node.is_not(None),
        ranked.c.rank <= retention.keep,
        ranked.c.retired >= now - retention.days * 86400,
    )
    return select(ranked.c.id).where(ranked.c.retired < cutoff, not_(kept))


class History:
    """Listing and restoring a file's previous versions."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def versions(self, node_id: int) -> list[PreviousVersion]:
        """Every version of a file the catalog still has, oldest first; the last is current."""
        with self._db.read() as conn:
            current = _current_version(conn, node_id)
            rows = conn.execute(
                select(versions.c.id, versions.c.size, versions.c.created, versions.c.retired)
                .where(versions.c.node_id == node_id)
                .order_by(versions.c.id)
            ).all()
        return [
            PreviousVersion(number, r.id, int(r.size), r.created, None if r.id == current else r.retired)
            for number, r in enumerate(rows, start=1)
        ]

    def restore(self, node_id: int, version_id: int) -> Node:
        """Make a copy of ``version_id`` the file's current content; the content it
        replaces becomes a previous version in turn (so a restore can be undone)."""
        with self._db.write() as conn:
            current = _current_version(conn, node_id)
            source = conn.execute(
                select(versions.c.size, versions.c.etag).where(
                    versions.c.id == version_id, versions.c.node_id == node_id
                )
            ).first()
            if source is None:
                raise NotFound(f"version {version_id} of node {node_id}")
            if version_id != current:
                now = time.time()
                pieces = version_pieces(conn, version_id)
                add_references(conn, Counter(p.chunk_hash for p in pieces))
                new_version = insert_version(conn, node_id, int(source.size), source.etag, pieces, now)
                retire(conn, current, now)
                conn.execute(
                    update(nodes).where(nodes.c.id == node_id).values(version_id=new_version, modified=now)
                )
                oplog.append(conn, oplog.VersionSet(node_id, int(source.size), now, pieces))
            return node_of(conn.execute(NODE_BY_ID, {"node_id": node_id}).first())

    def kept_bytes(self) -> int:
        """Logical size of the previous versions of existing files (what they would take
        if restored; chunks they share with other versions are stored once)."""
        with self._db.read() as conn:
            total = conn.scalar(
                select(func.coalesce(func.sum(versions.c.size), 0))
                .select_from(versions.join(nodes, nodes.c.id == versions.c.node_id))
                .where(versions.c.retired.is_not(None))
            )
        return int(total or 0)


def _current_version(conn: Connection, node_id: int) -> int:
    row = conn.execute(select(nodes.c.is_dir, nodes.c.version_id).where(nodes.c.id == node_id)).first()
    if row is None:
        raise NotFound(f"node {node_id}")
    if row.is_dir or row.version_id is None:
        raise NotAFile(f"node {node_id}")
    return int(row.version_id)
