"""ChunkWriter: streams an upload into chunks and commits it atomically (invariant 3).

The body is copied into a chunk buffer as it arrives and BlockHashes are computed on
the receiving thread; every full chunk is handed to the executor, which computes its
ChunkHash, skips it if this upload or the catalog already has that content (dedup), stores it and
journals it, while the next chunk is still arriving. At most ``in_flight`` chunks wait
for the store, so memory is bounded by ``(in_flight + 1) × chunk_size`` (invariant 5).

Nothing becomes visible until :meth:`close`: it waits for every chunk, checks that the
byte count matches the announced size, and commits the version in one catalog
transaction. Any failure before that leaves the previous version (or no file) in
place; the chunks already stored are recorded as unreferenced for ``gc``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from davfs.catalog import Catalog, Node, StoredChunk
from davfs.errors import DavfsError, IncompleteUpload, UploadError
from davfs.snapshot import BLOCK_SIZE
from davfs.stores.base import ChunkMeta, ChunkStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UploadTarget:
    """Where an upload will land once committed."""

    parent_id: int
    name: str
    path: str


class ChunkWriter:
    """A write-only file object for one upload. Not thread-safe: one writer per request."""

    def __init__(
        self,
        target: UploadTarget,
        catalog: Catalog,
        store: ChunkStore,
        executor: Executor,
        *,
        expected_size: int | None,
        chunk_size: int,
        block_size: int = BLOCK_SIZE,
        in_flight: int = 2,
        mtime: float | None = None,
    ) -> None:
        if chunk_size % block_size:
            raise ValueError("chunk_size must be a multiple of block_size")
        self.target = target
        self._catalog = catalog
        self._store = store
        self._executor = executor
        self.expected_size = expected_size
        self._chunk_size = min(chunk_size, store.properties.max_chunk_size)
        self._block_size = block_size
        self._in_flight = max(1, in_flight)
        self._mtime = mtime
        self._buffer = bytearray(self._chunk_size)
        self._filled = 0
        self._block_digests: list[bytes] = []
        self._hashed_upto = 0
        self._futures: list[Future[StoredChunk]] = []
        self._stored: list[StoredChunk] = []
        self._upload_id: int | None = None
        self._seen: dict[str, Future[StoredChunk]] = {}
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
        self.received += total
        if self.expected_size is not None and self.received > self.expected_size:
            raise IncompleteUpload(self.target.path, self.received, self.expected_size)
        while view:
            room = self._chunk_size - self._filled
            take = min(room, len(view))
            self._buffer[self._filled : self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
            self._hash_full_blocks()
            if self._filled == self._chunk_size:
                if self._upload_id is None:
                    # A multi-chunk upload: journal it so a crash leaves findable chunks.
                    self._upload_id = self._catalog.begin_upload(self.target.path)
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
            if self._filled:
                self._hash_tail()
                self._ship_chunk()
            self._drain(0)
            self.node, self.created = self._catalog.commit_file(
                self.target.parent_id,
                self.target.name,
                upload_id=self._upload_id,
                stored=self._stored,
                size=self.received,
                mtime=self._mtime,
            )
            self._finished = True
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Give up: nothing becomes visible; stored chunks are left for gc."""
        if self._finished:
            return
        self._finished = True
        for future in self._futures:
            future.cancel()
        for future in self._futures:
            if not future.cancelled():
                try:
                    self._stored.append(future.result())
                except BaseException:  # noqa: B036 - the upload already failed
                    pass
        self._futures.clear()
        self._buffer = bytearray()
        if self._upload_id is not None or self._stored:
            try:
                self._catalog.abort_upload(self._upload_id or 0, self._stored)
            except DavfsError:
                log.exception("could not journal aborted upload of %s", self.target.path)
        log.info("upload of %s aborted after %d bytes", self.target.path, self.received)

    @property
    def closed(self) -> bool:
        return self._finished

    # --- chunks ------------------------------------------------------------------

    def _hash_full_blocks(self) -> None:
        view = memoryview(self._buffer)
        while self._filled - self._hashed_upto >= self._block_size:
            end = self._hashed_upto + self._block_size
            self._block_digests.append(hashlib.sha256(view[self._hashed_upto : end]).digest())
            self._hashed_upto = end

    def _hash_tail(self) -> None:
        if self._filled > self._hashed_upto:
            view = memoryview(self._buffer)
            self._block_digests.append(hashlib.sha256(view[self._hashed_upto : self._filled]).digest())
            self._hashed_upto = self._filled

    def _ship_chunk(self) -> None:
        self._drain(self._in_flight - 1)
        data = memoryview(self._buffer)[: self._filled]
        digests = b"".join(self._block_digests)
        buffer = self._buffer
        self._futures.append(self._executor.submit(self._store_chunk, buffer, data, digests))
        self._buffer = bytearray(self._chunk_size)
        self._filled = 0
        self._hashed_upto = 0
        self._block_digests = []

    def _drain(self, keep: int) -> None:
        while len(self._futures) > keep:
            future = self._futures.pop(0)
            try:
                self._stored.append(future.result())
            except DavfsError:
                raise
            except Exception as exc:
                raise UploadError(self.target.path, exc) from exc

    def _store_chunk(self, _owner: bytearray, data: memoryview, digests: bytes) -> StoredChunk:
        chunk_hash = hashlib.sha256(data).hexdigest()
        with self._seen_lock:
            earlier = self._seen.get(chunk_hash)
            if earlier is None:
                mine: Future[StoredChunk] = Future()
                self._seen[chunk_hash] = mine
        if earlier is not None:
            return earlier.result()  # the same content earlier in this upload
        try:
            stored = self._catalog.find_chunk(chunk_hash)
            if stored is None:
                meta = ChunkMeta(chunk_hash, len(data), self._block_size, digests)
                locator = self._store.put(data, meta)
                stored = StoredChunk(chunk_hash, locator, len(data), self._block_size, digests)
            if self._upload_id is not None:
                self._catalog.journal_chunk(self._upload_id, chunk_hash, stored.locator)
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        mine.set_result(stored)
        return stored
