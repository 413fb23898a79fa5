"""A ChunkStore double that fails on purpose (borg's ``chunkers/failing.py``).

``FlakyStore(inner, "ppEp")`` wraps another ChunkStore and follows a schedule, one
letter per call, counted separately for puts (``put`` and ``put_file`` alike) and gets:

- ``p`` / ``g`` / ``.``: pass the call through;
- ``E``: raise :class:`~davfs.errors.StoreError` without touching the inner store;
- ``U``: raise :class:`~davfs.errors.StoreUnavailable` (transient, 503);
- ``W``: wait until :attr:`FlakyStore.gate` is set, then pass through (the wait is
  bounded by ``gate_timeout``; on timeout the call raises StoreError so a forgotten gate
  fails a test instead of hanging it).

Calls beyond the end of a schedule pass. ``put_delay`` / ``get_delay`` add a sleep before
every call. :meth:`arm` installs a new schedule and restarts the counts, so a test can
set up content first and then fail exactly the call it means. Every call is recorded in
:attr:`puts` / :attr:`gets` (the locator of a get, the ChunkHash of a put) so a test can
tell which chunks were touched and when.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

from davfs.errors import StoreError, StoreUnavailable
from davfs.stores.base import ChunkMeta, ChunkStore


class FlakyStore:
    """A ChunkStore around another ChunkStore that fails or stalls on a schedule."""

    def __init__(
        self,
        inner: ChunkStore,
        puts: str = "",
        *,
        gets: str = "",
        put_delay: float = 0.0,
        get_delay: float = 0.0,
        gate_timeout: float = 20.0,
    ) -> None:
        self.inner = inner
        self.properties = inner.properties
        self.put_delay = put_delay
        self.get_delay = get_delay
        self.gate_timeout = gate_timeout
        self.gate = threading.Event()
        self._lock = threading.Lock()
        self.puts: list[str] = []
        self.gets: list[str] = []
        self.failures = 0
        self._put_schedule = puts
        self._get_schedule = gets

    def arm(self, puts: str | None = None, *, gets: str | None = None) -> None:
        """Install new schedules (``None`` keeps one) and restart both counts."""
        with self._lock:
            if puts is not None:
                self._put_schedule = puts
            if gets is not None:
                self._get_schedule = gets
            self.puts.clear()
            self.gets.clear()
            self.gate.clear()

    def _step(self, schedule: str, calls: list[str], what: str) -> None:
        with self._lock:
            calls.append(what)
            index = len(calls) - 1
            action = schedule[index] if index < len(schedule) else "."
        if action == "E":
            with self._lock:
                self.failures += 1
            raise StoreError("flaky", f"scheduled failure of call {index + 1} ({what})")
        if action == "U":
            with self._lock:
                self.failures += 1
            raise StoreUnavailable("flaky", 1)
        if action == "W" and not self.gate.wait(self.gate_timeout):
            raise StoreError("flaky", f"gate not opened within {self.gate_timeout} s ({what})")

    def put(self, data: bytes | memoryview, meta: ChunkMeta) -> str:
        if self.put_delay:
            time.sleep(self.put_delay)
        self._step(self._put_schedule, self.puts, meta.chunk_hash)
        return self.inner.put(data, meta)

    def put_file(self, path: str, meta: ChunkMeta) -> str:
        try:
            if self.put_delay:
                time.sleep(self.put_delay)
            self._step(self._put_schedule, self.puts, meta.chunk_hash)
        except BaseException:
            # The contract: the spool file is taken over whether the put succeeds or not.
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            raise
        return self.inner.put_file(path, meta)

    def get(self, locator: str, offset: int, length: int) -> bytes:
        if self.get_delay:
            time.sleep(self.get_delay)
        self._step(self._get_schedule, self.gets, locator)
        return self.inner.get(locator, offset, length)

    def delete(self, locator: str) -> None:
        self.inner.delete(locator)

    def exists(self, locator: str) -> bool:
        return self.inner.exists(locator)

    def iter_chunks(self) -> Iterator[tuple[str, ChunkMeta]]:
        return self.inner.iter_chunks()

    def close(self) -> None:
        self.gate.set()  # release anything still waiting
        self.inner.close()


_check: type[ChunkStore] = FlakyStore
