"""The oplog: every catalog change as a typed entry, kept until a manifest in the store
holds it (design invariant 6).

Each change appends its entry (:func:`append`) in the change's own transaction; the
manifest writer takes pending entries (:meth:`OpLog.pending`) into a manifest chunk and
drops them (:meth:`OpLog.stored`); ``davfs recover`` decodes the manifests' entries with
:func:`decode` and replays them. Entries name nodes by id, so a MOVE or COPY is logged
without computing paths. The JSON form of each entry is what manifests hold, so it
never changes: new fields are optional and old manifests stay readable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select

from davfs.catalog.db import Database, continue_sequence
from davfs.catalog.rows import reference_chunks
from davfs.catalog.schema import oplog
from davfs.chunk import ChunkMeta, ChunkRef, Piece


@dataclass(frozen=True, slots=True)
class NodeCreated:
    """A folder or file node appeared (a file's content follows as :class:`VersionSet`)."""

    id: int
    parent: int
    name: str
    is_dir: bool
    created: float
    modified: float


@dataclass(frozen=True, slots=True)
class VersionSet:
    """A file got new content: its pieces in order."""

    node: int
    size: int
    modified: float
    pieces: tuple[Piece, ...]


@dataclass(frozen=True, slots=True)
class MtimeSet:
    node: int
    modified: float


@dataclass(frozen=True, slots=True)
class PropSet:
    """One dead property set, or removed (``value`` None)."""

    node: int
    name: str
    value: str | None


@dataclass(frozen=True, slots=True)
class PropsReplaced:
    """All dead properties of a node replaced (a COPY's destination)."""

    node: int
    props: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Moved:
    node: int
    parent: int
    name: str


@dataclass(frozen=True, slots=True)
class Deleted:
    """A node and everything below it."""

    node: int


@dataclass(frozen=True, slots=True)
class Trashed:
    """A node and everything below it moved out of the tree into the trash (a restore
    from the trash is a :class:`Moved` back; emptying it a :class:`Deleted`)."""

    node: int


@dataclass(frozen=True, slots=True)
class ChunkPlaced:
    """A chunk the store's listing does not show (a message davfs did not post, taken
    in by ``davfs import``): where it is and its record, so ``recover`` finds it."""

    locator: str
    meta: ChunkMeta


Entry = (
    NodeCreated | VersionSet | MtimeSet | PropSet | PropsReplaced | Moved | Deleted | Trashed | ChunkPlaced
)


def encode(entry: Entry) -> str:
    """The entry's JSON, as manifests hold it."""
    data: dict[str, Any]
    match entry:
        case NodeCreated():
            data = {
                "op": "node",
                "id": entry.id,
                "parent": entry.parent,
                "name": entry.name,
                "dir": entry.is_dir,
                "created": entry.created,
                "modified": entry.modified,
            }
        case VersionSet():
            data = {"op": "version", "node": entry.node, "size": entry.size, "modified": entry.modified}
            if all(p.whole and p.offset == 0 for p in entry.pieces):  # as the first release wrote it
                data["chunks"] = [[p.chunk_hash, p.length] for p in entry.pieces]
            else:
                data["pieces"] = [
                    [
                        p.chunk_hash,
                        p.offset,
                        p.length,
                        None if p.block_hashes is None else p.block_hashes.hex(),
                    ]
                    for p in entry.pieces
                ]
        case MtimeSet():
            data = {"op": "mtime", "node": entry.node, "modified": entry.modified}
        case PropSet():
            data = {"op": "prop", "node": entry.node, "name": entry.name, "value": entry.value}
        case PropsReplaced():
            data = {"op": "props", "node": entry.node, "props": dict(entry.props)}
        case Moved():
            data = {"op": "move", "node": entry.node, "parent": entry.parent, "name": entry.name}
        case Deleted():
            data = {"op": "delete", "node": entry.node}
        case Trashed():
            data = {"op": "trash", "node": entry.node}
        case ChunkPlaced():
            data = {"op": "chunk", "locator": entry.locator, "meta": entry.meta.to_dict()}
    return json.dumps(data, separators=(",", ":"))


def decode(data: Mapping[str, Any]) -> Entry:
    """An entry from its JSON object; ValueError for one this davfs cannot read."""
    op = data.get("op")
    try:
        if op == "node":
            return NodeCreated(
                int(data["id"]),
                int(data["parent"]),
                str(data["name"]),
                bool(data["dir"]),
                float(data["created"]),
                float(data["modified"]),
            )
        if op == "version":
            if "pieces" in data:
                pieces = tuple(
                    Piece(str(h), int(o), int(n), None if b is None else bytes.fromhex(str(b)))
                    for h, o, n, b in data["pieces"]
                )
            else:
                pieces = tuple(Piece(str(h), 0, int(n)) for h, n in data["chunks"])
            return VersionSet(int(data["node"]), int(data["size"]), float(data["modified"]), pieces)
        if op == "mtime":
            return MtimeSet(int(data["node"]), float(data["modified"]))
        if op == "prop":
            value = data["value"]
            return PropSet(int(data["node"]), str(data["name"]), None if value is None else str(value))
        if op == "props":
            return PropsReplaced(int(data["node"]), {str(k): str(v) for k, v in dict(data["props"]).items()})
        if op == "move":
            return Moved(int(data["node"]), int(data["parent"]), str(data["name"]))
        if op == "delete":
            return Deleted(int(data["node"]))
        if op == "trash":
            return Trashed(int(data["node"]))
        if op == "chunk":
            return ChunkPlaced(str(data["locator"]), ChunkMeta.from_dict(dict(data["meta"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"oplog entry {op!r} is incomplete ({exc})") from None
    raise ValueError(f"unknown oplog entry {op!r}")


_APPEND = insert(oplog)


def append(conn: Connection, *entries: Entry) -> None:
    """Log changes inside the transaction that makes them (one statement)."""
    conn.execute(_APPEND, [{"entry": encode(entry)} for entry in entries])


class OpLog:
    """The manifest writer's view: pending entries, and dropping the ones a manifest holds."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def pending(self, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """The oldest entries not yet in a manifest, as (seq, JSON object): the manifest
        stores them as they were logged."""
        with self._db.read() as conn:
            rows = conn.execute(select(oplog.c.seq, oplog.c.entry).order_by(oplog.c.seq).limit(limit))
            return [(int(r.seq), json.loads(r.entry)) for r in rows]

    def stored(self, last_seq: int, manifest: ChunkRef) -> None:
        """A manifest holding every entry up to ``last_seq`` is in the store: drop those
        entries and keep the manifest's chunk referenced (gc must never take it)."""
        with self._db.write() as conn:
            reference_chunks(conn, [manifest])
            conn.execute(delete(oplog).where(oplog.c.seq <= last_seq))

    def last_seq(self) -> int:
        """The number of the newest change this catalog has logged (its entries may
        since have moved into manifests), 0 if none."""
        with self._db.read() as conn:
            newest = int(conn.scalar(select(func.max(oplog.c.seq))) or 0)
            if conn.dialect.name == "postgresql":
                sequence = conn.scalar(select(func.pg_get_serial_sequence("oplog", "seq")))
                counter = conn.exec_driver_sql(
                    f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {sequence}"
                )
                return max(newest, int(counter.scalar() or 0))
            if conn.dialect.name == "sqlite":
                counter = conn.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = 'oplog'")
                return max(newest, int(counter.scalar() or 0))
            return newest

    def continue_after(self, seq: int) -> None:
        """Number the next change after ``seq``: after a restore, the store may hold
        manifests newer than the backup, whose numbers must not be reused."""
        with self._db.write() as conn:
            continue_sequence(conn, "oplog", "seq", seq)
