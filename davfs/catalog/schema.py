"""Catalog tables and their migrations.

The schema version lives in ``meta``; :data:`MIGRATIONS` holds one function per step, so
a catalog made by an older davfs is brought forward in place when it is opened.

Data model (see ``shared/design.md``)::

    nodes      the tree: unique (parent_id, name), case-preserving; a file points at its
               current version; ``fold`` is the name case-folded, so a name that differs
               from a sibling's only by case (which Windows cannot tell apart) is found
    versions   one committed content of a file: size and ETag; ``retired`` is set when
               it is replaced or deleted (gc drops it after the grace period)
    extents    ordered (chunk, offset, length) runs that make up a version; a run of a
               pack (small files sharing one chunk) has the BlockHashes of its own blocks
    chunks     ChunkHash → locator, size, BlockHashes (32-byte digests concatenated),
               kind (``data``, ``pack``, ``manifest``…) and format (how it is hashed);
               a locator ``staged:…`` or ``open:…`` is in the staging area (davfs.staging),
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
    locks      WebDAV locks (token, locked path, owner, expiry), shared by every
               instance on the catalog; never backed up (they expire within a day)
    trash      deleted files and folders, kept ``trash_days``: the node moved out of the
               tree (under the trash folder, a second node without a parent), where it
               was and when it was deleted (davfs.catalog.trash)
    strays     second copies in the store of chunks the catalog has at another locator
               (a lost confirmation, a shipment repeated after a crash): gc deletes them
               once they have been strays for the grace period
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
    bindparam,
    select,
    update,
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
    Column("fold", Text, nullable=True),
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
    Column("block_hashes", LargeBinary, nullable=True),
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
    Column("kind", String(16), nullable=False, server_default="data"),
    Column("format", Integer, nullable=False, server_default="1"),
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

Index("ix_nodes_fold", nodes.c.parent_id, nodes.c.fold)

locks = Table(
    "locks",
    metadata,
    Column("token", String(100), primary_key=True),
    Column("root", Text, nullable=False),
    Column("principal", Text, nullable=True),
    Column("scope", String(16), nullable=False),
    Column("type", String(16), nullable=False),
    Column("depth", String(16), nullable=False),
    Column("owner", Text, nullable=False),
    Column("timeout", Float, nullable=False),
    Column("expire", Float, nullable=False),
)
Index("ix_locks_root", locks.c.root)
Index("ix_locks_principal", locks.c.principal)

strays = Table(
    "strays",
    metadata,
    Column("locator", Text, primary_key=True),
    Column("chunk_hash", String(64), nullable=False),
    Column("first_seen", Float, nullable=False),
)

trash = Table(
    "trash",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("node_id", Integer, nullable=False),
    Column("path", Text, nullable=False),
    Column("deleted_at", Float, nullable=False),
    sqlite_autoincrement=True,
)

EPHEMERAL = frozenset({"locks", "strays"})
"""Tables backups leave out."""

SCHEMA_VERSION = 5


@dataclass(frozen=True)
class Migration:
    """One step from a schema version to the next: ``ddl`` changes the tables of an
    existing catalog (new tables are made by ``create_all`` before it runs);
    ``backfill`` fills what the step added from the rows already there. A backup of an
    older schema is restored into the current tables and then given every later
    backfill, so old backups stay restorable."""

    ddl: Callable[[Connection], None] | None = None
    backfill: Callable[[Connection], None] | None = None


MIGRATIONS: dict[int, Migration] = {
    # from_version: the step bringing the schema to from_version + 1.
    1: Migration(),  # 2 adds the oplog table, which create_all has already made
    2: Migration(ddl=lambda conn: _add_gc_columns(conn)),
    3: Migration(ddl=lambda conn: _schema_4(conn), backfill=lambda conn: fold_names(conn)),  # and locks
    4: Migration(),  # 5 adds the trash table, which create_all has already made
}


def _add_gc_columns(conn: Connection) -> None:
    """Schema 3: gc's deletion marks and tombstones, fsck's damage marks on chunks."""
    conn.exec_driver_sql("ALTER TABLE chunks ADD COLUMN deleting FLOAT")
    conn.exec_driver_sql("ALTER TABLE chunks ADD COLUMN deleted_epoch BIGINT")
    conn.exec_driver_sql("ALTER TABLE chunks ADD COLUMN deleted_at FLOAT")
    conn.exec_driver_sql("ALTER TABLE chunks ADD COLUMN damaged TEXT")


def _schema_4(conn: Connection) -> None:
    """Schema 4: names case-folded, for the Windows rule against names that differ only
    by case; a chunk's kind and format; the BlockHashes of a piece of a pack (and the
    new ``locks`` table)."""
    conn.exec_driver_sql("ALTER TABLE nodes ADD COLUMN fold TEXT")
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_nodes_fold ON nodes (parent_id, fold)")
    conn.exec_driver_sql("ALTER TABLE chunks ADD COLUMN kind VARCHAR(16) NOT NULL DEFAULT 'data'")
    conn.exec_driver_sql("ALTER TABLE chunks ADD COLUMN format INTEGER NOT NULL DEFAULT 1")
    binary = "BYTEA" if conn.dialect.name == "postgresql" else "BLOB"
    conn.exec_driver_sql(f"ALTER TABLE extents ADD COLUMN block_hashes {binary}")


def fold_names(conn: Connection) -> None:
    """Fill ``nodes.fold`` where it is empty."""
    rows = conn.execute(select(nodes.c.id, nodes.c.name).where(nodes.c.fold.is_(None))).all()
    for start in range(0, len(rows), 500):
        conn.execute(
            update(nodes).where(nodes.c.id == bindparam("node_id")).values(fold=bindparam("folded")),
            [{"node_id": r.id, "folded": r.name.casefold()} for r in rows[start : start + 500]],
        )
