"""The shipper: moves staged chunks into the chunk store, in the background, paced by
the store (see :mod:`davfs.staging`).

One instance ships at a time (a catalog lock); each chunk is put into the store, then
the catalog is switched to the new locator in one transaction, then its staging file is
replaced by a forward record. A crash anywhere in between ships it again on the next
run; a copy stored twice that way is a stray, which gc collects. A store that is
unavailable (Telegram's FLOOD_WAIT, however long) delays shipping by as long as it asks
and is retried; any other failure backs off exponentially up to :data:`MAX_BACKOFF`.
No client request waits for any of it.

Also here: open packs are sealed after :data:`~davfs.staging.PACK_AGE`, packs left open
by a process that died are sealed, staging files no catalog row names (an upload
that died between staging and committing) are removed after an hour, and forward
records after the gc grace period.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from davfs.catalog import Catalog
from davfs.chunk import ChunkRef
from davfs.errors import ChunkMissing, DavfsError, StoreUnavailable
from davfs.staging import PACK_AGE, STAGED, Packer, StagingArea, seal_pack

log = logging.getLogger(__name__)

MAX_BACKOFF = 300.0
"""Longest pause after a failed shipment."""
ORPHAN_AGE = 3600.0
"""Seconds a staging file no catalog row names is kept (an upload may still commit it)."""
STUCK_AFTER = 300.0
"""Seconds without a successful shipment, while chunks wait, after which the log says
shipping is stuck (and why)."""
_HOUSEKEEPING = 60.0


@dataclass(frozen=True)
class ShippingState:
    """How shipping goes in this process, for the health endpoint (the last store
    error is kept in the catalog: :meth:`StagingQueries.trouble`)."""

    bytes_per_second: float
    """Over the last minute."""
    waiting_until: float | None
    """When the shipper tries again after a failure, if it is waiting."""


class Shipper:
    """The background job (see the module docstring)."""

    def __init__(
        self, catalog: Catalog, staging: StagingArea, packer: Packer, *, forward_keep: float
    ) -> None:
        self._catalog = catalog
        self._staging = staging
        self._packer = packer
        self._forward_keep = forward_keep
        self._one_at_a_time = threading.Lock()
        """Shipping runs on the shipper's thread and, for ``davfs ship``, on the caller's."""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="davfs-shipper", daemon=True)
        self._parallel = max(1, min(4, staging.store.properties.concurrency))
        self._pool = ThreadPoolExecutor(self._parallel, thread_name_prefix="davfs-ship")
        self._shipped: deque[tuple[float, int]] = deque()
        self._error: tuple[str, float] | None = None
        self._backoff = 0.0
        self._waiting_until: float | None = None
        self._last_success = time.time()
        self._last_housekeeping = 0.0
        self._warned_stuck = False
        staging.shipped_notice = self._wake.set

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._packer.seal_now()

    def drain(self, timeout: float) -> int:
        """Seal the open pack and ship everything staged, now (``davfs ship``, tests);
        returns how many staged chunks are left when ``timeout`` seconds are up or the
        store fails."""
        self._packer.seal_now()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._backoff = 0.0
            if not self.run_once():
                break
        return len(self._catalog.staging.to_ship(1_000_000))

    def state(self) -> ShippingState:
        now = time.time()
        recent = [(when, size) for when, size in list(self._shipped) if now - when <= 60]
        rate = sum(size for _, size in recent) / 60.0
        return ShippingState(rate, self._waiting_until)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception:  # noqa: BLE001 - the shipper must outlive any one failure
                log.exception("shipping failed; trying again")
                worked = False
            if self._backoff:
                self._waiting_until = time.time() + self._backoff
                self._stop.wait(self._backoff)
                self._waiting_until = None
            elif not worked:
                self._wake.wait(min(PACK_AGE / 3, 5.0))
                self._wake.clear()

    def run_once(self) -> bool:
        """Seal what is due and ship one batch; whether anything was shipped."""
        self._packer.seal_if_older(PACK_AGE)
        if time.time() - self._last_housekeeping > _HOUSEKEEPING:
            self._housekeeping()
        with self._one_at_a_time, self._catalog.db.single_instance("shipper") as mine:
            if not mine:
                return False
            batch = self._catalog.staging.to_ship(self._parallel * 2)
            if not batch:
                self._last_success = time.time()
                self._warned_stuck = False
                return False
            self._backoff = 0.0  # a failure in this batch sets it again
            results = list(self._pool.map(self._ship, batch))
        if any(results):
            self._last_success = time.time()
            self._warned_stuck = False
            if self._error is not None and self._backoff == 0.0:
                self._error = None
                self._catalog.staging.note_trouble(None)
        return any(results)

    def _ship(self, chunk: ChunkRef) -> bool:
        try:
            locator = self._staging.ship(chunk)
        except StoreUnavailable as exc:  # FLOOD_WAIT, a timeout: as long as the store asks
            self._failed(chunk, exc, wait=float(exc.retry_after))
            return False
        except ChunkMissing as exc:
            # Shipped already: an upload re-staged content while an earlier copy was
            # being shipped, and the shipment removed the file the upload had just
            # written (the same bytes) before the upload committed the staging locator.
            # The forward record says where those bytes are.
            forward = self._staging.forward(chunk.chunk_hash)
            if forward is None or not self._staging.store.exists(forward):
                self._failed(chunk, exc, wait=min(MAX_BACKOFF, max(1.0, self._backoff * 2)))
                return False
            locator = forward
        except DavfsError as exc:
            self._failed(chunk, exc, wait=min(MAX_BACKOFF, max(1.0, self._backoff * 2)))
            return False
        if self._catalog.staging.shipped(chunk.chunk_hash, STAGED + chunk.chunk_hash, locator):
            self._staging.shipped(chunk.chunk_hash, locator)
            self._shipped.append((time.time(), chunk.size))
            while self._shipped and time.time() - self._shipped[0][0] > 60:
                self._shipped.popleft()
        elif self._catalog.staging.locator_of(chunk.chunk_hash) != locator:
            # gc collected the staged chunk meanwhile: the stored copy is nobody's (in a
            # content-addressed store it may be the one copy another version uses).
            self._staging.store.delete(locator)
        return True

    def _failed(self, chunk: ChunkRef, exc: DavfsError, *, wait: float) -> None:
        if self._error is None or self._error[0] != str(exc):
            self._catalog.staging.note_trouble(str(exc))
        self._error = (str(exc), time.time())
        self._backoff = max(self._backoff, wait)
        stuck_for = time.time() - self._last_success
        if stuck_for > STUCK_AFTER and not self._warned_stuck:
            self._warned_stuck = True
            log.warning("shipping is stuck for %.0f s: %s; staged data waits on this machine", stuck_for, exc)
        else:
            log.info(
                "shipping chunk %s failed (%s); trying again in %.0f s", chunk.chunk_hash[:16], exc, wait
            )

    def _housekeeping(self) -> None:
        self._last_housekeeping = time.time()
        now = time.time()
        open_packs = self._catalog.staging.open_packs()
        files = dict(self._staging.staged_files())
        for pack_id in open_packs.keys() - {self._packer.current}:
            changed = files.get(pack_id)
            if changed is None or now - changed > 4 * PACK_AGE:  # left open by a process that died
                log.info("sealing pack %s, left open", pack_id[:16])
                format, block_size = open_packs[pack_id]
                seal_pack(
                    self._staging, pack_id, self._catalog.staging.seal, format=format, block_size=block_size
                )
        known = self._catalog.staging.known(files)
        for name, changed in files.items():
            if name not in known and name != self._packer.current and now - changed > ORPHAN_AGE:
                log.info("removing staged chunk %s, which no upload committed", name[:16])
                self._staging.delete(STAGED + name)
        self._staging.forget_forwards(now - self._forward_keep)
        self._staging.recount()
