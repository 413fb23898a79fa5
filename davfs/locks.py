"""WebDAV locks for wsgidav's lock manager, kept in the catalog and bounded.

wsgidav's shelve storage read every lock on every listing, DELETE and MOVE, never
shrank its file (60 LOCKs with 1 MiB owners made it 63 MB), and took about 5 ms per
LOCK or UNLOCK. :class:`DavfsLockStorage` keeps locks in the catalog
(:mod:`davfs.catalog.locks`): one indexed lookup per question, expired locks deleted,
shared by every instance on a PostgreSQL catalog, and bounded: an owner is at most
:data:`MAX_OWNER` bytes, a user holds at most :data:`MAX_PER_USER` locks and the drive
:data:`MAX_LOCKS`; past that a LOCK is refused with 507. Lock timeouts are held to
:data:`~davfs.http_policy.LOCK_TIMEOUT_MAX` (the Timeout header is bounded before
wsgidav sees it; this bounds refreshes too).
"""

from __future__ import annotations

import time
from typing import Any

from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_INSUFFICIENT_STORAGE,
    DAVError,
    DAVErrorCondition,
    PRECONDITION_CODE_LockConflict,
)
from wsgidav.lock_man.lock_manager import LockManager, generate_lock_token, normalize_lock_root, validate_lock

from davfs.catalog.locks import LockTable
from davfs.http_policy import LOCK_TIMEOUT_DEFAULT, LOCK_TIMEOUT_MAX

MAX_OWNER = 4096
"""Bytes of a lock's owner (clients send a name or a URL; Explorer ``DOMAIN\\user``)."""
MAX_PER_USER = 1000
"""Live locks one user may hold (Explorer holds one per file it is copying)."""
MAX_LOCKS = 100_000
"""Live locks in the whole drive."""


class DavfsLockManager(LockManager):  # type: ignore[misc]
    """wsgidav's lock manager, asking for the locks on a path and all its ancestors in
    one question instead of one per ancestor (every write checks them)."""

    def get_indirect_url_lock_list(self, url: str, *, principal: str | None = None) -> list[dict[str, Any]]:
        url = normalize_lock_root(url)
        return [
            lock
            for lock in self.storage.covering(url)
            if (lock["root"] == url or lock["depth"] == "infinity")
            and (principal is None or principal == lock["principal"])
        ]

    def _get_write_conflicts(
        self, url: str, depth: str, token_list: list[str], principal: str | None
    ) -> DAVErrorCondition:
        conflicts = DAVErrorCondition(PRECONDITION_CODE_LockConflict)
        for lock in self.get_indirect_url_lock_list(url):
            if not (principal == lock["principal"] and lock["token"] in token_list):
                conflicts.add_href(lock["root"])
        if depth == "infinity":
            below = self.storage.get_lock_list(
                url, include_root=False, include_children=True, token_only=False
            )
            for lock in below:
                conflicts.add_href(lock["root"])
        return conflicts


class DavfsLockStorage:
    """wsgidav's lock storage interface (``lock_man.lock_storage``) over a LockTable."""

    def __init__(self, table: LockTable) -> None:
        self._table = table

    def __repr__(self) -> str:
        return "DavfsLockStorage"

    def open(self) -> None:
        """Nothing to open: the catalog is open."""

    def close(self) -> None:
        """Nothing to close: the catalog is the Drive's."""

    def cleanup(self) -> None:
        self._table.remove_expired()

    def clear(self) -> None:
        self._table.clear()

    def get(self, token: str) -> dict[str, Any] | None:
        lock = self._table.get(token)
        return None if lock is None else _as_wsgidav(lock)

    def create(self, path: str, lock: dict[str, Any]) -> dict[str, Any]:
        """Store a new lock on ``path``; fills in root, timeout, expire and token."""
        # wsgidav serializes the owner element with its tail: the whitespace after it.
        owner = (lock.get("owner") or b"").rstrip()
        lock["owner"] = owner
        if len(owner) > MAX_OWNER:
            raise DAVError(HTTP_BAD_REQUEST, context_info=f"a lock owner may be at most {MAX_OWNER} bytes")
        lock["root"] = normalize_lock_root(path)
        lock["timeout"] = _bounded(lock.get("timeout"))
        lock["expire"] = time.time() + lock["timeout"]
        validate_lock(lock)
        lock["token"] = generate_lock_token()
        row = {**lock, "owner": _text(owner)}
        if not self._table.add(row, per_principal=MAX_PER_USER, in_total=MAX_LOCKS):
            raise DAVError(
                HTTP_INSUFFICIENT_STORAGE,
                context_info=f"too many locks (at most {MAX_PER_USER} per user, {MAX_LOCKS} in all); "
                "unlock some or let them expire",
            )
        return lock

    def refresh(self, token: str, *, timeout: float) -> dict[str, Any]:
        lock = self._table.refresh(token, _bounded(timeout))
        if lock is None:
            raise ValueError(f"no lock {token}")
        return _as_wsgidav(lock)

    def delete(self, token: str) -> bool:
        return self._table.remove(token)

    def covering(self, path: str) -> list[dict[str, Any]]:
        """Live locks on ``path`` and on each of its ancestors."""
        roots, parent = [path], path
        while parent not in ("", "/"):
            parent = parent.rsplit("/", 1)[0] or "/"
            roots.append(parent)
        return [_as_wsgidav(lock) for lock in self._table.on(roots)]

    def get_lock_list(
        self, path: str, *, include_root: bool, include_children: bool, token_only: bool
    ) -> list[Any]:
        found = self._table.at(normalize_lock_root(path), itself=include_root, below=include_children)
        return [lock["token"] for lock in found] if token_only else [_as_wsgidav(lock) for lock in found]


def _bounded(timeout: Any) -> float:
    """A requested lifetime held to (0, LOCK_TIMEOUT_MAX]; none or infinite: the default."""
    try:
        seconds = float(timeout)
    except (TypeError, ValueError):
        return float(LOCK_TIMEOUT_DEFAULT)
    if seconds < 0:
        return float(LOCK_TIMEOUT_DEFAULT)
    return min(max(seconds, 1.0), float(LOCK_TIMEOUT_MAX))


def _text(owner: bytes | str) -> str:
    """The owner as the catalog keeps it: wsgidav hands it over as serialized XML bytes."""
    return owner.decode("utf-8", "replace") if isinstance(owner, bytes) else owner


def _as_wsgidav(lock: dict[str, Any]) -> dict[str, Any]:
    """A lock as wsgidav's lock manager holds it (the owner as XML bytes)."""
    return {**lock, "owner": lock["owner"].encode("utf-8")}
