"""WebDAV locks in the catalog: what :class:`davfs.locks.DavfsLockStorage` keeps for
wsgidav's lock manager.

A lock is looked up by its token, by the path it locks, or by everything below a path
(a range scan on the indexed path: ``/a/b/`` up to ``/a/b0``, as ``0`` follows ``/``),
so no request reads every lock. Expired locks are invisible and deleted as they are
met. Every instance on the catalog sees the same locks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update

from davfs.catalog.db import Database
from davfs.catalog.schema import locks

LOCK_FIELDS = ("token", "root", "principal", "scope", "type", "depth", "owner", "timeout", "expire")

_BY_TOKEN = select(locks).where(locks.c.token == bindparam("token"), locks.c.expire >= bindparam("now"))
_AT = select(locks).where(locks.c.root == bindparam("root"), locks.c.expire >= bindparam("now"))
_ON = select(locks).where(
    locks.c.root.in_(bindparam("roots", expanding=True)), locks.c.expire >= bindparam("now")
)
_EXPIRED = delete(locks).where(locks.c.expire < bindparam("now"))
_COUNT = select(func.count()).select_from(locks)
_COUNT_OF = _COUNT.where(locks.c.principal == bindparam("principal"))
_COUNT_ANONYMOUS = _COUNT.where(locks.c.principal.is_(None))
_INSERT = insert(locks)
_REFRESH = (
    update(locks)
    .where(locks.c.token == bindparam("lock_token"), locks.c.expire >= bindparam("now"))
    .values(timeout=bindparam("new_timeout"), expire=bindparam("new_expire"))
)
_REMOVE = delete(locks).where(locks.c.token == bindparam("token"))
_BELOW = select(locks).where(
    locks.c.root > bindparam("low"), locks.c.root < bindparam("high"), locks.c.expire >= bindparam("now")
)


class LockTable:
    """Locks as rows; every method is one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, token: str) -> dict[str, Any] | None:
        with self._db.read() as conn:
            row = conn.execute(_BY_TOKEN, {"token": token, "now": time.time()}).first()
        return None if row is None else dict(row._mapping)

    def at(self, root: str, *, below: bool, itself: bool) -> list[dict[str, Any]]:
        """Live locks on ``root`` itself and/or on paths below it."""
        now = time.time()
        found: list[Any] = []
        with self._db.read() as conn:
            if itself:
                found += conn.execute(_AT, {"root": root, "now": now}).all()
            if below:
                prefix = root.rstrip("/")
                found += conn.execute(_BELOW, {"low": prefix + "/", "high": prefix + "0", "now": now}).all()
        return [dict(row._mapping) for row in found]

    def on(self, roots: list[str]) -> list[dict[str, Any]]:
        """Live locks on any of ``roots`` (a path and its ancestors), in one query."""
        with self._db.read() as conn:
            rows = conn.execute(_ON, {"roots": roots, "now": time.time()})
            return [dict(row._mapping) for row in rows]

    def add(self, lock: Mapping[str, Any], *, per_principal: int, in_total: int) -> bool:
        """Store a new lock unless its principal already holds ``per_principal`` live
        locks or the catalog ``in_total``; expired locks are dropped first."""
        now = time.time()
        principal = lock.get("principal")
        with self._db.write() as conn:
            conn.execute(_EXPIRED, {"now": now})
            total = conn.scalar(_COUNT) or 0
            if principal is None:
                mine = conn.scalar(_COUNT_ANONYMOUS)
            else:
                mine = conn.scalar(_COUNT_OF, {"principal": principal})
            if total >= in_total or (mine or 0) >= per_principal:
                return False
            conn.execute(_INSERT, {name: lock[name] for name in LOCK_FIELDS})
        return True

    def refresh(self, token: str, timeout: float) -> dict[str, Any] | None:
        now = time.time()
        with self._db.write() as conn:
            params = {"lock_token": token, "now": now, "new_timeout": timeout, "new_expire": now + timeout}
            changed = conn.execute(_REFRESH, params).rowcount
            row = conn.execute(_BY_TOKEN, {"token": token, "now": now}).first() if changed else None
        return None if row is None else dict(row._mapping)

    def remove(self, token: str) -> bool:
        with self._db.write() as conn:
            return bool(conn.execute(_REMOVE, {"token": token}).rowcount)

    def remove_expired(self) -> int:
        with self._db.write() as conn:
            return int(conn.execute(_EXPIRED, {"now": time.time()}).rowcount)

    def clear(self) -> None:
        with self._db.write() as conn:
            conn.execute(delete(locks))
