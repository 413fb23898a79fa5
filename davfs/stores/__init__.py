"""Chunk stores, opened by URL scheme from one table (restic's ``location.Registry``).

``open_store("local:/srv/davfs/store")`` or ``open_store("memory:")``;
``faulty:SEED:RATES:INNER`` wraps another store in :class:`FaultyStore` for the
benchmarks (``faulty:7:put.U=0.02,get.C=0.01:local:/tmp/store``). ``telegram`` needs
its settings and the data folder (the saved sessions, a spool folder); telethon is
imported only when it is used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from davfs.errors import ConfigError
from davfs.stores.base import ChunkStore, StoreProperties
from davfs.stores.local import SPOOL_ABANDONED_AFTER, LocalStore, remove_abandoned_spool
from davfs.stores.memory import MemoryStore
from davfs.stores.settings import TelegramSettings

_OPENERS: dict[str, Callable[[str], ChunkStore]] = {
    "local": lambda rest: LocalStore(rest),
    "memory": lambda rest: MemoryStore(),
    "faulty": lambda rest: _open_faulty(rest),
}


def _open_faulty(rest: str) -> ChunkStore:
    from davfs.stores.faulty import FaultPlan, FaultyStore

    seed, rates, inner = (rest.split(":", 2) + ["", ""])[:3]
    try:
        plan = FaultPlan.parse(seed, rates)
    except ValueError as exc:
        raise ConfigError(
            "davfs.store", f"faulty:SEED:RATES:INNER, e.g. faulty:7:put.U=0.02:local:/tmp/s ({exc})"
        ) from None
    return FaultyStore(open_store(inner), plan)


def open_store(
    url: str, *, telegram: TelegramSettings | None = None, data_dir: Path | None = None
) -> ChunkStore:
    """Open the store named by ``scheme:rest`` (or ``telegram``, with its settings and
    the data folder that holds its sessions)."""
    if url == "telegram":
        if telegram is None or data_dir is None:
            raise ConfigError("davfs.store", "telegram needs the davfs.telegram settings and a data folder")
        from davfs.stores.telegram_accounts import open_telegram_store

        spool = data_dir / "spool"
        spool.mkdir(parents=True, exist_ok=True)
        remove_abandoned_spool(spool, SPOOL_ABANDONED_AFTER)
        return open_telegram_store(telegram, data_dir, spool_dir=str(spool))
    scheme, sep, rest = url.partition(":")
    if not sep or scheme not in _OPENERS:
        known = ", ".join(sorted([*_OPENERS, "telegram"]))
        raise ConfigError("davfs.store", f"{url!r} is not a store URL (known schemes: {known})")
    if scheme == "local" and not rest:
        raise ConfigError("davfs.store", "local: needs a folder, e.g. local:./data/store")
    return _OPENERS[scheme](rest)


__all__ = ["ChunkStore", "LocalStore", "MemoryStore", "StoreProperties", "TelegramSettings", "open_store"]
