"""The embedded default store: content-addressed files in a local folder.

Layout under the store root::

    chunks/ab/abcdef….chunk      the chunk's bytes
    chunks/ab/abcdef….meta       JSON sidecar: ChunkHash, size, BlockHashes (invariant 6);
                                 a cache of what the chunk proves, rebuilt if lost
    spool/                       uploads in progress write their chunks here

Both are written to a temporary name, fsynced and renamed, then the folder is fsynced,
so a crash leaves either the whole chunk or nothing but a stray temporary file. An
upload's spool file is on the same file system, so ``put_file`` is an fsync and a
rename, with no copy. The locator is the ChunkHash itself, which makes a repeated put
of the same content free.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from davfs.chunk import BLOCK_SIZE, FORMATS, ChunkHasher, ChunkMeta
from davfs.errors import ChunkMissing, StoreError
from davfs.stores.base import ChunkStore, StoreProperties, spool, store_error

_HEX = frozenset("0123456789abcdef")
SPOOL_ABANDONED_AFTER = 3600.0
"""Seconds without a write after which a spool file is an abandoned upload's."""
log = logging.getLogger(__name__)


class LocalStore:
    """Chunks as files under ``root``; safe for many threads and several processes."""

    def __init__(self, root: str | os.PathLike[str], max_chunk_size: int = 1 << 30) -> None:
        self.root = Path(root)
        self._chunks = self.root / "chunks"
        self._chunks.mkdir(parents=True, exist_ok=True)
        self._spool = self.root / "spool"
        self._spool.mkdir(exist_ok=True)
        remove_abandoned_spool(self._spool, SPOOL_ABANDONED_AFTER)
        self.properties = StoreProperties("local", max_chunk_size, concurrency=4, spool_dir=str(self._spool))
        self._made_dirs: set[str] = set()
        self._lock = threading.Lock()

    def _paths(self, locator: str) -> tuple[Path, Path]:
        if len(locator) != 64 or not _HEX.issuperset(locator):
            raise ChunkMissing(locator, "local")
        folder = self._chunks / locator[:2]
        return folder / f"{locator}.chunk", folder / f"{locator}.meta"

    def put(self, data: bytes | memoryview, meta: ChunkMeta) -> str:
        return self.put_file(spool(data, self._spool, "local"), meta)

    def put_file(self, path: str, meta: ChunkMeta) -> str:
        spooled = Path(path)
        try:
            if meta.size > self.properties.max_chunk_size:
                raise StoreError("local", f"chunk of {meta.size} bytes exceeds the store's limit")
            locator = meta.chunk_hash
            data_path, meta_path = self._paths(locator)
            # Replaced even if present: the caller hashed these bytes just now, the copy
            # on disk may have been damaged since.
            self._make_folder(data_path.parent)
            try:
                with open(spooled, "rb+") as handle:
                    if os.fstat(handle.fileno()).st_size != meta.size:
                        raise StoreError("local", f"spooled chunk {spooled} is not {meta.size} bytes")
                    os.fsync(handle.fileno())
                os.replace(spooled, data_path)
                self._finish(meta_path, meta)
            except OSError as exc:
                raise store_error("local", exc) from exc
            return locator
        finally:
            spooled.unlink(missing_ok=True)

    def _make_folder(self, folder: Path) -> None:
        if folder.name not in self._made_dirs:
            if not folder.exists():
                folder.mkdir(exist_ok=True)
                _fsync_dir(folder.parent)  # the new folder's entry must survive a power cut too
            with self._lock:
                self._made_dirs.add(folder.name)

    def _finish(self, meta_path: Path, meta: ChunkMeta) -> None:
        """Write the sidecar and make both renames durable.

        The sidecar's bytes are not fsynced: it only caches what the chunk itself
        proves (its name is its hash; its BlockHashes can be recomputed from it), and
        ``iter_chunks`` does recompute it when it is missing or damaged. That saves an
        fsync on every upload, a seventh of a small PUT. A manifest's sidecar is the
        exception: its kind cannot be recomputed, and manifests are rare."""
        _write_atomically(meta_path, json.dumps(meta.to_dict()).encode(), durable=meta.kind != "data")
        _fsync_dir(meta_path.parent)

    def get(self, locator: str, offset: int, length: int) -> bytes:
        data_path, _ = self._paths(locator)
        if offset < 0 or length < 0:
            raise ValueError(f"bad range {offset}+{length}")
        try:
            fd = os.open(data_path, os.O_RDONLY)
        except FileNotFoundError:
            raise ChunkMissing(locator, "local") from None
        except OSError as exc:
            raise StoreError("local", f"cannot open {data_path}: {exc}") from exc
        try:
            data = os.pread(fd, length, offset)
            if len(data) != length:
                size = os.fstat(fd).st_size
                if offset + length > size:
                    raise ValueError(f"range {offset}+{length} outside chunk of {size} bytes")
                raise StoreError("local", f"short read from {data_path}")
            return data
        finally:
            os.close(fd)

    def delete(self, locator: str) -> None:
        for path in self._paths(locator):
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def exists(self, locator: str) -> bool:
        try:
            data_path, _ = self._paths(locator)
        except ChunkMissing:
            return False
        return data_path.exists()

    def iter_chunks(self) -> Iterator[tuple[str, ChunkMeta]]:
        for data_path in sorted(self._chunks.glob("*/*.chunk")):
            locator = data_path.stem
            meta_path = data_path.with_suffix(".meta")
            try:
                meta = ChunkMeta.from_dict(json.loads(meta_path.read_bytes()))
            except (OSError, ValueError, KeyError):
                meta = _recompute(data_path, locator)  # sidecar lost (e.g. power cut) or damaged
                if meta.chunk_hash != locator:
                    log.error("chunk %s is damaged (its bytes hash to %s); skipped", locator, meta.chunk_hash)
                    continue
                _write_atomically(meta_path, json.dumps(meta.to_dict()).encode(), durable=False)
            yield locator, meta

    def close(self) -> None:
        pass


def remove_abandoned_spool(folder: Path, age: float) -> None:
    """Spool files of uploads that died with their process (kill -9, power cut).

    Several servers may share one store, so only files nobody has written to for
    ``age`` seconds are removed; a live upload writes its spool file continuously."""
    cutoff = time.time() - age
    for leftover in folder.glob("*.spool"):
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
                log.info("removed abandoned spool file %s", leftover)
        except FileNotFoundError:
            pass


def _recompute(data_path: Path, chunk_hash: str) -> ChunkMeta:
    """The record of a chunk whose sidecar is lost: hashed in each format until one
    gives the ChunkHash it is stored under (the current format first)."""
    meta = None
    for format in sorted(FORMATS, reverse=True):
        hasher = ChunkHasher(kind="data", format=format)
        with open(data_path, "rb") as data:
            while block := data.read(BLOCK_SIZE):
                hasher.update(block)
        meta = hasher.meta()
        if meta.chunk_hash == chunk_hash:
            break
    assert meta is not None
    return meta


def _write_atomically(path: Path, data: bytes | memoryview, *, durable: bool) -> None:
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb", buffering=0) as out:
            view = memoryview(data)
            while view:
                written = out.write(view)
                view = view[written:] if written else view
            if durable:
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_check: type[ChunkStore] = LocalStore
