"""``davfs import``: files already in the Telegram channel become drive files, read in
place, never uploaded again.

``app-db``: the files the original upload app left in the channel.

That app kept, per file, a row in an SQLite table ``files``: ``id``, ``filename``,
``size``, ``message_ids`` (a JSON list of channel message ids, in order) and
``chunk_hashes`` (a JSON list of one hex digest per chunk; MD5, SHA-1 or SHA-256, told
apart by length). Each chunk is one document message. For every row, each chunk is
fetched once and checked against the app's digest while davfs's block hashes are
computed; the file is created only when every chunk matched and the sizes add up, in
one transaction with the record of where it came from (see
:mod:`davfs.catalog.imports`), so nothing half-imported is ever visible and a second
run imports nothing twice. The chunks keep their messages: locators
``message:<id>``, which davfs reads but never deletes.

``channel``: every other document in the channel davfs did not post (forwarded files,
uploads from a phone) becomes a file named as the document is, dated by its message;
its bytes are checked against Telegram's own SHA-256 of each range
(``upload.getFileHashes``) while davfs's block hashes are computed. Messages a drive
file already uses (davfs's chunks, the app's imported ones) are left alone, so import
``app-db`` first: its chunks are parts of files, not files.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from davfs.chunk import BLOCK_SIZE, ChunkHasher, ChunkRef
from davfs.drive import Drive
from davfs.errors import DavfsError, ImportFailed, StoreError
from davfs.paths import split_path
from davfs.snapshot import Extent
from davfs.stores.base import FOREIGN
from davfs.stores.telegram import ForeignDocument, TelegramStore

log = logging.getLogger(__name__)

DIGESTS = {32: "md5", 40: "sha1", 64: "sha256"}
"""The app's chunk digests, told apart by their length in hex digits."""
READ_AT_ONCE = 8 * BLOCK_SIZE
"""Bytes asked of the store at once (its 1 MiB requests then run in parallel)."""
TIME_COLUMNS = ("uploaded_at", "upload_time", "created_at", "created", "timestamp", "date")
"""Columns the app may have kept an upload time in (the first found is the mtime)."""


@dataclass
class ImportReport:
    dry_run: bool = False
    imported: list[str] = field(default_factory=list)
    """Drive paths of the files created (or that would be, with ``dry_run``)."""
    already: int = 0
    """Rows a previous run imported."""
    skipped: list[str] = field(default_factory=list)
    """One line per row not imported: which file, which chunk, why."""
    digests: Counter[str] = field(default_factory=Counter)
    """Chunks checked, by the app's digest kind."""

    def lines(self) -> list[str]:
        verb = "would import" if self.dry_run else "imported"
        kinds = ", ".join(f"{count} {kind.upper()}" for kind, count in sorted(self.digests.items()))
        return [
            *(f"skipped {line}" for line in self.skipped),
            f"{verb} {len(self.imported)} files; {self.already} imported before; {len(self.skipped)} skipped"
            + (f"; chunk digests checked: {kinds}" if kinds else ""),
        ]


@dataclass(frozen=True)
class _Row:
    id: Any
    name: str
    size: int
    message_ids: list[int]
    digests: list[str]
    mtime: float | None

    @property
    def source(self) -> str:
        """What the file is made of, the same in every run (the import's idempotence key)."""
        if self.message_ids:
            return "telegram messages " + ",".join(map(str, self.message_ids))
        return f"app-db row {self.id} (empty)"


def import_app_db(
    drive: Drive,
    database: Path,
    *,
    into: str = "/Imported",
    dry_run: bool = False,
    progress: Callable[[int], object] | None = None,
) -> ImportReport:
    """Import every row of the app's database (see the module docstring)."""
    store = _telegram(drive)
    if store is None:
        raise ImportFailed(database, "it reads the app's Telegram messages; set davfs.store to telegram")
    report = ImportReport(dry_run=dry_run)
    rows, problems = _read_rows(database)
    report.skipped += problems
    candidates = (
        _Candidate(
            row.name,
            f"{row.name} (app row {row.id})",
            row.source,
            row.size,
            row.mtime,
            functools.partial(_fetch_and_check, store, row, report, progress),
        )
        for row in rows
    )
    _take_in(drive, candidates, into, report)
    return report


@dataclass(frozen=True)
class _Candidate:
    """A file an import may create."""

    name: str
    where: str
    """How the report names it."""
    source: str
    """What it is made of (the idempotence key)."""
    size: int
    mtime: float | None
    fetch: Callable[[], list[Extent]]
    """Its chunks, every byte checked (raises :class:`_Skip` or StoreError)."""


def _take_in(drive: Drive, candidates: Iterable[_Candidate], into: str, report: ImportReport) -> None:
    """Create every candidate not imported before whose bytes check out, in ``into``
    (or, with ``report.dry_run``, only say so)."""
    folder_id = None if report.dry_run else _make_folder(drive, into)
    for candidate in candidates:
        if drive.catalog.imports.done(candidate.source):
            report.already += 1
            continue
        try:
            extents = candidate.fetch()
        except (_Skip, StoreError) as problem:
            report.skipped.append(f"{candidate.where}: {problem}")
            continue
        if folder_id is None:
            report.imported.append(f"{into.rstrip('/')}/{candidate.name}")
            continue
        try:
            name = drive.catalog.imports.commit(
                folder_id,
                candidate.name,
                stored=extents,
                size=candidate.size,
                mtime=candidate.mtime,
                source=candidate.source,
            )
        except DavfsError as exc:  # a name Windows cannot open, say
            report.skipped.append(f"{candidate.where}: {exc}")
            continue
        if name is None:
            report.already += 1
        else:
            report.imported.append(f"{into.rstrip('/')}/{name}")


def _telegram(drive: Drive) -> TelegramStore | None:
    """The drive's Telegram store itself (the messages are read as they are, also on an
    encrypted drive: they were never davfs's to encrypt)."""
    store = drive.store_itself
    return store if isinstance(store, TelegramStore) else None


class _Skip(Exception):
    """Why a row is not imported."""


def _read_rows(database: Path) -> tuple[list[_Row], list[str]]:
    if not database.is_file():
        raise ImportFailed(database, "no such file (give the app's SQLite database)")
    try:
        db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        try:
            columns = {r["name"] for r in db.execute("PRAGMA table_info(files)")}
            missing = {"id", "filename", "size", "message_ids", "chunk_hashes"} - columns
            if missing:
                raise ImportFailed(database, f"its files table lacks {', '.join(sorted(missing))}")
            when = next((c for c in TIME_COLUMNS if c in columns), None)
            raw = db.execute("SELECT * FROM files ORDER BY id").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise ImportFailed(database, f"not a database davfs can read ({exc})") from None
    rows, problems = [], []
    for r in raw:
        try:
            message_ids = [int(m) for m in json.loads(r["message_ids"] or "[]")]
            digests = [str(d).lower() for d in json.loads(r["chunk_hashes"] or "[]")]
            size = int(r["size"])
            name = str(r["filename"])
        except (TypeError, ValueError) as exc:
            problems.append(f"app row {r['id']}: unreadable ({exc})")
            continue
        if len(message_ids) != len(digests) or size < 0 or (size > 0 and not message_ids):
            problems.append(
                f"{name} (app row {r['id']}): {len(message_ids)} messages, {len(digests)} digests"
            )
            continue
        if bad := [
            d for d in digests if len(d) not in DIGESTS or any(c not in "0123456789abcdef" for c in d)
        ]:
            problems.append(f"{name} (app row {r['id']}): {bad[0]!r} is not an MD5, SHA-1 or SHA-256 digest")
            continue
        rows.append(_Row(r["id"], name, size, message_ids, digests, _mtime(r[when]) if when else None))
    return rows, problems


def _mtime(value: Any) -> float | None:
    """An upload time as the app may have stored it: seconds, or an ISO date."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        stamp = datetime.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return stamp.timestamp()


def _fetch_and_check(
    store: TelegramStore, row: _Row, report: ImportReport, progress: Callable[[int], object] | None
) -> list[Extent]:
    extents: list[Extent] = []
    for index, (message_id, digest) in enumerate(zip(row.message_ids, row.digests, strict=True)):
        locator = f"{FOREIGN}{message_id}"
        try:
            size = store.document_size(locator)
        except StoreError:
            raise _Skip(f"chunk {index + 1} (message {message_id}) is gone from the channel") from None
        kind = DIGESTS[len(digest)]
        theirs = hashlib.new(kind)
        ours = ChunkHasher(kind="data")
        for offset in range(0, size, READ_AT_ONCE):
            data = store.get(locator, offset, min(READ_AT_ONCE, size - offset))
            theirs.update(data)
            ours.update(data)
            if progress is not None:
                progress(len(data))
        report.digests[kind] += 1
        if theirs.hexdigest() != digest:
            raise _Skip(
                f"chunk {index + 1} (message {message_id}) does not match its {kind.upper()} "
                f"(the app recorded {digest[:16]}…, the message holds {theirs.hexdigest()[:16]}…)"
            )
        extents.append(Extent.whole(ChunkRef(locator, ours.meta())))
    total = sum(e.length for e in extents)
    if total != row.size:
        raise _Skip(f"its chunks hold {total} bytes, the app recorded {row.size}")
    return extents


def import_channel(
    drive: Drive,
    *,
    into: str = "/From the channel",
    dry_run: bool = False,
    progress: Callable[[int], object] | None = None,
) -> ImportReport:
    """Import every document of the channel davfs did not post (see the module docstring)."""
    store = _telegram(drive)
    if store is None:
        raise ImportFailed("the channel", "there is none: set davfs.store to telegram")
    report = ImportReport(dry_run=dry_run)
    used = {
        int(n)
        for n in (loc.removeprefix(FOREIGN) for loc in drive.catalog.imports.chunk_locators())
        if n.isdigit()
    }

    def candidates() -> Iterator[_Candidate]:
        for document in store.foreign_documents():
            source = f"telegram messages {document.message_id}"
            if document.message_id in used and not drive.catalog.imports.done(source):
                continue  # part of a file already: davfs's own chunk, or one of the app's
            name = document.name or f"document {document.message_id}"
            yield _Candidate(
                name,
                f"{name} (message {document.message_id})",
                source,
                document.size,
                document.date.timestamp(),
                functools.partial(_fetch_checked_by_telegram, store, document, report, progress),
            )

    _take_in(drive, candidates(), into, report)
    return report


def _fetch_checked_by_telegram(
    store: TelegramStore,
    document: ForeignDocument,
    report: ImportReport,
    progress: Callable[[int], object] | None,
) -> list[Extent]:
    """The document as one chunk, every byte checked against Telegram's range hashes."""
    locator, size = document.locator, document.size
    ranges: list[tuple[int, int, bytes]] = []
    while not ranges or ranges[-1][0] + ranges[-1][1] < size:
        more = store.file_hashes(locator, ranges[-1][0] + ranges[-1][1] if ranges else 0)
        if not more:
            raise _Skip("Telegram gave no hashes for part of it")
        ranges += more
    ours = ChunkHasher(kind="data")
    held = bytearray()  # bytes from the start of the range being checked on
    checking = iter(ranges)
    offset, length, digest = next(checking)
    for start in range(0, size, READ_AT_ONCE):
        data = store.get(locator, start, min(READ_AT_ONCE, size - start))
        ours.update(data)
        if progress is not None:
            progress(len(data))
        held += data
        checked = 0
        view = memoryview(held)
        while length and offset + length <= start + len(data):
            if hashlib.sha256(view[checked : checked + length]).digest() != digest:
                raise _Skip(f"bytes {offset}-{offset + length - 1} do not match Telegram's SHA-256 of them")
            checked += length
            offset, length, digest = next(checking, (0, 0, b""))
        view.release()
        del held[:checked]
    report.digests["telegram sha256"] += 1
    return [Extent.whole(ChunkRef(locator, ours.meta()))]


def _make_folder(drive: Drive, path: str) -> int:
    """The folder at ``path``, made with its parents if need be."""
    node = drive.node("/")
    for name in split_path(path):
        found = next((c for c in drive.children(node.id) if c.name == name), None)
        if found is None:
            found = drive.mkdir(node.id, name)
        elif not found.is_dir:
            raise ImportFailed(path, f"{name} is a file; give another --into")
        node = found
    return node.id
