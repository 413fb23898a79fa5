"""Manifests: the catalog's history kept in the chunk store, so that the store alone can
rebuild the catalog if the database is lost (design invariant 6).

Every catalog change appends an entry to the catalog's oplog in its own transaction.
:class:`ManifestWriter` moves batches of entries into *manifest* chunks in the store
every ``interval`` seconds (one Telegram message per batch, not per change) and on
shutdown; a crash loses at most one interval of history, never a file's bytes.
:func:`recover` reads every manifest back, replays the entries in order over an empty
tree and writes the result into a fresh catalog. Entries name nodes by id, so renames
and copies replay exactly; a manifest written twice (two instances flushing at once)
replays once, because entries are keyed by their sequence number.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from davfs.catalog import ROOT_ID, Catalog, RecoveredNode
from davfs.catalog.oplog import (
    ChunkPlaced,
    Deleted,
    Entry,
    Moved,
    MtimeSet,
    NodeCreated,
    PropSet,
    PropsReplaced,
    Trashed,
    VersionSet,
    decode,
)
from davfs.chunk import ChunkMeta, ChunkRef, Piece, read_verified
from davfs.errors import CatalogError, DavfsError
from davfs.periodic import Periodic
from davfs.stores.base import ChunkStore

log = logging.getLogger(__name__)

FORMAT = "davfs-manifest/1"
MAX_ENTRIES = 20_000
"""Entries per manifest: a few MiB of JSON at most, one chunk, one message."""


class ManifestWriter:
    """Moves oplog entries into manifests in the store, on a timer and on close."""

    def __init__(self, catalog: Catalog, store: ChunkStore, *, interval: float) -> None:
        self._catalog = catalog
        self._store = store
        self._interval = interval
        self._flushing = threading.Lock()
        self._timer = Periodic("manifest writer", interval, self.flush)

    def start(self) -> None:
        self._timer.start()

    def flush(self) -> int:
        """Write the entries pending now; returns how many were written (0 also when
        another instance sharing the catalog is writing them right now).

        Entries committed while a manifest is being stored wait for the next flush:
        chasing them wrote one manifest per file during a folder copy on Telegram (a
        store put takes a third of a second there), each a message from a bot's budget
        of about 20 a minute."""
        written = 0
        with self._flushing, self._catalog.db.single_instance("manifests") as mine:
            while mine and (entries := self._shipped_prefix(self._catalog.oplog.pending(MAX_ENTRIES))):
                body = json.dumps(
                    {"format": FORMAT, "written": time.time(), "entries": entries}, separators=(",", ":")
                ).encode()
                meta = ChunkMeta.of(body, kind="manifest")
                locator = self._store.put(body, meta)
                self._catalog.oplog.stored(entries[-1][0], ChunkRef(locator, meta))
                written += len(entries)
                if len(entries) < MAX_ENTRIES:
                    break
        return written

    def _shipped_prefix(self, entries: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
        """The entries before the first whose content still waits to be shipped: a
        manifest names only chunks the store holds, so ``recover`` after the loss of
        this machine rebuilds the last shipped state (a file replaced by content that
        never left the machine comes back with its previous content) and never a file
        whose bytes are gone. Later entries follow once their chunks are shipped."""
        decoded = [decode(raw) for _, raw in entries]
        pieces = {
            index: {piece.chunk_hash for piece in entry.pieces}
            for index, entry in enumerate(decoded)
            if isinstance(entry, VersionSet)
        }
        waiting = self._catalog.staging.waiting(set().union(*pieces.values())) if pieces else set()
        if not waiting:
            return entries
        cut = min(index for index, hashes in pieces.items() if hashes & waiting)
        node = cast(VersionSet, decoded[cut]).node
        created_here = [i for i, e in enumerate(decoded[:cut]) if isinstance(e, NodeCreated) and e.id == node]
        return entries[: min([cut, *created_here])]  # a file created with that content waits whole

    def close(self) -> None:
        """Stop the timer and write what is left."""
        self._timer.close()
        try:
            self.flush()
        except DavfsError as exc:
            log.error("could not write the last manifest (%s); the oplog keeps it for next time", exc)


@dataclass
class RecoveryReport:
    """What ``davfs recover`` found and rebuilt."""

    chunks: int = 0
    manifests: int = 0
    entries: int = 0
    folders: int = 0
    files: int = 0
    problems: list[str] = field(default_factory=list)


def recover(
    catalog: Catalog, store: ChunkStore, *, progress: Callable[[int], None] | None = None
) -> RecoveryReport:
    """Rebuild ``catalog`` (which must be empty) from the chunks and manifests in ``store``."""
    if not catalog.tree.is_empty():
        raise CatalogError("the catalog is not empty; recover writes into a fresh catalog only")
    report = RecoveryReport()
    chunks: dict[str, ChunkRef] = {}
    manifests: list[ChunkRef] = []
    for locator, meta in store.iter_chunks():
        if meta.kind == "manifest":
            manifests.append(ChunkRef(locator, meta))
        else:
            chunks[meta.chunk_hash] = ChunkRef(locator, meta)
        if progress is not None:
            progress(1)
    report.chunks, report.manifests = len(chunks), len(manifests)
    entries: dict[int, Entry] = {}
    for manifest in manifests:
        try:
            logged = _entries(store, manifest)
        except (DavfsError, ValueError) as exc:
            report.problems.append(
                f"manifest {manifest.locator} is unreadable ({exc}); its changes are missing"
            )
            continue
        entries.update(logged)
    report.entries = len(entries)
    for entry in entries.values():  # chunks the store's listing cannot show (imported)
        if isinstance(entry, ChunkPlaced) and entry.meta.chunk_hash not in chunks:
            chunks[entry.meta.chunk_hash] = ChunkRef(entry.locator, entry.meta)
    tree = _Tree()
    for seq in sorted(entries):
        tree.apply(entries[seq])
    nodes = list(tree.parents_first(chunks, report.problems))
    catalog.dump.load_tree(nodes, chunks, last_seq=max(entries, default=0))
    for manifest in manifests:
        catalog.oplog.stored(0, manifest)
    report.folders = sum(1 for n in nodes if n.is_dir and n.id != ROOT_ID)
    report.files = sum(1 for n in nodes if not n.is_dir)
    return report


def last_logged_seq(store: ChunkStore) -> int:
    """The newest change any readable manifest in ``store`` holds (0: none)."""
    newest = 0
    for locator, meta in store.iter_chunks():
        if meta.kind != "manifest":
            continue
        try:
            newest = max([newest, *_entries(store, ChunkRef(locator, meta))])
        except (DavfsError, ValueError) as exc:
            log.warning("manifest %s is unreadable (%s); skipped", locator, exc)
    return newest


def _entries(store: ChunkStore, manifest: ChunkRef) -> dict[int, Entry]:
    """The entries a manifest holds, by sequence number; verified before it is parsed."""
    body = json.loads(read_verified(store, manifest))
    if body.get("format") != FORMAT:
        raise ValueError(f"unknown manifest format {body.get('format')!r}")
    return {int(seq): decode(entry) for seq, entry in body["entries"]}


_IN_TRASH = -1
"""The parent of what is in the trash as the replay sees it (``recover`` rebuilds the
tree; the trash starts empty)."""


class _Tree:
    """The tree as the oplog describes it, replayed in memory."""

    def __init__(self) -> None:
        self.nodes: dict[int, dict[str, Any]] = {
            ROOT_ID: {"parent": None, "name": "", "dir": True, "created": 0.0, "modified": 0.0, "props": {}}
        }
        self.children: dict[int, set[int]] = {ROOT_ID: set()}

    def apply(self, entry: Entry) -> None:
        if isinstance(entry, NodeCreated):
            self.nodes[entry.id] = {
                "parent": entry.parent,
                "name": entry.name,
                "dir": entry.is_dir,
                "created": entry.created,
                "modified": entry.modified,
                "props": {},
            }
            self.children.setdefault(entry.parent, set()).add(entry.id)
            return
        if isinstance(entry, ChunkPlaced):
            return  # where a chunk is, not a change to the tree (read before the replay)
        node = self.nodes.get(entry.node)
        if node is None:
            return  # its creation fell in a lost window; reported when the tree is written
        match entry:
            case VersionSet():
                node.update(size=entry.size, modified=entry.modified, pieces=entry.pieces)
            case MtimeSet():
                node["modified"] = entry.modified
            case PropSet(value=None):
                node["props"].pop(entry.name, None)
            case PropSet():
                node["props"][entry.name] = entry.value
            case PropsReplaced():
                node["props"] = dict(entry.props)
            case Moved():
                self.children.get(node["parent"], set()).discard(entry.node)
                node.update(parent=entry.parent, name=entry.name)
                self.children.setdefault(entry.parent, set()).add(entry.node)
            case Deleted():
                self._delete(entry.node)
            case Trashed():  # out of the tree; a Moved brings it back, a Deleted ends it
                self.children.get(node["parent"], set()).discard(entry.node)
                node["parent"] = _IN_TRASH
                self.children.setdefault(_IN_TRASH, set()).add(entry.node)

    def _delete(self, node_id: int) -> None:
        node = self.nodes.pop(node_id, None)
        if node is None:
            return
        self.children.get(node["parent"], set()).discard(node_id)
        for child in list(self.children.pop(node_id, ())):
            self._delete(child)

    def _count_below(self, parent: int) -> int:
        """Nodes below ``parent`` (not counting it)."""
        count, level = 0, list(self.children.get(parent, ()))
        while level:
            count += len(level)
            level = [child for node_id in level for child in self.children.get(node_id, ())]
        return count

    def parents_first(self, chunks: dict[str, ChunkRef], problems: list[str]) -> Iterator[RecoveredNode]:
        """Every node reachable from the root, parents before children; files whose
        chunks are not in the store are left out and reported."""
        queue: list[tuple[int, str]] = [(ROOT_ID, "")]
        names: set[tuple[int | None, str]] = set()
        reached = 0
        while queue:
            node_id, path = queue.pop(0)
            node = self.nodes[node_id]
            reached += 1
            if (node["parent"], node["name"]) in names:
                problems.append(f"{path}: a second node of that name (history incomplete); not restored")
                continue
            names.add((node["parent"], node["name"]))
            pieces: tuple[Piece, ...] | None = None
            if not node["dir"]:
                pieces = tuple(node.get("pieces", ()))
                missing = {p.chunk_hash for p in pieces if p.chunk_hash not in chunks}
                if missing:
                    problems.append(f"{path}: {len(missing)} chunk(s) missing from the store; not restored")
                    continue
            yield RecoveredNode(
                id=node_id,
                parent=node["parent"],
                name=node["name"],
                is_dir=node["dir"],
                created=node["created"],
                modified=node["modified"],
                size=int(node.get("size", 0)),
                pieces=pieces,
                props=node["props"] or None,
            )
            if node["dir"]:
                for child in sorted(self.children.get(node_id, ()), key=lambda c: self.nodes[c]["name"]):
                    queue.append((child, f"{path}/{self.nodes[child]['name']}"))
        if reached + self._count_below(_IN_TRASH) < len(self.nodes):
            problems.append(
                f"{len(self.nodes) - reached} node(s) hang below folders the history does not "
                "create (a manifest is missing); not restored"
            )
