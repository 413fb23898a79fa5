"""ChunkReader: a seekable, lazy, hash-verifying file object over a FileSnapshot.

This is the trust boundary (invariant 2): bytes from a store are returned only after
the BlockHash of the block that holds them matched the catalog
(:func:`davfs.chunk.block_hash`, in the chunk's format). It is also where the
seed's lesson lives (invariant 1): the reader holds a snapshot, a store and an executor,
and nothing request-scoped — no catalog connection, no WSGI environ, no thread-local —
so wsgidav can iterate the body after the request handler has returned, on any thread.

The store is read in *windows* of up to 1 MiB (one block of a format-1 chunk, sixteen
of a format-2 one), fetched on demand; a range request fetches and verifies only the
blocks it covers. While reads are sequential, the next ``window`` windows are fetched
ahead on the executor (bounded memory: at most ``window`` of them per reader,
invariant 5). Hashing runs on those worker threads too (the hashes release the GIL).
"""

from __future__ import annotations

import bisect
import io
import logging
import threading
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from davfs.chunk import BLOCK_SIZE, block_hash
from davfs.errors import IntegrityError
from davfs.snapshot import Extent, FileSnapshot
from davfs.stores.base import ChunkStore

log = logging.getLogger(__name__)


class IntegrityCounter:
    """How many blocks failed verification since start (exposed for monitoring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failures = 0

    def add(self) -> None:
        with self._lock:
            self.failures += 1


integrity_failures = IntegrityCounter()


@dataclass(frozen=True, slots=True)
class _Window:
    """Up to :data:`~davfs.chunk.BLOCK_SIZE` bytes of one extent, read from the store in
    one call; its blocks are verified one by one (format 1: one block of 1 MiB; format
    2: sixteen of 64 KiB, so a short range needs only the blocks it touches)."""

    file_offset: int
    extent: Extent
    start: int
    """Offset of the window in its extent (a multiple of the block size)."""
    length: int

    @property
    def block_size(self) -> int:
        return self.extent.chunk.meta.block_size

    def blocks_covering(self, low: int, high: int) -> tuple[int, int]:
        """Window-relative [low, high) widened to whole blocks."""
        size = self.block_size
        return low // size * size, min(self.length, -(-high // size) * size)


class _WindowMap:
    """File offsets ↔ windows, by arithmetic over the extents (a 2 GiB file has 2,048
    windows; building them all for every 64 KiB range request would cost more than the
    request)."""

    def __init__(self, snapshot: FileSnapshot) -> None:
        self._extents = snapshot.extents
        self._starts: list[int] = []  # file offset of each extent
        self._first: list[int] = []  # global index of each extent's first window
        self._spans: list[int] = []  # window length in each extent
        position = count = 0
        for extent in snapshot.extents:
            block_size = extent.chunk.meta.block_size
            span = max(1, BLOCK_SIZE // block_size) * block_size
            self._starts.append(position)
            self._first.append(count)
            self._spans.append(span)
            position += extent.length
            count += -(-extent.length // span)
        self.count = count

    def index_at(self, offset: int) -> int:
        e = bisect.bisect_right(self._starts, offset) - 1
        return self._first[e] + (offset - self._starts[e]) // self._spans[e]

    def window(self, index: int) -> _Window:
        e = bisect.bisect_right(self._first, index) - 1
        extent = self._extents[e]
        start = (index - self._first[e]) * self._spans[e]
        return _Window(self._starts[e] + start, extent, start, min(self._spans[e], extent.length - start))


@dataclass(frozen=True, slots=True)
class _Fetched:
    """Verified bytes of one window, from ``low`` (window-relative) on; ``damage`` is the
    error of the block right after them, if a damaged block cut them short."""

    low: int
    data: bytes
    damage: IntegrityError | None = None

    def holds(self, wanted: int) -> bool:
        return self.low <= wanted < self.low + len(self.data)

    def damage_at(self, wanted: int, block_size: int) -> IntegrityError | None:
        """The error of the damaged block that cut these bytes short, if ``wanted`` is in it."""
        end = self.low + len(self.data)
        return self.damage if end <= wanted < end + block_size else None


def fetch_window(store: ChunkStore, path: str, window: _Window, low: int, high: int) -> _Fetched:
    """Get the blocks of ``window`` covering window-relative [low, high) from the store
    and verify each. Never returns an unverified byte: a damaged block is logged and
    counted, and ends the bytes returned (its error raised now if it is the first, else
    when a read reaches it)."""
    low, high = window.blocks_covering(low, high)
    extent, block_size = window.extent, window.block_size
    chunk = extent.chunk
    data = store.get(chunk.locator, extent.offset + window.start + low, high - low)
    view = memoryview(data)
    for start in range(0, high - low, block_size):
        index = (window.start + low + start) // block_size
        expected = extent.block_digest(index)
        actual = block_hash(view[start : start + block_size], chunk.meta.format)
        if actual == expected:
            continue
        integrity_failures.add()
        log.error(
            "integrity failure: path=%s chunk=%s offset=%d locator=%s expected=%s got=%s",
            path,
            chunk.chunk_hash,
            extent.offset + window.start + low + start,
            chunk.locator,
            expected.hex(),
            actual.hex(),
        )
        damage = IntegrityError(index, chunk.chunk_hash, expected.hex(), actual.hex())
        if start == 0:
            raise damage
        return _Fetched(low, data[:start], damage)
    return _Fetched(low, data)


class ChunkReader(io.RawIOBase):
    """Read-only, seekable view of one file version."""

    def __init__(
        self,
        snapshot: FileSnapshot,
        store: ChunkStore,
        executor: Executor,
        *,
        window: int = 8,
    ) -> None:
        super().__init__()
        self.snapshot = snapshot
        self._store = store
        self._executor = executor
        self._window = max(0, window)
        self._windows = _WindowMap(snapshot)
        self._position = 0
        self._pending: dict[int, Future[_Fetched]] = {}
        self._current: tuple[int, _Fetched] | None = None
        self._last_index = -1
        self._read_end = snapshot.size
        self._prefetch_end = self._windows.count

    # --- file object protocol ----------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._position + offset
        elif whence == io.SEEK_END:
            target = self.snapshot.size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if target < 0:
            raise ValueError("negative seek position")
        self._position = target
        return target

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read from closed ChunkReader")
        remaining = self.snapshot.size - self._position
        whole = size is None or size < 0
        size = max(0, remaining) if size is None or size < 0 else min(size, max(0, remaining))
        if size == 0:
            return b""
        pieces: list[bytes] = []
        while size > 0:
            index = self._windows.index_at(self._position)
            window = self._windows.window(index)
            wanted = self._position - window.file_offset
            try:
                fetched = self._window_data(index, window, wanted)
            except IntegrityError:
                if whole or not pieces:
                    raise
                break  # a short read: the verified bytes before the damage; the next read raises
            data, start = fetched.data, wanted - fetched.low
            take = min(size, len(data) - start)
            piece = data if (start == 0 and take == len(data)) else data[start : start + take]
            pieces.append(piece)
            self._position += take
            size -= take
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        if not self.closed:
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
            self._current = None
        super().close()

    # --- windows -----------------------------------------------------------------

    def prime(self, offset: int = 0, end: int | None = None) -> None:
        """Fetch and verify the bytes at ``offset`` now, so an error surfaces as a clean
        HTTP error before the response starts (invariant 2). ``end`` (exclusive) is where
        the caller will stop reading: nothing past it is fetched, ahead or around."""
        if end is not None:
            self._read_end = end = min(end, self.snapshot.size)
            self._prefetch_end = self._windows.index_at(end - 1) + 1 if end > 0 else 0
        if 0 <= offset < self.snapshot.size:
            index = self._windows.index_at(offset)
            window = self._windows.window(index)
            self._window_data(index, window, offset - window.file_offset, prefetch=False)

    def _window_data(self, index: int, window: _Window, wanted: int, *, prefetch: bool = True) -> _Fetched:
        """Verified bytes of window ``index`` that include window-relative ``wanted``."""
        current = self._current
        if current is not None and current[0] == index:
            fetched = current[1]
            if fetched.holds(wanted):
                return fetched
            if damage := fetched.damage_at(wanted, window.block_size):
                raise damage
        sequential = index == self._last_index + 1
        future = self._pending.pop(index, None)
        for stale in [i for i in self._pending if i < index or i > index + self._window]:
            self._pending.pop(stale).cancel()
        if prefetch and sequential:
            for ahead in range(index + 1, min(index + 1 + self._window, self._prefetch_end)):
                if ahead not in self._pending:
                    self._pending[ahead] = self._executor.submit(self._fetch, self._windows.window(ahead), 0)
        fetched = future.result() if future is not None else _Fetched(0, b"")
        if damage := fetched.damage_at(wanted, window.block_size):
            raise damage
        if not fetched.holds(wanted):
            fetched = self._fetch(window, wanted)
        self._current = (index, fetched)
        self._last_index = index
        return fetched

    def _fetch(self, window: _Window, wanted: int) -> _Fetched:
        """The window's blocks from ``wanted`` up to where the caller stops reading."""
        until = max(self._read_end - window.file_offset, wanted + 1)
        return fetch_window(self._store, self.snapshot.path, window, wanted, min(window.length, until))
