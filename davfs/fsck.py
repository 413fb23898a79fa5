"""``davfs fsck``: is every file whole, and what can be done if not?

Two levels. The catalog check (always) compares the catalog with itself: reference
counts, extents, the tree, and chunks marked damaged by an earlier repair. ``--verify``
then reads every block of every chunk a current file uses back from the store and
checks its BlockHash, exactly as a download would, and names the files a missing or
damaged chunk belongs to. Chunks that only replaced versions (which a running download
may still read) or manifests hold are checked for presence.

A verification of a large Telegram drive takes hours: it goes through chunks in
ChunkHash order, saves its position (:class:`Checkpoint`) every few seconds and carries
on from there if it is run again after an interruption, and can be held to a rate.

``--repair`` then acts on what was found: a chunk with another intact copy in the store
(same ChunkHash, another locator: Telegram keeps a second message after a lost
confirmation or a re-upload) is pointed at that copy; any other is *marked damaged*, so
downloads of the files using it fail at once with a clear message instead of midway,
while the files stay listed. Uploading the same content again heals a marked chunk.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from davfs.catalog import Catalog
from davfs.chunk import ChunkRef, verified_blocks
from davfs.errors import ChunkMissing, IntegrityError, StoreError
from davfs.staging import OPEN
from davfs.stores.base import ChunkStore

CHECKPOINT_SECONDS = 5.0


@dataclass
class FsckReport:
    """What fsck found: catalog problems, and chunks missing or damaged in the store
    with the paths of the files they break."""

    catalog: list[str] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)
    damaged: dict[str, list[str]] = field(default_factory=dict)
    marked: dict[str, str] = field(default_factory=dict)
    """Chunks an earlier repair marked damaged: ChunkHash → reason."""
    chunks_verified: int = 0
    bytes_verified: int = 0
    resumed_after: str | None = None
    """The ChunkHash an interrupted verification had reached, if this one continued it."""
    relocated: list[str] = field(default_factory=list)
    """Repair: chunks now read from another intact copy."""
    newly_marked: list[str] = field(default_factory=list)
    """Repair: chunks marked damaged now."""

    @property
    def clean(self) -> bool:
        return not (self.catalog or self.missing or self.damaged or self.marked)

    def lines(self) -> list[str]:
        found = [f"catalog: {problem}" for problem in self.catalog]
        for label, chunks in (("missing from the store", self.missing), ("damaged", self.damaged)):
            for chunk_hash, paths in chunks.items():
                mark = " (marked damaged)" if chunk_hash in self.marked else ""
                found.append(f"chunk {chunk_hash[:16]} {label}{mark}; affects {', '.join(paths)}")
        for chunk_hash, reason in self.marked.items():
            if chunk_hash not in self.missing and chunk_hash not in self.damaged:
                found.append(f"chunk {chunk_hash[:16]} is marked damaged ({reason})")
        found += [f"repaired: chunk {h[:16]} now read from another intact copy" for h in self.relocated]
        found += [
            f"marked damaged: chunk {h[:16]} (its files stay listed; reading them says so)"
            for h in self.newly_marked
        ]
        return found


@dataclass
class Checkpoint:
    """Where an interrupted ``--verify`` was, kept in the data folder between runs."""

    path: Path
    after: str = ""
    missing: dict[str, list[str]] = field(default_factory=dict)
    damaged: dict[str, list[str]] = field(default_factory=dict)
    chunks_verified: int = 0
    bytes_verified: int = 0

    @classmethod
    def load(cls, path: Path) -> Checkpoint:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                path,
                **{k: data[k] for k in ("after", "missing", "damaged", "chunks_verified", "bytes_verified")},
            )
        except (OSError, ValueError, KeyError, TypeError):
            return cls(path)

    def save(self, report: FsckReport, after: str) -> None:
        data = {
            "after": after,
            "missing": report.missing,
            "damaged": report.damaged,
            "chunks_verified": report.chunks_verified,
            "bytes_verified": report.bytes_verified,
        }
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data), encoding="utf-8")
        os.replace(temporary, self.path)

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)


def fsck(
    catalog: Catalog,
    store: ChunkStore,
    *,
    verify: bool,
    progress: Callable[[int], None] | None = None,
    checkpoint: Checkpoint | None = None,
    rate: float | None = None,
) -> FsckReport:
    """Check the drive. ``checkpoint`` makes a verification resumable; ``rate`` holds
    it to that many bytes per second."""
    report = FsckReport(catalog=catalog.fsck.integrity_problems(), marked=catalog.fsck.damaged_chunks())
    if verify and checkpoint is not None and checkpoint.after:
        report.resumed_after = checkpoint.after
        report.missing, report.damaged = checkpoint.missing, checkpoint.damaged
        report.chunks_verified, report.bytes_verified = checkpoint.chunks_verified, checkpoint.bytes_verified
    throttle = _Throttle(rate)
    saved = time.monotonic()
    for chunk, paths in sorted(catalog.fsck.referenced_chunks(), key=lambda item: item[0].chunk_hash):
        if verify and paths and report.resumed_after and chunk.chunk_hash <= report.resumed_after:
            continue  # verified before the interruption
        # Chunks no current file uses are checked for presence only, and so is a pack
        # still open for small files: it has no BlockHashes of its own until it is sealed
        # (each file's piece has its own, checked whenever the file is read).
        if not (verify and paths) or is_open_pack(chunk):
            if not store.exists(chunk.locator):
                report.missing[chunk.chunk_hash] = paths or [
                    "no current file (replaced versions or a manifest)"
                ]
            continue
        try:
            intact = _verify_chunk(store, chunk, progress, throttle)
        except ChunkMissing:
            report.missing[chunk.chunk_hash] = paths
            intact = True
        except StoreError as exc:
            report.catalog.append(f"chunk {chunk.chunk_hash[:16]} could not be read ({exc}); try again")
            continue
        if not intact:
            report.damaged[chunk.chunk_hash] = paths
        elif chunk.chunk_hash in report.marked and chunk.chunk_hash not in report.missing:
            report.catalog.append(
                f"chunk {chunk.chunk_hash[:16]} is marked damaged but reads back intact; "
                "`--repair` clears the mark"
            )
        report.chunks_verified += 1
        report.bytes_verified += chunk.size
        if checkpoint is not None and time.monotonic() - saved > CHECKPOINT_SECONDS:
            checkpoint.save(report, chunk.chunk_hash)
            saved = time.monotonic()
    if checkpoint is not None and verify:
        checkpoint.finish()
    return report


def repair(catalog: Catalog, store: ChunkStore, report: FsckReport) -> None:
    """Act on a verified report (see the module docstring); records what it did in it."""
    broken = set(report.missing) | set(report.damaged)
    copies: dict[str, list[str]] = {}
    if broken:
        for locator, meta in store.iter_chunks():
            if meta.chunk_hash in broken:
                copies.setdefault(meta.chunk_hash, []).append(locator)
    current = {
        chunk.chunk_hash: chunk for chunk, _ in catalog.fsck.referenced_chunks() if chunk.chunk_hash in broken
    }
    for chunk_hash in sorted(broken):
        chunk = current.get(chunk_hash)
        if chunk is None:
            continue  # no longer referenced since the check
        other = next(
            (
                locator
                for locator in copies.get(chunk_hash, [])
                if locator != chunk.locator and _intact_copy(store, ChunkRef(locator, chunk.meta))
            ),
            None,
        )
        if other is not None:
            catalog.fsck.relocate_chunk(chunk_hash, other)
            report.relocated.append(chunk_hash)
        else:
            reason = (
                "missing from the store" if chunk_hash in report.missing else "its stored bytes are damaged"
            )
            catalog.fsck.mark_damaged(chunk_hash, reason)
            report.newly_marked.append(chunk_hash)
    for chunk_hash in report.marked.keys() - broken:  # verified intact: the mark no longer holds
        catalog.fsck.mark_damaged(chunk_hash, None)


def _intact_copy(store: ChunkStore, copy: ChunkRef) -> bool:
    try:
        return _verify_chunk(store, copy, None, _Throttle(None))
    except StoreError:
        return False


def _verify_chunk(
    store: ChunkStore, chunk: ChunkRef, progress: Callable[[int], None] | None, throttle: _Throttle
) -> bool:
    """Whether every block of the chunk matches its BlockHash."""
    try:
        for block in verified_blocks(store, chunk, before_read=throttle.take):
            if progress is not None:
                progress(len(block))
    except IntegrityError:
        return False
    return True


class _Throttle:
    """Holds reads to ``rate`` bytes per second on average (None: no limit)."""

    def __init__(self, rate: float | None) -> None:
        self._rate = rate
        self._start = time.monotonic()
        self._taken = 0

    def take(self, amount: int) -> None:
        if not self._rate:
            return
        self._taken += amount
        ahead = self._taken / self._rate - (time.monotonic() - self._start)
        if ahead > 0:
            time.sleep(ahead)


def is_open_pack(chunk: ChunkRef) -> bool:
    return chunk.locator.startswith(OPEN)
