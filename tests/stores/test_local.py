import json
import os

import pytest

from davfs.errors import ChunkMissing, StoreError
from davfs.stores import open_store
from davfs.stores.local import LocalStore
from tests.stores.conformance import StoreConformance, chunk


class TestLocalStore(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path):
        return LocalStore(tmp_path / "store")


def test_chunk_is_self_describing(tmp_path):
    store = LocalStore(tmp_path)
    data, meta = chunk(2 * 1024 * 1024 + 3)
    locator = store.put(data, meta)
    sidecar = json.loads((tmp_path / "chunks" / locator[:2] / f"{locator}.meta").read_text())
    assert sidecar["chunk_hash"] == meta.chunk_hash == locator
    assert sidecar["size"] == len(data)
    assert bytes.fromhex(sidecar["block_hashes"]) == meta.block_hashes
    assert len(meta.block_hashes) == 33 * 32  # blocks of 64 KiB (chunk format 2)
    assert sidecar["format"] == "davfs-chunk/2"


def test_no_temporary_files_left(tmp_path):
    store = LocalStore(tmp_path)
    for i in range(5):
        store.put(*chunk(1000 + i))
    leftovers = [p for p in (tmp_path / "chunks").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.parametrize("damage", ["lost", "empty", "garbage"])
def test_a_lost_or_damaged_sidecar_is_rebuilt_from_the_chunk(tmp_path, damage):
    store = LocalStore(tmp_path)
    data, meta = chunk(2 * 1024 * 1024 + 5)
    locator = store.put(data, meta)
    sidecar = tmp_path / "chunks" / locator[:2] / f"{locator}.meta"
    if damage == "lost":
        sidecar.unlink()
    else:
        sidecar.write_bytes(b"" if damage == "empty" else b"{not json")
    assert store.exists(locator)
    assert dict(store.iter_chunks())[locator] == meta
    assert json.loads(sidecar.read_text())["chunk_hash"] == locator


def test_locators_cannot_escape_the_store(tmp_path):
    store = LocalStore(tmp_path / "store")
    (tmp_path / "secret").write_bytes(b"x" * 100)
    with pytest.raises(ChunkMissing):
        store.get("../../secret", 0, 1)


def test_oversized_chunk_is_refused(tmp_path):
    store = LocalStore(tmp_path, max_chunk_size=1000)
    with pytest.raises(StoreError):
        store.put(*chunk(1001))


def test_open_store_by_url(tmp_path):
    assert isinstance(open_store(f"local:{tmp_path}"), LocalStore)


def test_a_damaged_chunk_without_sidecar_is_not_rebuilt_as_valid(tmp_path, caplog):
    store = LocalStore(tmp_path)
    data, meta = chunk(3000)
    locator = store.put(data, meta)
    folder = tmp_path / "chunks" / locator[:2]
    (folder / f"{locator}.meta").unlink()
    damaged = bytearray((folder / f"{locator}.chunk").read_bytes())
    damaged[10] ^= 0xFF
    (folder / f"{locator}.chunk").write_bytes(bytes(damaged))
    assert locator not in dict(store.iter_chunks())
    assert not (folder / f"{locator}.meta").exists()
    assert "damaged" in caplog.text


def test_abandoned_spool_files_are_removed_at_start(tmp_path):
    LocalStore(tmp_path)
    old = tmp_path / "spool" / "upload-old.spool"
    fresh = tmp_path / "spool" / "upload-fresh.spool"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (0, 0))
    LocalStore(tmp_path)
    assert not old.exists() and fresh.exists()
