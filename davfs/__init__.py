"""davfs: a WebDAV drive whose files live as verified chunks in a chunk store."""

from davfs.catalog import Catalog
from davfs.config import DavfsConfig, load_config
from davfs.errors import DavfsError
from davfs.reader import ChunkReader
from davfs.snapshot import FileSnapshot
from davfs.stores import ChunkStore, LocalStore, MemoryStore, open_store
from davfs.writer import ChunkWriter

__version__ = "0.1.0"

__all__ = [
    "Catalog",
    "ChunkReader",
    "ChunkStore",
    "ChunkWriter",
    "DavfsConfig",
    "DavfsError",
    "FileSnapshot",
    "LocalStore",
    "MemoryStore",
    "load_config",
    "open_store",
]
