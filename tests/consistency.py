"""What a consistent catalog looks like, checked against its store (until `davfs fsck`
exists, the scale-out and crash tests use this)."""

from __future__ import annotations

from collections import Counter

from davfs.catalog import Catalog
from davfs.stores.base import ChunkStore


def catalog_problems(catalog: Catalog, store: ChunkStore) -> list[str]:
    """Every way the catalog disagrees with itself or the store; [] when consistent."""
    problems: list[str] = []
    kinds = {meta.chunk_hash: meta.kind for _, meta in store.iter_chunks()}
    with catalog.engine.connect() as conn:
        chunks = {
            r[0]: (r[1], r[2])
            for r in conn.exec_driver_sql("SELECT chunk_hash, locator, refcount FROM chunks")
        }
        uses = Counter(r[0] for r in conn.exec_driver_sql("SELECT chunk_hash FROM extents"))
        nodes = {
            r[0]: (r[1], r[2], r[3])
            for r in conn.exec_driver_sql("SELECT id, parent_id, is_dir, version_id FROM nodes")
        }
        versions = {
            r[0]: (r[1], r[2]) for r in conn.exec_driver_sql("SELECT id, node_id, retired FROM versions")
        }
    for chunk_hash, (locator, refcount) in chunks.items():
        expected = uses[chunk_hash] + (1 if kinds.get(chunk_hash) == "manifest" else 0)
        if refcount != expected:
            problems.append(f"chunk {chunk_hash[:12]}: refcount {refcount}, referenced {expected} times")
        if refcount and not store.exists(locator):
            problems.append(f"chunk {chunk_hash[:12]} is referenced but missing from the store")
    for chunk_hash in uses:
        if chunk_hash not in chunks:
            problems.append(f"an extent names chunk {chunk_hash[:12]}, which the catalog does not know")
    for node_id, (parent_id, is_dir, version_id) in nodes.items():
        if parent_id is not None and (parent_id not in nodes or not nodes[parent_id][1]):
            problems.append(f"node {node_id}: parent {parent_id} is not a folder")
        if version_id is not None:
            owner, retired = versions.get(version_id, (None, None))
            if owner != node_id or retired is not None:
                problems.append(f"node {node_id}: current version {version_id} is not its own live version")
        elif not is_dir:
            problems.append(f"file node {node_id} has no version")
    return problems
