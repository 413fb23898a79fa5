"""The one narrow interface every chunk store implements.

Stores are synchronous: WSGI calls us from cheroot worker threads, and a store that needs
asyncio (Telegram) keeps its loop inside its own module. A store knows nothing about
files or paths; it keeps immutable chunks, each with its record
(:class:`~davfs.chunk.ChunkMeta`), which makes the store self-describing (invariant 6).
"""

from __future__ import annotations

import errno
import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from davfs.chunk import ChunkMeta
from davfs.errors import StoreError, StoreFull

FOREIGN = "message:"
"""Locator prefix of bytes the store holds that davfs did not put there (a Telegram
message ``davfs import`` took in): read as they are (never decrypted), never deleted."""


@dataclass(frozen=True, slots=True)
class StoreProperties:
    """What callers may rely on: the largest chunk this store accepts, how many
    requests are worth having in flight at once, and where uploads should spool chunks
    so that :meth:`ChunkStore.put_file` can adopt them cheaply (None: the system's
    temporary folder). ``content_addressed``: putting the same chunk twice gives the
    same locator and one stored copy; where it does not (Telegram: every put is a new
    message), uploads reuse a chunk the catalog already has instead of storing it again."""

    name: str
    max_chunk_size: int
    concurrency: int
    spool_dir: str | None = None
    content_addressed: bool = True


def spool(data: bytes | memoryview, folder: str | Path, store: str) -> str:
    """``data`` written to a new spool file in ``folder`` (for ``put`` to hand to
    ``put_file``); its path."""
    fd, spooled = tempfile.mkstemp(prefix="put-", suffix=".spool", dir=folder)
    try:
        with os.fdopen(fd, "wb", buffering=0) as out:
            view = memoryview(data)
            while view:
                view = view[out.write(view) or 0 :]
    except OSError as exc:
        os.unlink(spooled)
        raise store_error(store, exc) from exc
    return spooled


def write_private_file(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically and durably with a file only its owner can read (a
    login, a wrapped key, a passphrase)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def store_error(store: str, exc: OSError) -> StoreError:
    """The StoreError for an OS error: a full disk is StoreFull (HTTP 507)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFull(store, exc.strerror)
    return StoreError(store, f"{exc.strerror or exc}: {exc.filename or ''}")


@runtime_checkable
class ChunkStore(Protocol):
    """Keeps immutable chunks.

    Contracts shared by every implementation (and checked by
    ``tests/stores/conformance.py``):

    - ``put`` returns only once the chunk is durable; it returns the locator to pass to
      ``get``/``delete``. Putting a chunk with the same hash twice is safe (and gives the
      same locator if the store is ``content_addressed``).
    - ``put_file`` does the same for a chunk spooled to a file, and takes the file over:
      it is moved into the store or deleted, whether the put succeeds or not. Uploads
      use it so a chunk never has to sit in memory (invariant 5).
    - ``get`` returns exactly ``length`` bytes starting at ``offset``, or raises
      :class:`~davfs.errors.ChunkMissing` if the chunk is gone. It never verifies:
      verification belongs to the reader, the trust boundary.
    - ``delete`` of a missing chunk is not an error (deleting twice is safe).
    - ``iter_chunks`` yields every chunk's locator and metadata, for recovery.
    - All methods may be called from many threads at once.
    """

    properties: StoreProperties

    def put(self, data: bytes | memoryview, meta: ChunkMeta) -> str: ...

    def put_file(self, path: str, meta: ChunkMeta) -> str: ...

    def get(self, locator: str, offset: int, length: int) -> bytes: ...

    def delete(self, locator: str) -> None: ...

    def exists(self, locator: str) -> bool: ...

    def iter_chunks(self) -> Iterator[tuple[str, ChunkMeta]]: ...

    def close(self) -> None: ...
