"""Chunk stores, opened by URL scheme from one table (restic's ``location.Registry``).

``open_store("local:/srv/davfs/store")`` or ``open_store("memory:")``. The Telegram store
registers here once it exists.
"""

from __future__ import annotations

from collections.abc import Callable

from davfs.errors import ConfigError
from davfs.stores.base import ChunkMeta, ChunkStore, StoreProperties
from davfs.stores.local import LocalStore
from davfs.stores.memory import MemoryStore

_OPENERS: dict[str, Callable[[str], ChunkStore]] = {
    "local": lambda rest: LocalStore(rest),
    "memory": lambda rest: MemoryStore(),
}


def open_store(url: str) -> ChunkStore:
    """Open the store named by ``scheme:rest``."""
    scheme, sep, rest = url.partition(":")
    if not sep or scheme not in _OPENERS:
        known = ", ".join(sorted(_OPENERS))
        raise ConfigError("davfs.store", f"{url!r} is not a store URL (known schemes: {known})")
    if scheme == "local" and not rest:
        raise ConfigError("davfs.store", "local: needs a folder, e.g. local:./data/store")
    return _OPENERS[scheme](rest)


__all__ = ["ChunkMeta", "ChunkStore", "LocalStore", "MemoryStore", "StoreProperties", "open_store"]
