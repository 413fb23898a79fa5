"""Uploads: what the writer asks of the catalog, from the first stored chunk to the
commit that makes a new version visible (invariant 3).

A multi-chunk upload is *journaled*: each chunk it stored is recorded before the commit,
so a crash leaves chunks gc can find and collect. The commit is one transaction that
references the chunks, swaps the file's version and clears the journal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import delete, func, insert, select

from davfs.catalog.db import Database, new_id
from davfs.catalog.rows import Node, chunk_row
from davfs.catalog.schema import chunks, meta, upload_chunks, uploads
from davfs.catalog.tree import Tree, set_content
from davfs.chunk import ChunkRef
from davfs.snapshot import Extent


class Uploads:
    """The upload journal and the commit of a new version."""

    def __init__(self, db: Database, tree: Tree) -> None:
        self._db = db
        self._tree = tree

    def gc_epoch(self) -> int:
        """How many gc deletion batches have completed; an upload reads it before it
        stores its first chunk and commits with it (see :mod:`davfs.gc`)."""
        with self._db.read() as conn:
            value = conn.scalar(select(meta.c.value).where(meta.c.key == "gc_epoch"))
        return int(value or 0)

    def locator_of(self, chunk_hash: str) -> str | None:
        """Where the store keeps a chunk the catalog knows, if it does (and gc is not
        deleting it: an upload must not count on that copy)."""
        with self._db.read() as conn:
            return conn.scalar(
                select(chunks.c.locator).where(
                    chunks.c.chunk_hash == chunk_hash,
                    chunks.c.deleting.is_(None),
                    chunks.c.deleted_epoch.is_(None),
                    chunks.c.damaged.is_(None),
                )
            )

    def begin(self, path: str) -> int:
        with self._db.write() as conn:
            return new_id(conn.execute(insert(uploads).values(path=path, started=time.time())))

    def journal_chunk(self, upload_id: int, chunk_hash: str, locator: str) -> None:
        """Record a chunk stored for an upload that has not committed yet."""
        with self._db.write() as conn:
            exists = conn.scalar(
                select(func.count())
                .select_from(upload_chunks)
                .where(upload_chunks.c.upload_id == upload_id, upload_chunks.c.chunk_hash == chunk_hash)
            )
            if not exists:
                conn.execute(
                    insert(upload_chunks).values(upload_id=upload_id, chunk_hash=chunk_hash, locator=locator)
                )

    def abort(self, upload_id: int | None, stored: Sequence[ChunkRef]) -> None:
        """Forget an upload. Its chunks stay in the store, recorded as unreferenced, so
        ``gc`` removes them after the grace period (another upload may be sharing them)."""
        with self._db.write() as conn:
            now = time.time()
            for chunk in stored:
                if conn.scalar(
                    select(func.count()).select_from(chunks).where(chunks.c.chunk_hash == chunk.chunk_hash)
                ):
                    continue
                conn.execute(insert(chunks).values(**chunk_row(chunk, refcount=0, now=now)))
            if upload_id is not None:
                conn.execute(delete(upload_chunks).where(upload_chunks.c.upload_id == upload_id))
                conn.execute(delete(uploads).where(uploads.c.id == upload_id))

    def commit(
        self,
        parent_id: int,
        name: str,
        *,
        upload_id: int | None,
        stored: Sequence[Extent],
        size: int,
        mtime: float | None,
        expect_version: int | None = None,
        gc_epoch: int | None = None,
    ) -> tuple[Node, bool]:
        """Make ``stored`` the content of parent/name and clear the upload's journal, in
        one transaction; see :func:`~davfs.catalog.tree.set_content`. Returns the node
        and whether it was created."""
        with self._db.write() as conn:
            result = set_content(
                conn,
                parent_id,
                name,
                stored=stored,
                size=size,
                mtime=mtime,
                expect_version=expect_version,
                gc_epoch=gc_epoch,
                windows_names=self._tree.windows_names,
            )
            if upload_id is not None:
                conn.execute(delete(upload_chunks).where(upload_chunks.c.upload_id == upload_id))
                conn.execute(delete(uploads).where(uploads.c.id == upload_id))
        return result
