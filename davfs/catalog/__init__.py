"""The catalog: the only code in davfs that speaks SQL.

One database, one module per client, each over the shared :mod:`~davfs.catalog.db`
(engine, transactions, migrations) and :mod:`~davfs.catalog.rows` (nodes, versions,
chunk references):

- :mod:`~davfs.catalog.tree` — paths, folders, files, versions, dead properties
  (the provider and the command line);
- :mod:`~davfs.catalog.uploads` — the upload journal and the commit of a new version
  (the writer);
- :mod:`~davfs.catalog.history` — previous versions of files, and which of them gc
  keeps (``davfs versions``, ``davfs.gc``);
- :mod:`~davfs.catalog.trash` — deleted files and folders until they expire
  (``davfs trash``, DELETE);
- :mod:`~davfs.catalog.imports` — files made of messages davfs did not post
  (``davfs import``);
- :mod:`~davfs.catalog.gc` — retired versions, orphans, deletion marks (``davfs.gc``);
- :mod:`~davfs.catalog.fsck` — consistency checks and damage marks (``davfs.fsck``);
- :mod:`~davfs.catalog.oplog` — typed change entries until a manifest holds them
  (``davfs.manifest``);
- :mod:`~davfs.catalog.dump` — every row out and in, and recovered trees
  (``davfs.backup``, ``davfs recover``);
- :mod:`~davfs.catalog.locks` — WebDAV locks (``davfs.locks``, for wsgidav's lock manager);
- :mod:`~davfs.catalog.staging` — packs and staged chunks (write-back: ``davfs.staging``,
  ``davfs.shipper``).

Written against SQLAlchemy Core with nothing engine-specific outside ``dialect.py``.
"""

from __future__ import annotations

from davfs.catalog.db import ROOT_ID, Database
from davfs.catalog.dump import Dump, RecoveredNode
from davfs.catalog.fsck import FsckQueries
from davfs.catalog.gc import GcQueries
from davfs.catalog.history import History
from davfs.catalog.imports import Imports
from davfs.catalog.locks import LockTable
from davfs.catalog.oplog import OpLog
from davfs.catalog.rows import ABSENT, Node, content_etag
from davfs.catalog.staging import StagingQueries
from davfs.catalog.trash import Trash
from davfs.catalog.tree import Tree
from davfs.catalog.uploads import Uploads


class Catalog:
    """One catalog database and its modules, opened (and migrated) together.
    ``windows_names``: new names must be ones Windows can open and tell apart."""

    def __init__(self, url: str, *, windows_names: bool = True) -> None:
        self.db = Database(url)
        self.tree = Tree(self.db, windows_names=windows_names)
        self.uploads = Uploads(self.db, self.tree)
        self.gc = GcQueries(self.db)
        self.history = History(self.db)
        self.trash = Trash(self.db, windows_names=windows_names)
        self.imports = Imports(self.db, self.tree)
        self.fsck = FsckQueries(self.db, self.tree)
        self.oplog = OpLog(self.db)
        self.dump = Dump(self.db, self.tree)
        self.locks = LockTable(self.db)
        self.staging = StagingQueries(self.db)

    @property
    def url(self) -> str:
        return self.db.url

    def close(self) -> None:
        self.db.close()


__all__ = ["ABSENT", "ROOT_ID", "Catalog", "Node", "RecoveredNode", "content_etag"]
