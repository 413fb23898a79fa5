"""Chunk stores, opened by URL scheme from one table (restic's ``location.Registry``).

``open_store("local:/srv/davfs/store")`` or ``open_store("memory:")``;
``faulty:SEED:RATES:INNER`` wraps another store in :class:`FaultyStore` for the
benchmarks (``faulty:7:put.U=0.02,get.C=0.01:local:/tmp/store``). The Telegram
store needs more than a URL (accounts, channel, pacing), so :func:`open_configured_store`
opens it from the whole configuration; telethon is imported only when it is used.
"""

from __future__ import annotations

from collections.abc import Callable

from davfs.config import DavfsConfig
from davfs.errors import ConfigError
from davfs.stores.base import ChunkMeta, ChunkStore, StoreProperties
from davfs.stores.local import SPOOL_ABANDONED_AFTER, LocalStore, remove_abandoned_spool
from davfs.stores.memory import MemoryStore

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


def open_store(url: str) -> ChunkStore:
    """Open the store named by ``scheme:rest``."""
    scheme, sep, rest = url.partition(":")
    if not sep or scheme not in _OPENERS:
        known = ", ".join(sorted(_OPENERS))
        raise ConfigError("davfs.store", f"{url!r} is not a store URL (known schemes: {known})")
    if scheme == "local" and not rest:
        raise ConfigError("davfs.store", "local: needs a folder, e.g. local:./data/store")
    return _OPENERS[scheme](rest)


def open_configured_store(config: DavfsConfig) -> ChunkStore:
    """The store ``davfs.store`` names, with its settings."""
    if config.telegram is not None:
        from davfs.stores.telegram_accounts import open_telegram_store

        spool = config.data_dir / "spool"
        spool.mkdir(parents=True, exist_ok=True)
        remove_abandoned_spool(spool, SPOOL_ABANDONED_AFTER)
        return open_telegram_store(config.telegram, config.data_dir, spool_dir=str(spool))
    return open_store(config.store)


__all__ = [
    "ChunkMeta",
    "ChunkStore",
    "LocalStore",
    "MemoryStore",
    "StoreProperties",
    "open_configured_store",
    "open_store",
]
