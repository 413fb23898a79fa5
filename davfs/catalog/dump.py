"""The whole catalog in and out: every row for a backup (:mod:`davfs.backup`), rows back
from one, and a tree rebuilt from manifests (:mod:`davfs.manifest`'s ``recover``)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from davfs.catalog import schema
from davfs.catalog.db import (
    BATCH,
    ROOT_ID,
    Database,
    continue_ids_after,
    continue_sequence,
    database_errors,
)
from davfs.catalog.rows import content_etag, insert_node, insert_version, reference_chunks
from davfs.catalog.schema import chunks, dead_props, nodes
from davfs.catalog.tree import Tree
from davfs.chunk import ChunkRef, Piece
from davfs.errors import CatalogError


@dataclass(frozen=True, slots=True)
class RecoveredNode:
    """One node of a tree rebuilt from manifests; ``pieces`` is None for folders."""

    id: int
    parent: int | None
    name: str
    is_dir: bool
    created: float
    modified: float
    size: int = 0
    pieces: tuple[Piece, ...] | None = None
    props: dict[str, str] | None = None


class Dump:
    """Whole-catalog reads and writes."""

    def __init__(self, db: Database, tree: Tree) -> None:
        self._db = db
        self._tree = tree

    def is_new(self) -> bool:
        """Whether the catalog holds nothing yet: no file or folder, no chunk."""
        with self._db.read() as conn:
            return self._tree.is_empty() and conn.scalar(select(func.count()).select_from(chunks)) == 0

    def rows(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every row of every table as (table, {column: value}), all from one consistent
        snapshot of the database (one read transaction, repeatable on PostgreSQL),
        streamed so a large catalog never sits in memory."""
        with database_errors(), self._db.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                for table in schema.metadata.sorted_tables:
                    if table.name in schema.EPHEMERAL:
                        continue
                    result = conn.execution_options(yield_per=1000).execute(select(table))
                    for row in result:
                        yield table.name, dict(row._mapping)

    def load_rows(
        self, rows: Iterable[tuple[str, dict[str, Any]]], *, schema_version: int, replace: bool = False
    ) -> int:
        """Fill this empty catalog (or, with ``replace``, this one instead of what it
        holds) with rows dumped from a catalog of ``schema_version`` (this one's or
        older), in one transaction: parents before children, whatever order the dump
        has, every id sequence continued after the loaded rows, and what later schema
        versions added filled in. Returns the number of rows."""
        if schema_version < 1:
            raise CatalogError("the backup names no catalog schema; it is not a davfs catalog backup")
        if schema_version > schema.SCHEMA_VERSION:
            raise CatalogError(
                f"the backup has catalog schema {schema_version}, newer than this davfs "
                f"({schema.SCHEMA_VERSION}); restore it with a davfs as new as the one that made it"
            )
        if not replace and not self._tree.is_empty():
            raise CatalogError("the catalog is not empty; restore only into an empty catalog")
        tables = {table.name: table for table in schema.metadata.sorted_tables}
        loaded = 0
        with self._db.write() as conn:
            for table in reversed(schema.metadata.sorted_tables):
                conn.execute(delete(table))
            tree: list[dict[str, Any]] = []
            pending: dict[str, list[dict[str, Any]]] = {}
            for name, row in rows:
                if name not in tables:
                    raise CatalogError(f"the backup holds an unknown table {name!r}")
                if name == "nodes":
                    tree.append(row)
                    continue
                if name == "meta" and row.get("key") == "schema_version":
                    row = {**row, "value": str(schema.SCHEMA_VERSION)}  # what it is once filled in
                batch = pending.setdefault(name, [])
                batch.append(row)
                if len(batch) >= BATCH:
                    conn.execute(insert(tables[name]), batch)
                    loaded += len(batch)
                    batch.clear()
            for name, batch in pending.items():
                if batch:
                    conn.execute(insert(tables[name]), batch)
                    loaded += len(batch)
            ordered = _parents_first(tree)
            for i in range(0, len(ordered), BATCH):
                conn.execute(insert(nodes), ordered[i : i + BATCH])
            loaded += len(ordered)
            continue_ids_after(conn)
            for table, column in (("versions", "id"), ("uploads", "id"), ("oplog", "seq")):
                largest = conn.scalar(select(func.max(tables[table].c[column])))
                continue_sequence(conn, table, column, int(largest or 0))
            for version in range(schema_version, schema.SCHEMA_VERSION):
                backfill = schema.MIGRATIONS[version].backfill
                if backfill is not None:
                    backfill(conn)
        return loaded

    def load_tree(
        self, tree: Iterable[RecoveredNode], stored: Mapping[str, ChunkRef], *, last_seq: int = 0
    ) -> None:
        """Write a recovered tree (parents before children) into this empty catalog in one
        transaction, keeping node ids, and continue the oplog after ``last_seq``, so the
        manifests written from now on extend the recovered history instead of reusing
        its sequence numbers (a second recovery replays both)."""
        with self._db.write() as conn:
            now = time.time()
            for item in tree:
                version_id = None
                if item.pieces is not None:
                    reference_chunks(conn, [stored[p.chunk_hash] for p in item.pieces], now=now)
                    etag = content_etag(item.pieces, item.size)
                    version_id = insert_version(conn, item.id, item.size, etag, item.pieces, now)
                if item.id == ROOT_ID:
                    conn.execute(update(nodes).where(nodes.c.id == ROOT_ID).values(modified=item.modified))
                else:
                    assert item.parent is not None  # only the root has no parent
                    insert_node(
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
            continue_ids_after(conn)
            continue_sequence(conn, "oplog", "seq", last_seq)


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
