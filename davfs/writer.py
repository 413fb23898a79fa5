"""ChunkWriter: streams an upload into chunks and commits it atomically (invariant 3).

As the body arrives it is written to a spool file in the store's spool folder, while a
helper thread computes its ChunkHash and BlockHashes on the other core (hashlib releases
the GIL). Every full chunk is handed to the executor,
which skips it if this upload already had that content, and otherwise gives the spool
file to the store (for the local store an fsync and a rename, no copy; the store keeps
one copy per ChunkHash) and journals it, while the next chunk is still arriving. Chunks never sit in
memory (invariant 5); at most ``in_flight`` spooled chunks wait for the store, which
bounds temporary disk use and pushes back on fast clients.

Nothing becomes visible until :meth:`close`: it waits for every chunk, checks that the
byte count matches the announced size, and commits the version in one catalog
transaction. Any failure before that leaves the previous version (or no file) in place;
chunks already stored are recorded as unreferenced for ``gc``, spool files are removed.
"""

from __future__ import annotations

import logging
import os
import queue
import tempfile
import threading
from collections.abc import Iterable
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from davfs.catalog import Node
from davfs.catalog.uploads import Uploads
from davfs.chunk import BLOCK_SIZE, ChunkHasher, ChunkMeta, ChunkRef
from davfs.errors import DavfsError, IncompleteUpload, UploadError
from davfs.snapshot import Extent
from davfs.staging import Packer
from davfs.stores.base import ChunkStore, store_error

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UploadTarget:
    """Where an upload will land once committed."""

    parent_id: int
    name: str
    path: str
    expect_version: int | None = None
    """Commit only if the file still has this version (or ``catalog.ABSENT``)."""


class _InBackground:
    """Feeds a :class:`ChunkHasher` on a thread of its own.

    Hashing every byte twice on the receiving thread was 44% of a PUT's time (py-spy);
    here it runs on the other core while the receiving thread reads the socket and
    writes the spool file (hashlib releases the GIL). At most ``backlog`` pieces wait,
    which bounds the memory this costs.
    """

    def __init__(self, hashes: ChunkHasher, backlog: int = 8) -> None:
        self._hashes = hashes
        self._queue: queue.Queue[bytes | memoryview | None] = queue.Queue(maxsize=backlog)
        self._thread = threading.Thread(target=self._run, name="davfs-chunk-hash", daemon=True)
        self._thread.start()

    def update(self, piece: bytes | memoryview) -> None:
        self._queue.put(piece)

    def _run(self) -> None:
        while (piece := self._queue.get()) is not None:
            self._hashes.update(piece)

    def meta(self) -> ChunkMeta:
        self._queue.put(None)
        self._thread.join()
        return self._hashes.meta()


class _Spool:
    """The chunk being received: a spool file plus its hashes."""

    def __init__(self, folder: str | None, block_size: int | None) -> None:
        fd, self.path = tempfile.mkstemp(prefix="upload-", suffix=".spool", dir=folder)
        self._file = os.fdopen(fd, "wb", buffering=0)
        self.size = 0
        self._hashes = ChunkHasher(block_size)
        self._background: _InBackground | None = None

    def write(self, piece: memoryview) -> None:
        written = 0
        while written < len(piece):
            written += self._file.write(piece[written:]) or 0
        if self.size == 0:
            self._hashes.update(piece)  # small files never pay for a thread
        else:
            if self._background is None:
                self._background = _InBackground(self._hashes)
            # The hasher reads the piece later: share it only if nobody can change it.
            self._background.update(piece if isinstance(piece.obj, bytes) else bytes(piece))
        self.size += len(piece)

    def finish(self) -> ChunkMeta:
        """Close the file; return its ChunkHash and BlockHashes."""
        self._file.close()
        return self._background.meta() if self._background else self._hashes.meta()

    def discard(self) -> None:
        if self._background is not None:
            self._background.meta()  # stops its thread
        self._file.close()
        _unlink(self.path)


class ChunkWriter:
    """A write-only file object for one upload. Not thread-safe: one writer per request."""

    def __init__(
        self,
        target: UploadTarget,
        uploads: Uploads,
        store: ChunkStore,
        executor: Executor,
        *,
        expected_size: int | None,
        chunk_size: int,
        block_size: int | None = None,
        in_flight: int = 2,
        mtime: float | None = None,
        packer: Packer | None = None,
    ) -> None:
        if chunk_size % (block_size or BLOCK_SIZE):
            raise ValueError("chunk_size must be a multiple of block_size")
        self.target = target
        self._uploads = uploads
        self._store = store
        self._executor = executor
        self.expected_size = expected_size
        self._chunk_size = min(chunk_size, store.properties.max_chunk_size)
        self._block_size = block_size
        self._in_flight = max(1, in_flight)
        self._mtime = mtime
        self._packer = packer
        self._spool: _Spool | None = None
        self._pending: list[tuple[Future[ChunkRef], str]] = []
        self._stored: list[ChunkRef] = []
        self._upload_id: int | None = None
        self._gc_epoch: int | None = None
        """Read before the first chunk is stored; see catalog.uploads.Uploads.commit."""
        self._seen: dict[str, Future[ChunkRef]] = {}
        self._seen_lock = threading.Lock()
        self.received = 0
        self.node: Node | None = None
        self.created = False
        self._finished = False

    # --- file object protocol ----------------------------------------------------

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._finished:
            raise UploadError(self.target.path, "write after close")
        view = memoryview(data).cast("B")
        total = len(view)
        if self.expected_size is not None and self.received + total > self.expected_size:
            raise IncompleteUpload(self.target.path, self.received + total, self.expected_size)
        while view:
            take = min(self._chunk_size - (self._spool.size if self._spool else 0), len(view))
            try:
                if self._spool is None:
                    self._spool = _Spool(self._store.properties.spool_dir, self._block_size)
                self._spool.write(view[:take])
            except OSError as exc:
                raise store_error("spool", exc) from exc
            self.received += take
            view = view[take:]
            if self._spool.size == self._chunk_size:
                if self._upload_id is None:
                    # A multi-chunk upload: journal it so a crash leaves findable chunks.
                    self._upload_id = self._uploads.begin(self.target.path)
                self._ship_chunk()
        return total

    def writelines(self, lines: Iterable[bytes]) -> None:
        for line in lines:
            self.write(line)

    def close(self) -> None:
        """Finish the upload and commit it; raises (and rolls back) on any mismatch."""
        if self._finished:
            return
        try:
            if self.expected_size is not None and self.received != self.expected_size:
                raise IncompleteUpload(self.target.path, self.received, self.expected_size)
            packer = self._packer
            if packer is not None and self._spool is not None and not self._pending and not self._stored:
                if self._spool.size < packer.below:
                    self._commit_packed(packer)
                    return
            if self._spool is not None:
                self._ship_chunk(last=True)
            self._drain(0)
            self.node, self.created = self._uploads.commit(
                self.target.parent_id,
                self.target.name,
                upload_id=self._upload_id,
                stored=[Extent.whole(chunk) for chunk in self._stored],
                size=self.received,
                mtime=self._mtime,
                expect_version=self.target.expect_version,
                gc_epoch=self._gc_epoch,
            )
            self._finished = True
        except BaseException:
            self.abort()
            raise

    def _commit_packed(self, packer: Packer) -> None:
        """A small file: appended to the open pack and committed as a piece of it."""
        spool, self._spool = self._spool, None
        assert spool is not None
        meta = spool.finish()

        def commit(piece: Extent) -> tuple[Node, bool]:
            return self._uploads.commit(
                self.target.parent_id,
                self.target.name,
                upload_id=None,
                stored=[piece],
                size=self.received,
                mtime=self._mtime,
                expect_version=self.target.expect_version,
            )

        self.node, self.created = packer.add(spool.path, meta, commit)
        self._finished = True

    def abort(self) -> None:
        """Give up: nothing becomes visible; stored chunks are left for gc."""
        if self._finished:
            return
        self._finished = True
        if self._spool is not None:
            self._spool.discard()
            self._spool = None
        for future, path in self._pending:
            if future.cancel():
                _unlink(path)
        for future, _ in self._pending:
            if not future.cancelled():
                try:
                    self._stored.append(future.result())
                except BaseException:  # noqa: B036 - the upload already failed
                    pass
        self._pending.clear()
        if self._upload_id is not None or self._stored:
            try:
                self._uploads.abort(self._upload_id, self._stored)
            except Exception:  # never hide the error that made us abort
                log.exception("could not journal aborted upload of %s", self.target.path)
        log.info("upload of %s aborted after %d bytes", self.target.path, self.received)

    @property
    def closed(self) -> bool:
        return self._finished

    # --- chunks ------------------------------------------------------------------

    def _ship_chunk(self, *, last: bool = False) -> None:
        if self._gc_epoch is None:
            self._gc_epoch = self._uploads.gc_epoch()
        self._drain(self._in_flight - 1)
        spool, self._spool = self._spool, None
        assert spool is not None
        meta = spool.finish()
        if last and not self._pending:
            # Nothing to overlap with (a small file): skip the hand-off to the executor.
            done: Future[ChunkRef] = Future()
            try:
                done.set_result(self._store_chunk(spool.path, meta))
            except BaseException as exc:
                done.set_exception(exc)
            self._pending.append((done, spool.path))
            return
        future = self._executor.submit(self._store_chunk, spool.path, meta)
        self._pending.append((future, spool.path))

    def _drain(self, keep: int) -> None:
        while len(self._pending) > keep:
            future, _ = self._pending.pop(0)
            try:
                self._stored.append(future.result())
            except DavfsError:
                raise
            except Exception as exc:
                raise UploadError(self.target.path, exc) from exc

    def _store_chunk(self, path: str, meta: ChunkMeta) -> ChunkRef:
        """Runs on the executor; owns the spool file at ``path`` from here on."""
        with self._seen_lock:
            earlier = self._seen.get(meta.chunk_hash)
            if earlier is None:
                mine: Future[ChunkRef] = Future()
                self._seen[meta.chunk_hash] = mine
        if earlier is not None:
            _unlink(path)
            return earlier.result()  # the same content earlier in this upload
        try:
            # A content-addressed store is always given the chunk, even if the catalog
            # knows this content: it keeps one copy, and a copy damaged since is replaced
            # by these freshly hashed bytes. Elsewhere (Telegram) a second put is a second
            # message, so a chunk the catalog knows and the store still has is reused.
            known = (
                None
                if self._store.properties.content_addressed
                else self._uploads.locator_of(meta.chunk_hash)
            )
            if known is not None and self._store.exists(known):
                stored = ChunkRef(known, meta)
                mine.set_result(stored)
                return stored
            locator = self._store.put_file(path, meta)
            stored = ChunkRef(locator, meta)
            if self._upload_id is not None:
                self._uploads.journal_chunk(self._upload_id, meta.chunk_hash, locator)
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        finally:
            _unlink(path)  # adopted by the store, or a duplicate
        mine.set_result(stored)
        return stored


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
