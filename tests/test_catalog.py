"""The catalog contract, run on every engine the catalog supports: SQLite (file and
memory) and a real PostgreSQL server."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select, update

from davfs.catalog import ABSENT, ROOT_ID, Catalog, schema
from davfs.chunk import ChunkMeta, ChunkRef
from davfs.errors import (
    AlreadyExists,
    BadPath,
    CaseTwin,
    CatalogError,
    FolderNotEmpty,
    NotAFolder,
    NotFound,
    PreconditionFailed,
)
from davfs.snapshot import Extent
from tests.services import fresh_postgres_database


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgresql"])
def catalog(request, tmp_path):
    if request.param == "postgresql":
        with fresh_postgres_database() as url:
            cat = Catalog(url)
            yield cat
            cat.close()
        return
    url = f"sqlite:///{tmp_path}/c.sqlite" if request.param == "sqlite-file" else "sqlite://"
    cat = Catalog(url)
    yield cat
    cat.close()


def stored(content: bytes, block_size: int = 4) -> ChunkRef:
    digests = b"".join(
        hashlib.sha256(content[i : i + block_size]).digest() for i in range(0, len(content), block_size)
    )
    chunk_hash = hashlib.sha256(content).hexdigest()
    return ChunkRef(f"loc-{chunk_hash[:8]}", ChunkMeta(chunk_hash, len(content), block_size, digests))


def put(catalog: Catalog, parent: int, name: str, *parts: bytes, mtime=None):
    chunks = [Extent.whole(stored(p)) for p in parts]
    return catalog.uploads.commit(
        parent, name, upload_id=None, stored=chunks, size=sum(len(p) for p in parts), mtime=mtime
    )


def refcount(catalog: Catalog, content: bytes) -> int | None:
    with catalog.db.engine.connect() as conn:
        return conn.scalar(
            select(schema.chunks.c.refcount).where(
                schema.chunks.c.chunk_hash == hashlib.sha256(content).hexdigest()
            )
        )


def test_root_exists_and_schema_is_recorded(catalog):
    root = catalog.tree.resolve([])
    assert root.id == ROOT_ID and root.is_dir
    assert catalog.db.schema_version() == schema.SCHEMA_VERSION


def test_reopening_keeps_everything(tmp_path):
    url = f"sqlite:///{tmp_path}/c.sqlite"
    first = Catalog(url)
    docs = first.tree.mkdir(ROOT_ID, "docs")
    put(first, docs.id, "a.txt", b"hello")
    first.close()
    again = Catalog(url)
    node = again.tree.resolve(["docs", "a.txt"])
    assert node is not None and node.version_id is not None
    assert node.size == 5
    assert again.tree.snapshot(node.version_id, "/docs/a.txt").size == 5


def test_newer_schema_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path}/c.sqlite"
    Catalog(url).close()
    cat = Catalog(url)
    with cat.db.engine.begin() as conn:
        conn.execute(update(schema.meta).values(value=str(schema.SCHEMA_VERSION + 1)))
    cat.close()
    with pytest.raises(CatalogError, match="newer"):
        Catalog(url)


def test_tree_names_are_unique_per_folder_and_case_preserving(catalog):
    catalog.tree.windows_names = False  # names that differ only in case: see the next test
    a = catalog.tree.mkdir(ROOT_ID, "Photos")
    catalog.tree.mkdir(ROOT_ID, "photos")
    with pytest.raises(AlreadyExists):
        catalog.tree.mkdir(ROOT_ID, "Photos")
    catalog.tree.mkdir(a.id, "Photos")  # same name in another folder is fine
    assert [n.name for n in catalog.tree.children(ROOT_ID)] == ["Photos", "photos"]
    assert catalog.tree.resolve(["Photos", "Photos"]).parent_id == a.id
    assert catalog.tree.resolve(["PHOTOS"]) is None


def test_windows_names_refuses_case_twins_and_names_windows_cannot_open(catalog):
    photos = catalog.tree.mkdir(ROOT_ID, "Photos")
    with pytest.raises(CaseTwin):
        catalog.tree.mkdir(ROOT_ID, "photos")
    with pytest.raises(CaseTwin):
        put(catalog, ROOT_ID, "PHOTOS", b"a file")
    for name in ("CON", "nul.txt", "trailing.", "trailing ", "a:b", "what?"):
        with pytest.raises(BadPath):
            catalog.tree.mkdir(ROOT_ID, name)
        with pytest.raises(BadPath):
            put(catalog, ROOT_ID, name, b"x")
    doc, _ = put(catalog, photos.id, "a.txt", b"x")
    catalog.tree.move(doc.id, photos.id, "A.txt")  # a case-only rename of the same file
    assert [n.name for n in catalog.tree.children(photos.id)] == ["A.txt"]
    put(catalog, photos.id, "b.txt", b"y")
    with pytest.raises(CaseTwin):
        catalog.tree.move(doc.id, photos.id, "B.TXT")
    with pytest.raises(CaseTwin):
        catalog.tree.copy_node(doc.id, photos.id, "B.txt")
    assert [n.name for n in catalog.tree.children(photos.id)] == ["A.txt", "b.txt"]


def test_files_cannot_have_members(catalog):
    node, _ = put(catalog, ROOT_ID, "f", b"data")
    with pytest.raises(NotAFolder):
        catalog.tree.mkdir(node.id, "x")
    assert catalog.tree.resolve(["f", "x"]) is None


def test_commit_creates_then_replaces_and_retires_the_old_version(catalog):
    first, created = put(catalog, ROOT_ID, "f", b"old content", mtime=1000.0)
    assert created and first.size == 11 and first.modified == 1000.0
    second, created = put(catalog, ROOT_ID, "f", b"new!")
    assert not created and second.id == first.id and second.version_id != first.version_id
    assert second.etag != first.etag
    assert second.created == first.created
    # A download that snapshotted the old version can still get it.
    old = catalog.tree.snapshot(first.version_id, "/f")
    assert old.size == 11 and old.extents[0].chunk.chunk_hash == hashlib.sha256(b"old content").hexdigest()
    assert catalog.tree.resolve(["f"]).version_id == second.version_id


def test_etag_depends_on_content_only(catalog):
    a, _ = put(catalog, ROOT_ID, "a", b"same", b"bytes")
    b, _ = put(catalog, ROOT_ID, "b", b"same", b"bytes")
    c, _ = put(catalog, ROOT_ID, "c", b"other")
    assert a.etag == b.etag != c.etag


def test_snapshot_lists_extents_in_order_with_block_hashes(catalog):
    node, _ = put(catalog, ROOT_ID, "f", b"0123456789", b"abcdef", b"0123456789")
    snap = catalog.tree.snapshot(node.version_id, "/f")
    assert [e.length for e in snap.extents] == [10, 6, 10]
    assert snap.extents[0].chunk == snap.extents[2].chunk
    assert snap.extents[0].chunk.meta.block_count() == 3
    assert snap.extents[0].chunk.meta.block_digest(1) == hashlib.sha256(b"4567").digest()
    assert refcount(catalog, b"0123456789") == 2


def test_dedup_and_copy_share_chunks_by_reference_count(catalog):
    put(catalog, ROOT_ID, "a", b"shared")
    put(catalog, ROOT_ID, "b", b"shared")
    assert refcount(catalog, b"shared") == 2
    a = catalog.tree.resolve(["a"])
    copy = catalog.tree.copy_node(a.id, ROOT_ID, "c")
    assert refcount(catalog, b"shared") == 3
    assert copy.etag == a.etag and copy.size == 6
    assert catalog.tree.snapshot(catalog.tree.resolve(["c"]).version_id, "/c").size == 6


def test_copy_replaces_an_existing_file_and_copies_dead_props(catalog):
    a, _ = put(catalog, ROOT_ID, "a", b"aaa")
    b, _ = put(catalog, ROOT_ID, "b", b"bbbb")
    catalog.tree.patch(a.id, {"{x:}color": "<color xmlns='x:'>red</color>"})
    catalog.tree.patch(b.id, {"{x:}stale": "<stale xmlns='x:'/>"})
    catalog.tree.copy_node(a.id, ROOT_ID, "b")
    b2 = catalog.tree.resolve(["b"])
    assert b2.id == b.id and b2.size == 3 and b2.etag == a.etag
    assert set(catalog.tree.dead_props(b.id)) == {"{x:}color"}
    with pytest.raises(AlreadyExists):
        catalog.tree.copy_node(a.id, ROOT_ID, catalog.tree.mkdir(ROOT_ID, "dir").name)


def test_dead_props_follow_move_and_go_with_delete(catalog):
    d = catalog.tree.mkdir(ROOT_ID, "d")
    f, _ = put(catalog, d.id, "f", b"x")
    catalog.tree.patch(f.id, {"{x:}a": "<a xmlns='x:'>1</a>"})
    catalog.tree.patch(f.id, {"{x:}b": "<b xmlns='x:'>2</b>"})
    catalog.tree.patch(f.id, {"{x:}b": None})
    assert catalog.tree.children_dead_props(d.id) == {f.id: {"{x:}a": "<a xmlns='x:'>1</a>"}}
    e = catalog.tree.mkdir(ROOT_ID, "e")
    catalog.tree.move(f.id, e.id, "g")
    assert catalog.tree.resolve(["e", "g"]).id == f.id
    assert catalog.tree.dead_props(f.id) == {"{x:}a": "<a xmlns='x:'>1</a>"}
    catalog.tree.delete(e, recursive=True)
    assert catalog.tree.dead_props(f.id) == {}
    assert catalog.tree.resolve(["e"]) is None


def test_delete_checks_the_node_is_still_there_and_empty_unless_recursive(catalog):
    d = catalog.tree.mkdir(ROOT_ID, "d")
    f, _ = put(catalog, d.id, "f", b"x")
    with pytest.raises(FolderNotEmpty):
        catalog.tree.delete(d, recursive=False)
    catalog.tree.move(f.id, ROOT_ID, "moved")
    with pytest.raises(NotFound):
        catalog.tree.delete(f, recursive=False)  # stale: it moved meanwhile
    assert catalog.tree.resolve(["moved"]).id == f.id
    catalog.tree.delete(d, recursive=False)
    assert catalog.tree.resolve(["d"]) is None


def test_conditional_commits(catalog):
    first, _ = put(catalog, ROOT_ID, "f", b"one")
    second, _ = catalog.uploads.commit(
        ROOT_ID,
        "f",
        upload_id=None,
        stored=[Extent.whole(stored(b"two"))],
        size=3,
        mtime=None,
        expect_version=first.version_id,
    )
    with pytest.raises(PreconditionFailed):  # still expects the first version
        catalog.uploads.commit(
            ROOT_ID,
            "f",
            upload_id=None,
            stored=[Extent.whole(stored(b"xxx"))],
            size=3,
            mtime=None,
            expect_version=first.version_id,
        )
    with pytest.raises(PreconditionFailed):
        catalog.uploads.commit(
            ROOT_ID, "f", upload_id=None, stored=[], size=0, mtime=None, expect_version=ABSENT
        )
    assert catalog.tree.resolve(["f"]).version_id == second.version_id
    new, created = catalog.uploads.commit(
        ROOT_ID, "g", upload_id=None, stored=[], size=0, mtime=None, expect_version=ABSENT
    )
    assert created and new.size == 0


def test_an_empty_file_never_replaces_an_existing_one(catalog):
    put(catalog, ROOT_ID, "f", b"content")
    with pytest.raises(PreconditionFailed):
        catalog.tree.create_empty_file(ROOT_ID, "f")
    assert catalog.tree.resolve(["f"]).size == 7


def test_move_refuses_cycles_and_replaces_what_is_at_the_destination(catalog):
    a = catalog.tree.mkdir(ROOT_ID, "a")
    b = catalog.tree.mkdir(a.id, "b")
    with pytest.raises(CatalogError):
        catalog.tree.move(a.id, b.id, "a")
    c = catalog.tree.mkdir(ROOT_ID, "c")
    put(catalog, c.id, "inside", b"replaced with its folder")
    catalog.tree.move(a.id, ROOT_ID, "c")  # one transaction: the old c and its file go
    assert catalog.tree.resolve(["c", "b"]).id == b.id
    assert catalog.tree.resolve(["c", "inside"]) is None
    assert refcount(catalog, b"replaced with its folder") == 1  # retired, kept until gc
    catalog.tree.move(a.id, ROOT_ID, "A")  # case-only rename
    assert catalog.tree.resolve(["A", "b"]).id == b.id


def test_recursive_delete_removes_the_subtree_and_retires_versions(catalog):
    top = catalog.tree.mkdir(ROOT_ID, "top")
    parent = top
    for depth in range(5):
        parent = catalog.tree.mkdir(parent.id, f"level{depth}")
        for i in range(3):
            put(catalog, parent.id, f"f{i}", f"{depth}-{i}".encode())
    kept, _ = put(catalog, ROOT_ID, "kept", b"0-0")
    catalog.tree.delete(top, recursive=True)
    assert [n.name for n in catalog.tree.children(ROOT_ID)] == ["kept"]
    assert [p for p, _ in catalog.tree.walk()] == ["/kept"]
    # retired, not released: the chunk is still referenced until gc
    assert refcount(catalog, b"0-0") == 2
    with catalog.db.engine.connect() as conn:
        live = conn.scalar(select(schema.versions.c.id).where(schema.versions.c.retired.is_(None)))
    assert live == kept.version_id
    with pytest.raises(CatalogError):
        catalog.tree.delete(catalog.tree.resolve([]), recursive=True)


def test_upload_journal_and_abort(catalog):
    upload = catalog.uploads.begin("/big")
    part = stored(b"part one")
    catalog.uploads.journal_chunk(upload, part.chunk_hash, part.locator)
    catalog.uploads.journal_chunk(upload, part.chunk_hash, part.locator)
    with catalog.db.engine.connect() as conn:
        assert conn.scalar(select(schema.upload_chunks.c.locator)) == part.locator
    catalog.uploads.abort(upload, [part])
    with catalog.db.engine.connect() as conn:
        assert conn.execute(select(schema.uploads)).first() is None
        row = conn.execute(select(schema.chunks).where(schema.chunks.c.chunk_hash == part.chunk_hash)).first()
    assert row.refcount == 0 and row.unreferenced_since is not None
    # committing the same content later revives it
    node, _ = put(catalog, ROOT_ID, "f", b"part one")
    assert refcount(catalog, b"part one") == 1


def test_commit_clears_the_journal(catalog):
    upload = catalog.uploads.begin("/f")
    part = stored(b"abc")
    catalog.uploads.journal_chunk(upload, part.chunk_hash, part.locator)
    catalog.uploads.commit(ROOT_ID, "f", upload_id=upload, stored=[Extent.whole(part)], size=3, mtime=None)
    with catalog.db.engine.connect() as conn:
        assert conn.execute(select(schema.upload_chunks)).first() is None


def test_commit_checks_sizes_and_targets(catalog):
    with pytest.raises(CatalogError):
        catalog.uploads.commit(
            ROOT_ID, "f", upload_id=None, stored=[Extent.whole(stored(b"abc"))], size=4, mtime=None
        )
    catalog.tree.mkdir(ROOT_ID, "dir")
    with pytest.raises(AlreadyExists):
        put(catalog, ROOT_ID, "dir", b"x")
    with pytest.raises(NotFound):
        put(catalog, 9999, "f", b"x")
    assert catalog.tree.resolve(["f"]) is None


def test_used_bytes_counts_current_files(catalog):
    put(catalog, ROOT_ID, "a", b"12345")
    put(catalog, ROOT_ID, "a", b"123")
    put(catalog, ROOT_ID, "b", b"1234567")
    assert catalog.tree.used_bytes() == 10


def test_empty_file(catalog):
    node = catalog.tree.create_empty_file(ROOT_ID, "empty")
    assert node.size == 0 and node.etag
    snap = catalog.tree.snapshot(node.version_id, "/empty")
    assert snap.size == 0 and snap.extents == ()


def test_move_of_a_node_deleted_meanwhile_changes_nothing(catalog):
    put(catalog, ROOT_ID, "dest", b"precious")
    gone, _ = put(catalog, ROOT_ID, "src", b"x")
    catalog.tree.delete(gone, recursive=False)
    with pytest.raises(NotFound):
        catalog.tree.move(gone.id, ROOT_ID, "dest")
    assert catalog.tree.resolve(["dest"]).size == len(b"precious")
