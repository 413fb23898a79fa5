"""Write-back: uploads are acknowledged once their bytes are durable on this machine; the
shipper (:mod:`davfs.shipper`) moves them into the chunk store afterwards.

:class:`StagingArea` is a ChunkStore in front of the real one. Chunks an upload stores
land in ``<staging>/chunks/<ChunkHash>`` (fsynced, renamed, the folder fsynced) under
the locator ``staged:<ChunkHash>``; the catalog commits them like any other chunk. Small
files are *packed*: :class:`Packer` appends each to the one open pack
(``<staging>/chunks/<pack id>``, locator ``open:<pack id>``), fsyncs it and commits the
file as a piece of the pack, all under one lock; a pack is sealed into an ordinary
staged chunk when it reaches the chunk size or :data:`PACK_AGE`. On Telegram a folder
of a thousand small files thus costs a handful of messages, not a thousand.

Reads of staged and open chunks come from the staging files, verified by the reader
like any other (invariant 2). Once a chunk is shipped, the catalog points at its store
locator and the staging file is replaced by a *forward record*
(``<staging>/shipped/<ChunkHash>``: the store locator), so a download that took its
snapshot while the chunk was staged still finds its bytes; forward records go after
the gc grace period.

Staged bytes are bounded (:attr:`StagingArea.limit`): past it, an upload waits up to
:data:`ROOM_WAIT` seconds for the shipper, then is refused with 503 and Retry-After;
a full disk is 507. Nothing is ever half-written: a chunk appears under its name only
once whole and fsynced, and a pack's tail past its last committed piece is garbage no
version refers to.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from davfs.chunk import BLOCK_SIZE, ChunkHasher, ChunkMeta, ChunkRef
from davfs.errors import ChunkMissing, StagingFull, StoreError
from davfs.snapshot import Extent
from davfs.stores.base import ChunkStore, StoreProperties, spool, store_error

log = logging.getLogger(__name__)

STAGED = "staged:"
"""Locator prefix of a chunk waiting in the staging area to be shipped."""
OPEN = "open:"
"""Locator prefix of the pack small files are being appended to."""
PACK_AGE = 30.0
"""Seconds after which an open pack is sealed even if not full (on Telegram a pack
costs one message however full it is; a bot may post about 20 a minute)."""
ROOM_WAIT = 30.0
"""Seconds an upload waits for the shipper to make room under the staging limit."""
_T = TypeVar("_T")


def is_staged(locator: str) -> bool:
    return locator.startswith((STAGED, OPEN))


class StagingArea:
    """A ChunkStore that keeps new chunks on this machine until they are shipped into
    ``store`` (see the module docstring)."""

    def __init__(self, store: ChunkStore, folder: Path, *, limit: int) -> None:
        self.store = store
        self.folder = folder
        self.limit = limit
        self._chunks = folder / "chunks"
        self._shipped = folder / "shipped"
        self._spool = folder / "spool"
        for sub in (self._chunks, self._shipped, self._spool):
            sub.mkdir(parents=True, exist_ok=True)
        inner = store.properties
        self.properties = StoreProperties(
            f"{inner.name}+staging",
            inner.max_chunk_size,
            concurrency=inner.concurrency,
            spool_dir=str(self._spool),
            content_addressed=inner.content_addressed,
        )
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self.pending_bytes = self._count()
        self.shipped_notice: Callable[[], None] = lambda: None
        """Called whenever something new waits to be shipped (the shipper's wake-up)."""

    # --- the ChunkStore protocol ------------------------------------------------------

    def put(self, data: bytes | memoryview, meta: ChunkMeta) -> str:
        return self.put_file(spool(data, self._spool, "staging"), meta)

    def put_file(self, path: str, meta: ChunkMeta) -> str:
        """Stage a spooled chunk: durable here, shipped later."""
        try:
            self.make_room(meta.size)
            target = self.path_of(meta.chunk_hash)
            with open(path, "rb+") as handle:
                os.fsync(handle.fileno())
            existed = target.exists()
            os.replace(path, target)
            _fsync_dir(self._chunks)
        except OSError as exc:
            raise store_error("staging", exc) from exc
        finally:
            Path(path).unlink(missing_ok=True)
        if not existed:
            self._grow(meta.size)
        self.shipped_notice()
        return STAGED + meta.chunk_hash

    def get(self, locator: str, offset: int, length: int) -> bytes:
        if not is_staged(locator):
            return self.store.get(locator, offset, length)
        name = locator.split(":", 1)[1]
        try:
            fd = os.open(self.path_of(name), os.O_RDONLY)
        except FileNotFoundError:
            forward = self.forward(name)
            if forward is None:
                raise ChunkMissing(name, "staging") from None
            return self.store.get(forward, offset, length)
        except OSError as exc:
            raise store_error("staging", exc) from exc
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        if len(data) != length:
            raise StoreError("staging", f"staged chunk {name[:16]} is shorter than {offset + length} bytes")
        return data

    def delete(self, locator: str) -> None:
        if not is_staged(locator):
            self.store.delete(locator)
            return
        name = locator.split(":", 1)[1]
        self._drop(name)
        (self._shipped / name).unlink(missing_ok=True)

    def exists(self, locator: str) -> bool:
        if not is_staged(locator):
            return self.store.exists(locator)
        name = locator.split(":", 1)[1]
        if self.path_of(name).exists():
            return True
        forward = self.forward(name)
        return forward is not None and self.store.exists(forward)

    def iter_chunks(self) -> Iterator[tuple[str, ChunkMeta]]:
        """The store's chunks: staged ones are known to the catalog alone."""
        return self.store.iter_chunks()

    def close(self) -> None:
        self.store.close()

    # --- shipping ---------------------------------------------------------------------

    def path_of(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ChunkMissing(name, "staging")
        return self._chunks / name

    def ship(self, chunk: ChunkRef) -> str:
        """Put a staged chunk into the store; its staging file stays until :meth:`shipped`."""
        source = self.path_of(chunk.chunk_hash)
        spool = self.store.properties.spool_dir or str(self._spool)
        fd, copy = tempfile.mkstemp(prefix="ship-", suffix=".spool", dir=spool)
        os.close(fd)
        os.unlink(copy)
        try:
            os.link(source, copy)  # the store takes the link over; the staged file stays
        except FileNotFoundError:
            raise ChunkMissing(chunk.chunk_hash, "staging") from None
        except OSError:  # another file system: a copy
            with open(source, "rb") as src, open(copy, "wb") as dst:
                while block := src.read(BLOCK_SIZE):
                    dst.write(block)
        return self.store.put_file(copy, chunk.meta)

    def shipped(self, chunk_hash: str, locator: str) -> None:
        """The catalog points at ``locator`` now: replace the staging file with a forward
        record, for downloads that still hold the staged locator."""
        record = self._shipped / chunk_hash
        temporary = record.with_suffix(".tmp")
        temporary.write_text(locator, encoding="utf-8")
        os.replace(temporary, record)
        self._drop(chunk_hash)

    def holds(self, name: str) -> bool:
        """Whether the staging file of this chunk (or open pack) is here."""
        return self.path_of(name).exists()

    def forward(self, name: str) -> str | None:
        """The store locator a shipped chunk's forward record names, if it has one."""
        try:
            return (self._shipped / name).read_text(encoding="utf-8").strip() or None
        except (FileNotFoundError, NotADirectoryError):
            return None

    def forget_forwards(self, before: float) -> int:
        """Remove forward records older than ``before`` (no download lasts that long)."""
        gone = 0
        for record in self._shipped.iterdir():
            try:
                if record.stat().st_mtime < before:
                    record.unlink()
                    gone += 1
            except FileNotFoundError:
                pass
        return gone

    def staged_files(self) -> Iterator[tuple[str, float]]:
        """(name, modification time) of every staging file."""
        for path in self._chunks.iterdir():
            try:
                yield path.name, path.stat().st_mtime
            except FileNotFoundError:
                pass

    # --- room -------------------------------------------------------------------------

    def make_room(self, size: int) -> None:
        """Wait until ``size`` more bytes fit under the limit; :class:`StagingFull` if the
        shipper makes no room within :data:`ROOM_WAIT` seconds."""
        deadline = time.monotonic() + ROOM_WAIT
        with self._room:
            while self.pending_bytes + size > self.limit and self.pending_bytes > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.pending_bytes = self._count()  # another process may have shipped
                    if self.pending_bytes + size <= self.limit:
                        break
                    raise StagingFull(self.pending_bytes, self.limit)
                self.shipped_notice()
                self._room.wait(min(left, 1.0))

    def recount(self) -> None:
        """Count the staged bytes afresh: ``davfs ship`` or another process sharing this
        folder may have shipped (and removed) chunks this one counted."""
        counted = self._count()
        with self._room:
            self.pending_bytes = counted
            self._room.notify_all()

    def _count(self) -> int:
        total = 0
        for path in self._chunks.iterdir():
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                pass
        return total

    def _grow(self, size: int) -> None:
        with self._room:
            self.pending_bytes += size

    def _drop(self, name: str) -> None:
        path = self.path_of(name)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        with self._room:
            self.pending_bytes = max(0, self.pending_bytes - size)
            self._room.notify_all()


class Packer:
    """The one open pack small files are appended to (see the module docstring).
    :meth:`add` appends, fsyncs and commits under one lock, so a pack is never sealed
    between a file's bytes and its commit."""

    def __init__(
        self, staging: StagingArea, *, chunk_size: int, seal: Callable[[str, ChunkMeta], bool]
    ) -> None:
        self._staging = staging
        self._chunk_size = chunk_size
        self._seal_in_catalog = seal
        self.below = chunk_size // 4
        """Files smaller than this are packed (a quarter of a chunk: on Telegram a 16 MiB
        file would otherwise cost a whole message)."""
        self._lock = threading.Lock()
        self._open: tuple[str, float, tuple[int, int]] | None = None
        """(pack id, when it was opened, the (format, block size) of all its pieces)"""

    @property
    def current(self) -> str | None:
        """The id of the open pack, if one is open."""
        opened = self._open
        return None if opened is None else opened[0]

    def add(self, spooled: str, meta: ChunkMeta, commit: Callable[[Extent], _T]) -> _T:
        """Append the spooled file (hashed as ``meta``) to the open pack and ``commit``
        it as a piece of the pack; the spool file is removed either way."""
        try:
            with self._lock:
                self._staging.make_room(meta.size)
                hashed_as = (meta.format, meta.block_size)
                if self._open is not None and self._open[2] != hashed_as:
                    self._seal()  # a pack's pieces are all hashed alike, as the pack is
                pack_id, offset = self._append(spooled, meta.size, hashed_as)
                pack_meta = ChunkMeta(
                    pack_id, offset + meta.size, meta.block_size, b"", kind="pack", format=meta.format
                )
                pack = ChunkRef(OPEN + pack_id, pack_meta)
                result = commit(Extent(pack, offset, meta.size, meta.block_hashes))
                if offset + meta.size >= self._chunk_size:
                    self._seal()
                return result
        finally:
            Path(spooled).unlink(missing_ok=True)

    def _append(self, spooled: str, size: int, hashed_as: tuple[int, int]) -> tuple[str, int]:
        if self._open is None:
            self._open = (secrets.token_hex(32), time.monotonic(), hashed_as)
        pack_id = self._open[0]
        path = self._staging.path_of(pack_id)
        try:
            with open(path, "ab") as pack, open(spooled, "rb") as source:
                offset = pack.tell()
                while block := source.read(BLOCK_SIZE):
                    pack.write(block)
                pack.flush()
                os.fdatasync(pack.fileno())
            if offset == 0:
                _fsync_dir(path.parent)
        except OSError as exc:
            raise store_error("staging", exc) from exc
        self._staging._grow(size)
        return pack_id, offset

    def seal_if_older(self, age: float) -> None:
        with self._lock:
            if self._open is not None and time.monotonic() - self._open[1] >= age:
                self._seal()

    def seal_now(self) -> None:
        with self._lock:
            if self._open is not None:
                self._seal()

    def _seal(self) -> None:
        assert self._open is not None
        pack_id, _, (format, block_size) = self._open
        self._open = None
        seal_pack(self._staging, pack_id, self._seal_in_catalog, format=format, block_size=block_size)


def seal_pack(
    staging: StagingArea,
    pack_id: str,
    seal: Callable[[str, ChunkMeta], bool],
    *,
    format: int,
    block_size: int,
) -> None:
    """Hash a pack whole, as its pieces were hashed, and make it an ordinary staged
    chunk (``seal`` records it in the catalog and says whether any file uses it; one no
    file uses is removed)."""
    path = staging.path_of(pack_id)
    hasher = ChunkHasher(block_size, kind="pack", format=format)
    try:
        with open(path, "rb") as pack:
            while block := pack.read(BLOCK_SIZE):
                hasher.update(block)
    except FileNotFoundError:
        return
    hashed = hasher.meta()
    meta = ChunkMeta(pack_id, hashed.size, hashed.block_size, hashed.block_hashes, kind="pack", format=format)
    if seal(pack_id, meta):
        staging.shipped_notice()
    else:
        staging.delete(OPEN + pack_id)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
