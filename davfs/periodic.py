"""The server's background jobs (manifests, gc, catalog backups) all have one shape: run
a job every ``interval`` seconds on a thread of its own, survive any one failure, stop
when the server closes. :class:`Periodic` is that shape, once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from davfs.errors import StoreUnavailable

log = logging.getLogger(__name__)


class Periodic:
    """Calls ``job`` every ``interval`` seconds until :meth:`close` (never if ``interval``
    is 0). A run that raises is logged and the next one tries again."""

    def __init__(self, name: str, interval: float, job: Callable[[], object]) -> None:
        self._name = name
        self._interval = interval
        self._job = job
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"davfs-{name}", daemon=True)

    def start(self) -> None:
        if self._interval > 0:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._job()
            except StoreUnavailable as exc:  # expected now and then (a FLOOD_WAIT): no traceback
                log.warning("%s waits: %s; trying again in %.0f s", self._name, exc, self._interval)
            except Exception:  # noqa: BLE001 - the schedule must outlive any one failure
                log.exception("%s failed; trying again in %.0f s", self._name, self._interval)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
