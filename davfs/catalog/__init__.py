"""The catalog: tree, versions, chunks, dead properties and the upload journal."""

from davfs.catalog.catalog import ABSENT, ROOT_ID, Catalog, Node, StoredChunk, content_etag, split_path

__all__ = ["ABSENT", "ROOT_ID", "Catalog", "Node", "StoredChunk", "content_etag", "split_path"]
