"""Files taken in from messages davfs did not post (``davfs import``).

An imported file is an ordinary file whose chunks are other people's messages. It is
committed in one transaction together with the property that names where it came
from (:data:`IMPORTED_FROM`), so an import that stops anywhere continues where it
stopped and a second run takes nothing twice; and with a ``ChunkPlaced`` oplog entry per
chunk, so ``recover`` finds chunks the store's own listing does not show.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import insert, select

from davfs.catalog import oplog
from davfs.catalog.db import Database
from davfs.catalog.rows import free_name
from davfs.catalog.schema import chunks, dead_props
from davfs.catalog.tree import Tree, set_content
from davfs.snapshot import Extent

IMPORTED_FROM = "{urn:davfs}imported-from"
"""Dead property of an imported file: the messages it was made of."""


class Imports:
    def __init__(self, db: Database, tree: Tree) -> None:
        self._db = db
        self._tree = tree

    def done(self, source: str) -> bool:
        """Whether a file made of ``source`` was imported already."""
        with self._db.read() as conn:
            found = conn.scalar(
                select(dead_props.c.node_id).where(
                    dead_props.c.name == IMPORTED_FROM, dead_props.c.value == source
                )
            )
        return found is not None

    def chunk_locators(self) -> set[str]:
        """Where every chunk the catalog knows is (to tell the store's other content)."""
        with self._db.read() as conn:
            return set(conn.scalars(select(chunks.c.locator)))

    def commit(
        self,
        parent_id: int,
        name: str,
        *,
        stored: Sequence[Extent],
        size: int,
        mtime: float | None,
        source: str,
    ) -> str | None:
        """Create the file (under a free name: ``name (2).ext``… if taken) with its
        origin recorded; the name it got, or None if ``source`` was imported meanwhile."""
        with self._db.write() as conn:
            taken = conn.scalar(
                select(dead_props.c.node_id).where(
                    dead_props.c.name == IMPORTED_FROM, dead_props.c.value == source
                )
            )
            if taken is not None:
                return None
            free = free_name(conn, parent_id, name, lambda attempt: str(attempt + 1))
            node, _ = set_content(
                conn,
                parent_id,
                free,
                stored=stored,
                size=size,
                mtime=mtime,
                windows_names=self._tree.windows_names,
            )
            conn.execute(insert(dead_props).values(node_id=node.id, name=IMPORTED_FROM, value=source))
            oplog.append(
                conn,
                *(oplog.ChunkPlaced(e.chunk.locator, e.chunk.meta) for e in stored),
                oplog.PropSet(node.id, IMPORTED_FROM, source),
            )
            return free
