"""Catalog tables and their migrations.

The schema version lives in ``meta``; :data:`MIGRATIONS` holds one function per step, so
a catalog made by an older davfs is brought forward in place when it is opened.

Data model (see ``shared/design.md``)::

    nodes      the tree: unique (parent_id, name), case-preserving; a file points at its
               current version
    versions   one committed content of a file: size and ETag; ``retired`` is set when
               it is replaced or deleted (gc drops it after the grace period)
    extents    ordered (chunk, offset, length) runs that make up a version
    chunks     ChunkHash → locator, size, BlockHashes (32-byte digests concatenated),
               reference count (versions using it) and since when it is unreferenced;
               ``deleting`` is set while gc deletes it from the store, ``deleted_epoch``
               and ``deleted_at`` once it tried (an upload that stored the same bytes
               before that gc epoch must not commit them; see davfs.gc); ``damaged`` says why
               ``fsck --repair`` found it unreadable (a fresh upload of it clears it)
    dead_props PROPPATCH'ed properties per node
    uploads / upload_chunks
               the upload journal: chunks stored for a PUT that has not committed yet,
               so a crash leaves something gc can find
    oplog      every change, as a JSON entry written in the change's own transaction,
               until a manifest in the store holds it (design invariant 6)
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

nodes = Table(
    "nodes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("parent_id", Integer, ForeignKey("nodes.id"), nullable=True),
    Column("name", Text, nullable=False),
    Column("is_dir", Boolean, nullable=False),
    Column("version_id", BigInteger, nullable=True),
    Column("created", Float, nullable=False),
    Column("modified", Float, nullable=False),
    UniqueConstraint("parent_id", "name", name="uq_nodes_parent_name"),
    # Ids are never reused: retired versions, journals and logs keep pointing at the
    # node they meant (SQLite would otherwise hand out a deleted row's id again).
    sqlite_autoincrement=True,
)

versions = Table(
    "versions",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("node_id", Integer, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("etag", String(64), nullable=False),
    Column("created", Float, nullable=False),
    Column("retired", Float, nullable=True),
    sqlite_autoincrement=True,
)
Index("ix_versions_retired", versions.c.retired)

extents = Table(
    "extents",
    metadata,
    Column("version_id", BigInteger, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("chunk_hash", String(64), nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("length", BigInteger, nullable=False),
)
Index("ix_extents_chunk", extents.c.chunk_hash)

chunks = Table(
    "chunks",
    metadata,
    Column("chunk_hash", String(64), primary_key=True),
    Column("locator", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("block_size", Integer, nullable=False),
    Column("block_hashes", LargeBinary, nullable=False),
    Column("refcount", Integer, nullable=False),
    Column("unreferenced_since", Float, nullable=True),
    Column("created", Float, nullable=False),
    Column("deleting", Float, nullable=True),
    Column("deleted_epoch", BigInteger, nullable=True),
    Column("deleted_at", Float, nullable=True),
    Column("damaged", Text, nullable=True),
)
Index("ix_chunks_unreferenced", chunks.c.unreferenced_since)

dead_props = Table(
    "dead_props",
    metadata,
    Column("node_id", Integer, primary_key=True),
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

uploads = Table(
    "uploads",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("path", Text, nullable=False),
    Column("started", Float, nullable=False),
    sqlite_autoincrement=True,
)

upload_chunks = Table(
    "upload_chunks",
    metadata,
    Column("upload_id", Integer, primary_key=True),
    Column("chunk_hash", String(64), primary_key=True),
    Column("locator", Text, nullable=False),
)

oplog = Table(
    "oplog",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("entry", Text, nullable=False),
    sqlite_autoincrement=True,
)

SCHEMA_VERSION = 3

Migration = Callable[[Connection], None]

MIGRATIONS: dict[int, Migration] = {
    # from_version: function bringing the schema to from_version + 1.
    # Version 1 is the first; add entries here as the schema evolves.
    1: lambda conn: None,  # 2 adds the oplog table, which create_all has already made
    2: lambda conn: _add_gc_columns(conn),
}


def _add_gc_columns(conn: Connection) -> None:
    """Schema 3: gc's deletion marks and tombstones, fsck's damage marks on chunks."""
    conn.exec_driver_sql("ALTER TABLE chunks ADD COLUMN deleting FLOAT")
    conn.exec_driver_sql("ALTER TABLE chunks ADD COLUMN deleted_epoch BIGINT")
    conn.exec_driver_sql("ALTER TABLE chunks ADD COLUMN deleted_at FLOAT")
    conn.exec_driver_sql("ALTER TABLE chunks ADD COLUMN damaged TEXT")
