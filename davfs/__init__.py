"""davfs: a WebDAV drive whose files live as verified chunks in a chunk store."""

from davfs.catalog import Catalog
from davfs.chunk import ChunkMeta, ChunkRef
from davfs.config import DavfsConfig, load_config
from davfs.drive import Drive
from davfs.errors import DavfsError
from davfs.reader import ChunkReader
from davfs.snapshot import FileSnapshot
from davfs.stores import ChunkStore, LocalStore, MemoryStore, open_store
from davfs.writer import ChunkWriter

__version__ = "0.1.0"

__all__ = [
    "Catalog",
    "ChunkMeta",
    "ChunkReader",
    "ChunkRef",
    "ChunkStore",
    "ChunkWriter",
    "DavfsConfig",
    "DavfsError",
    "Drive",
    "FileSnapshot",
    "LocalStore",
    "MemoryStore",
    "load_config",
    "open_store",
]
