"""The Drive: one catalog and one chunk store, opened once from the configuration, and
the operations both adapters (the WebDAV provider and the command line) need.

Everything with a rule about data lives below this line, so the server and the CLI
cannot drift apart: a read takes a snapshot, refuses a file ``fsck --repair`` marked
damaged and fetches the first block it needs before anything is sent
(:meth:`Drive.open_read` → :class:`~davfs.reader.ChunkReader`); a write streams into
chunks and commits in one transaction, with the modification time the client gave
(:meth:`Drive.open_write` → :class:`~davfs.writer.ChunkWriter`). The Drive also owns
what runs beside requests: the executors that fetch and store chunks, and the
background jobs (manifests, gc, catalog backups), started by the server only.
"""

from __future__ import annotations

import logging
import shutil
import stat
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from davfs.backup import backup_schedule
from davfs.catalog import Catalog, Node
from davfs.catalog.history import PreviousVersion, Retention
from davfs.catalog.trash import TrashItem
from davfs.config import DavfsConfig
from davfs.crypto import DriveKey, unwrap, wrap
from davfs.errors import (
    ChunkMissing,
    ConfigError,
    DamagedFile,
    IntegrityError,
    NotAFile,
    NotAFolder,
    NotFound,
    WrongPassphrase,
)
from davfs.gc import gc_schedule
from davfs.manifest import ManifestWriter
from davfs.paths import split_path
from davfs.periodic import Periodic
from davfs.reader import ChunkReader
from davfs.shipper import Shipper
from davfs.snapshot import FileSnapshot, SnapshotCache
from davfs.staging import Packer, StagingArea
from davfs.stores import LocalStore, open_store
from davfs.stores.base import ChunkStore
from davfs.stores.sealed import (
    KEY_FILE,
    SealedStore,
    keep_key_record,
    key_record,
    publish_key,
    stored_passphrase,
)
from davfs.writer import ChunkWriter, UploadTarget

log = logging.getLogger(__name__)

IO_THREADS = 16
"""Threads per direction that fetch or store chunks for all transfers together."""
QUOTA_CACHE_SECONDS = 1.0
"""Finder asks for the quota with every listing; the figure may be this old."""


class Drive:
    """A catalog and a store served as one tree of files."""

    def __init__(self, config: DavfsConfig, *, store: ChunkStore | None = None) -> None:
        _private_folder(config.data_dir)
        self.config = config
        self.catalog = Catalog(config.catalog_url, windows_names=config.windows_names)
        try:
            backing = store or open_store(config.store, telegram=config.telegram, data_dir=config.data_dir)
        except BaseException:
            self.catalog.close()
            raise
        self.key_id: str | None = None
        """Which key encrypts the drive (None: it is not encrypted)."""
        self.store_itself = backing
        """The store below any encryption: where free space is measured and imported
        messages are read as they are."""
        try:
            backing = self._sealed(backing)
        except BaseException:
            backing.close()
            self.catalog.close()
            raise
        self.backing_store = backing
        """Where chunks end up; manifests and backups go there directly."""
        self.store: ChunkStore = backing
        """Where uploads put chunks and reads get them: the staging area in front of the
        backing store with write-back on (:mod:`davfs.staging`), else the store itself."""
        self.staging: StagingArea | None = None
        self.packer: Packer | None = None
        self.shipper: Shipper | None = None
        if config.write_back:
            staging = self.staging = StagingArea(backing, config.staging_dir, limit=config.staging_limit)
            self.store = staging
            self.packer = Packer(staging, chunk_size=config.chunk_size, seal=self.catalog.staging.seal)
            self.shipper = Shipper(self.catalog, staging, self.packer, forward_keep=config.gc_grace)
        # Separate pools: downloads' read-ahead must not queue behind uploads' store
        # calls (an fsync here, a slow Telegram send there).
        self._reads = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="davfs-read")
        self._writes = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="davfs-write")
        self.manifests = ManifestWriter(self.catalog, backing, interval=config.manifest_interval)
        self._jobs: list[Periodic] = []
        self._snapshots = SnapshotCache()
        self._quota_lock = threading.Lock()
        self._quota: tuple[float, int | None, int | None] = (float("-inf"), None, None)

    def _sealed(self, backing: ChunkStore) -> ChunkStore:
        """The store encrypting into ``backing`` if the drive is (or, new and with
        ``encryption`` on, is to be) encrypted. An encrypted drive is never opened
        without its key, whatever the configuration says."""
        config = self.config
        marker = self.catalog.db.setting("encryption")
        if not (config.encryption or marker or (config.data_dir / KEY_FILE).is_file()):
            return backing
        passphrase = config.passphrase or stored_passphrase(config.data_dir)
        if not passphrase:
            raise ConfigError(
                "davfs.passphrase", "this drive is encrypted: give its passphrase in DAVFS_PASSPHRASE"
            )
        if marker is None and not self.catalog.dump.is_new():
            raise ConfigError(
                "davfs.encryption",
                "this drive already holds unencrypted files; encryption is chosen for a new drive",
            )
        record = key_record(backing, config.data_dir)
        if record is None:
            if marker is not None:
                raise WrongPassphrase("the drive key is neither in the data folder nor in the store")
            key = DriveKey.new()
            publish_key(backing, config.data_dir, wrap(key, passphrase))
            log.info("this drive is encrypted from now on (key %s)", key.id)
        else:
            key = unwrap(record, passphrase)
            keep_key_record(config.data_dir, record)
        if marker is None:
            self.catalog.db.set_setting("encryption", key.id)
        elif marker != key.id:
            raise WrongPassphrase(f"the catalog is encrypted with key {marker}, this key is {key.id}")
        self.key_id = key.id
        return SealedStore(backing, key)

    def __enter__(self) -> Drive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_jobs(self) -> None:
        """Start the server's background jobs: manifests, gc, catalog backups."""
        config = self.config
        self.manifests.start()
        if self.shipper is not None:
            self.shipper.start()
        self._jobs = [
            gc_schedule(
                self.catalog,
                self.store,
                interval=config.gc_interval,
                grace=config.gc_grace,
                retention=self.retention,
            ),
            backup_schedule(
                self.catalog,
                self.backing_store,
                interval=config.backup_interval,
                keep=config.backup_keep,
                part_size=config.chunk_size,
            ),
        ]
        for job in self._jobs:
            job.start()

    def close(self) -> None:
        """Stop the jobs, write the last manifest, close the store and the catalog.
        Staged data stays staged: the next start ships it."""
        self._reads.shutdown(wait=False, cancel_futures=True)
        self._writes.shutdown(wait=True, cancel_futures=True)
        for job in self._jobs:
            job.close()
        if self.shipper is not None:
            self.shipper.close()
        self.manifests.close()
        self.store.close()
        self.catalog.close()

    # --- looking things up ----------------------------------------------------------

    def resolve(self, path: str) -> Node | None:
        """The node at ``path``, or None."""
        return self.catalog.tree.resolve(split_path(path))

    def node(self, path: str) -> Node:
        node = self.resolve(path)
        if node is None:
            raise NotFound(path)
        return node

    def parent_of(self, path: str) -> tuple[Node, str]:
        """The folder that holds (or would hold) ``path``, and the last name in it."""
        segments = split_path(path)
        if not segments:
            raise NotAFile("/")
        parent_path = "/" + "/".join(segments[:-1])
        parent = self.node(parent_path)
        if not parent.is_dir:
            raise NotAFolder(parent_path)
        return parent, segments[-1]

    def children(self, folder_id: int) -> list[Node]:
        return self.catalog.tree.children(folder_id)

    def dead_props(self, node_id: int) -> dict[str, str]:
        return self.catalog.tree.dead_props(node_id)

    def children_dead_props(self, folder_id: int) -> dict[int, dict[str, str]]:
        return self.catalog.tree.children_dead_props(folder_id)

    def quota(self) -> tuple[int | None, int | None]:
        """(used, available) bytes, at most :data:`QUOTA_CACHE_SECONDS` old; used
        counts previous versions of files too (they take space until gc drops them)."""
        with self._quota_lock:
            stamp, used, available = self._quota
            if time.monotonic() - stamp > QUOTA_CACHE_SECONDS:
                used = self.catalog.tree.used_bytes() + self.catalog.history.kept_bytes()
                available = self._available_bytes()
                self._quota = (time.monotonic(), used, available)
            return used, available

    def _available_bytes(self) -> int | None:
        """Free space where the local store keeps its chunks (unknown for Telegram)."""
        if not isinstance(self.store_itself, LocalStore):
            return None
        try:
            return shutil.disk_usage(self.store_itself.root).free
        except OSError:
            return None

    def ship_all(self, timeout: float = 3600.0) -> int:
        """Ship everything staged now and wait for it; returns how many chunks could not
        be shipped (0: the store holds every byte)."""
        return 0 if self.shipper is None else self.shipper.drain(timeout)

    def health(self) -> dict[str, Any]:
        """What a load balancer (and ``davfs status``) needs to know; raises if the
        catalog does not answer."""
        state: dict[str, Any] = {"status": "ok", "catalog_schema": self.catalog.db.schema_version()}
        if self.shipper is not None:
            pending = self.catalog.staging.pending()
            shipping = self.shipper.state()
            error, error_at = self.catalog.staging.trouble() or (None, None)
            state["write_back"] = {
                "pending_files": pending.files,
                "pending_bytes": pending.bytes,
                "oldest_seconds": None if pending.oldest is None else round(pending.oldest, 1),
                "shipping_bytes_per_second": round(shipping.bytes_per_second),
                "last_store_error": error,
                "last_store_error_at": error_at,
                "retrying_at": shipping.waiting_until,
            }
        return state

    # --- reading and writing files ---------------------------------------------------

    def open_read(
        self, path: str, *, node: Node | None = None, start: int = 0, end: int | None = None
    ) -> ChunkReader:
        """A verifying reader over the current version of the file at ``path`` (or of
        ``node``, already resolved), as it is now: later changes to the file do not
        reach it. The block at ``start`` is fetched and verified before this returns,
        so a damaged or missing chunk there is an error now rather than a cut-short
        body; ``end`` (exclusive) is where the caller will stop reading."""
        node = node or self.node(path)
        if node.is_dir or node.version_id is None:
            raise NotAFile(path)
        snapshot, cached = self._snapshots.get(node.version_id, path, self.catalog.tree.snapshot)
        try:
            return self._primed_reader(snapshot, start, end)
        except (ChunkMissing, IntegrityError):
            if not cached:
                raise
        # The chunk may have moved since the snapshot was cached (shipped, or healed).
        self._snapshots.forget(node.version_id)
        return self._primed_reader(self.catalog.tree.snapshot(node.version_id, path), start, end)

    def _primed_reader(self, snapshot: FileSnapshot, start: int, end: int | None) -> ChunkReader:
        if snapshot.damaged:
            raise DamagedFile(snapshot.path, snapshot.damaged)
        reader = ChunkReader(snapshot, self.store, self._reads, window=self.config.prefetch_blocks)
        try:
            reader.prime(start, end)
        except BaseException:
            reader.close()
            raise
        return reader

    def open_write(
        self,
        parent_id: int,
        name: str,
        *,
        path: str,
        size: int | None,
        mtime: float | None = None,
        expect_version: int | None = None,
    ) -> ChunkWriter:
        """A writer for new content of parent/name; nothing is visible until its
        ``close()`` commits, in one transaction, with ``mtime`` (else the commit's time).
        ``size`` is what the client announced (None: unknown); ``expect_version``
        makes the commit conditional (see :class:`~davfs.writer.UploadTarget`)."""
        return ChunkWriter(
            UploadTarget(parent_id, name, path, expect_version=expect_version),
            self.catalog.uploads,
            self.store,
            self._writes,
            expected_size=size,
            chunk_size=self.config.chunk_size,
            in_flight=self.config.upload_in_flight,
            mtime=mtime,
            packer=self.packer,
        )

    # --- changing the tree -----------------------------------------------------------

    def mkdir(self, parent_id: int, name: str) -> Node:
        return self.catalog.tree.mkdir(parent_id, name)

    def create_empty_file(self, parent_id: int, name: str) -> Node:
        return self.catalog.tree.create_empty_file(parent_id, name)

    def delete(self, node: Node, path: str, *, recursive: bool, for_good: bool = False) -> None:
        """Put a node in the trash (or, with no trash or ``for_good``, delete it: the
        source of a MOVE that copied it elsewhere is not a deletion a person made)."""
        if self.config.trash_days and not for_good:
            self.catalog.trash.put(node.id, node.parent_id, node.name, path, recursive=recursive)
        else:
            self.catalog.tree.delete(node, recursive=recursive)

    def move(self, node_id: int, parent_id: int, name: str) -> None:
        self.catalog.tree.move(node_id, parent_id, name)

    def copy(self, node_id: int, parent_id: int, name: str) -> Node:
        return self.catalog.tree.copy_node(node_id, parent_id, name)

    def patch(self, node_id: int, props: Mapping[str, str | None], mtime: float | None = None) -> None:
        """Dead properties and the modification time of a node, changed all or none."""
        self.catalog.tree.patch(node_id, props, mtime)

    # --- the trash -------------------------------------------------------------------

    def trash_items(self, under: str = "/") -> list[TrashItem]:
        return self.catalog.trash.items(under)

    def restore_from_trash(self, path: str, to: str | None = None) -> tuple[TrashItem, str]:
        """Bring back the newest trash item that was at ``path``; returns it and the
        path it is at now (another name if ``path`` is taken again)."""
        wanted = "/" + "/".join(split_path(path))
        item = next((i for i in self.catalog.trash.items(wanted) if i.path == wanted), None)
        if item is None:
            raise NotFound(f"{wanted} in the trash")
        return item, self.catalog.trash.restore(item.id, to)

    def empty_trash(self, older_than_days: float | None = None) -> int:
        cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
        return self.catalog.trash.empty(cutoff)

    # --- previous versions -----------------------------------------------------------

    @property
    def retention(self) -> Retention:
        """Which previous versions gc keeps."""
        return Retention(self.config.versions_keep, self.config.version_days, self.config.trash_days)

    def versions(self, path: str) -> list[PreviousVersion]:
        """The versions of the file at ``path`` still kept, oldest first; the last is current."""
        node = self.node(path)
        if node.is_dir:
            raise NotAFile(path)
        return self.catalog.history.versions(node.id)

    def restore_version(self, path: str, number: int) -> PreviousVersion:
        """Make version ``number`` (as :meth:`versions` numbers them) the file's content
        again; the content it replaces is kept as a previous version."""
        node = self.node(path)
        if node.is_dir:
            raise NotAFile(path)
        kept = self.catalog.history.versions(node.id)
        chosen = next((v for v in kept if v.number == number), None)
        if chosen is None:
            raise NotFound(f"version {number} of {path}")
        self.catalog.history.restore(node.id, chosen.version_id)
        return chosen


def _private_folder(folder: Path) -> None:
    """The data folder holds the catalog (every name and property), logins and chunks:
    only its owner may enter it."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & 0o077:
        folder.chmod(mode & 0o700)
        log.info("made the data folder %s private (it was %o)", folder, mode)
