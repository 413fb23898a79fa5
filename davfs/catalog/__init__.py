"""The catalog: tree, versions, chunks, dead properties, the upload journal and the oplog."""

from davfs.catalog.catalog import (
    ABSENT,
    ROOT_ID,
    Catalog,
    Node,
    RecoveredNode,
    StoredChunk,
    content_etag,
    split_path,
)

__all__ = [
    "ABSENT",
    "ROOT_ID",
    "Catalog",
    "Node",
    "RecoveredNode",
    "StoredChunk",
    "content_etag",
    "split_path",
]
