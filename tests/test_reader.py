"""ChunkReader: any sequence of seeks and reads equals slicing the original bytes, and
no unverified byte is ever returned."""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from davfs.chunk import ChunkMeta, ChunkRef
from davfs.errors import ChunkMissing, IntegrityError
from davfs.reader import ChunkReader, integrity_failures
from davfs.snapshot import Extent, FileSnapshot
from davfs.stores.memory import MemoryStore

EXECUTOR = ThreadPoolExecutor(max_workers=4)
MiB = 1024 * 1024


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.gets: list[tuple[str, int, int]] = []

    def get(self, locator, offset, length):
        self.gets.append((locator, offset, length))
        return super().get(locator, offset, length)


def build(data: bytes, chunk_size: int, block_size: int | None, store: MemoryStore | None = None):
    store = store or MemoryStore()
    extents = []
    for start in range(0, len(data), chunk_size):
        piece = data[start : start + chunk_size]
        meta = ChunkMeta.of(piece, block_size)
        locator = store.put(piece, meta)
        extents.append(Extent(ChunkRef(locator, meta), 0, len(piece)))
    return FileSnapshot("/f", 1, len(data), 0.0, "etag", tuple(extents)), store


operations = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.integers(min_value=-1, max_value=3000)),
        st.tuples(st.just("seek"), st.integers(min_value=0, max_value=3000), st.sampled_from([0, 1, 2])),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(min_value=0, max_value=2500),
    block_size=st.sampled_from([1, 3, 16, 64, 100]),
    blocks_per_chunk=st.integers(min_value=1, max_value=6),
    window=st.integers(min_value=0, max_value=4),
    ops=operations,
)
def test_any_seek_read_sequence_equals_slicing(size, block_size, blocks_per_chunk, window, ops):
    data = os.urandom(size)
    snapshot, store = build(data, block_size * blocks_per_chunk, block_size)
    model = io.BytesIO(data)
    with ChunkReader(snapshot, store, EXECUTOR, window=window) as reader:
        for op in ops:
            if op[0] == "read":
                assert reader.read(op[1]) == model.read(op[1])
            else:
                _, offset, whence = op
                if whence == 1:
                    offset -= 1500
                elif whence == 2:
                    offset -= 3000
                if (
                    (whence == 0 and offset < 0)
                    or (whence == 1 and model.tell() + offset < 0)
                    or (whence == 2 and size + offset < 0)
                ):
                    with pytest.raises(ValueError):
                        reader.seek(offset, whence)
                    continue
                assert reader.seek(offset, whence) == model.seek(offset, whence)
            assert reader.tell() == model.tell()


def test_read_everything_in_wsgidav_sized_pieces():
    data = os.urandom(5 * 1024 * 1024 + 123)
    snapshot, store = build(data, 2 * 1024 * 1024, 1024 * 1024)
    with ChunkReader(snapshot, store, EXECUTOR, window=3) as reader:
        reader.seek(0)
        pieces = []
        while piece := reader.read(1024 * 1024):
            pieces.append(piece)
    assert b"".join(pieces) == data


def test_a_corrupted_block_is_never_returned():
    data = os.urandom(16 * 1024)
    snapshot, store = build(data, 8192, 1024)
    second_chunk = snapshot.extents[1].chunk.locator
    store.corrupt(second_chunk, 3000)  # block 2 of chunk 2 = file bytes 10240..11263
    before = integrity_failures.failures
    with ChunkReader(snapshot, store, EXECUTOR, window=2) as reader:
        assert reader.read(10240) == data[:10240]
        with pytest.raises(IntegrityError):
            reader.read(1)
        reader.seek(11264)
        assert reader.read() == data[11264:]
    assert integrity_failures.failures == before + 1


def test_prime_surfaces_errors_before_streaming():
    data = os.urandom(4096)
    snapshot, store = build(data, 4096, 1024)
    store.corrupt(snapshot.extents[0].chunk.locator, 2048)
    reader = ChunkReader(snapshot, store, EXECUTOR)
    reader.prime(0)  # block 0 is fine
    with pytest.raises(IntegrityError):
        reader.prime(2100)
    store.delete(snapshot.extents[0].chunk.locator)
    with pytest.raises(ChunkMissing):
        ChunkReader(snapshot, store, EXECUTOR).prime(0)


def test_range_read_fetches_only_the_blocks_it_covers():
    data = os.urandom(64 * 1024)
    store = CountingStore()
    snapshot, _ = build(data, 16 * 1024, 1024, store)
    with ChunkReader(snapshot, store, EXECUTOR, window=8) as reader:
        reader.prime(20_000, end=21_500)
        reader.seek(20_000)
        assert reader.read(1500) == data[20_000:21_500]
    # bytes 20000..21499 live in blocks starting at 19456 and 20480 (chunk 2, blocks 3 and 4):
    # one read of the two, nothing else
    assert [(offset, length) for _, offset, length in store.gets] == [(3072, 2048)]


def test_sequential_reads_prefetch_within_the_window():
    """The store is read in windows of up to 1 MiB; a sequential reader fetches at most
    ``window`` of them ahead."""
    data = os.urandom(6 * MiB)
    store = CountingStore()
    snapshot, _ = build(data, 6 * MiB, 64 * 1024, store)
    with ChunkReader(snapshot, store, EXECUTOR, window=2) as reader:
        reader.read(1024)
        reader.read(1024)
        EXECUTOR.submit(lambda: None).result()
        assert {offset for _, offset, _ in store.gets} <= {0, MiB, 2 * MiB}
        assert reader.read() == data[2048:]
    assert sorted((offset, length) for _, offset, length in store.gets) == [(i * MiB, MiB) for i in range(6)]


def test_reader_holds_nothing_request_scoped():
    """The reader's state is the snapshot, the store and the executor: plain objects."""
    snapshot, store = build(b"abc", 16, 16)
    reader = ChunkReader(snapshot, store, EXECUTOR)
    held = {type(v).__module__.split(".")[0] for v in vars(reader).values()}
    assert held <= {"builtins", "davfs", "concurrent", "tests"}


def test_a_range_crossing_blocks_prefetches_nothing_past_its_end():
    data = os.urandom(64 * 1024)
    store = CountingStore()
    snapshot, _ = build(data, 64 * 1024, 1024, store)
    with ChunkReader(snapshot, store, EXECUTOR, window=8) as reader:
        reader.prime(1500, end=3500)
        reader.seek(1500)
        assert reader.read(2000) == data[1500:3500]
        EXECUTOR.submit(lambda: None).result()
    assert [(offset, length) for _, offset, length in store.gets] == [(1024, 3072)]  # blocks 1-3, at once


class TruncatingStore(MemoryStore):
    """A store whose copy of a chunk lost its tail (a cut-off upload, a full disk)."""

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.keep = keep

    def get(self, locator, offset, length):
        return super().get(locator, offset, length)[: max(0, self.keep - offset)]


@pytest.fixture(params=[1, 2], ids=["format1", "format2"])
def chunk_format(request, monkeypatch):
    """New chunks written in each format (1: as the first release wrote them)."""
    from davfs import chunk

    monkeypatch.setattr(chunk, "CURRENT_FORMAT", request.param)
    return request.param


@pytest.mark.parametrize("position", [0, 64 * 1024 + 1, MiB - 1, MiB, 3 * MiB - 1])
def test_a_flipped_byte_is_never_served_in_either_format(chunk_format, position):
    data = os.urandom(3 * MiB)
    snapshot, store = build(data, 3 * MiB, None)
    assert snapshot.extents[0].chunk.meta.format == chunk_format
    store.corrupt(snapshot.extents[0].chunk.locator, position)
    block_size = snapshot.extents[0].chunk.meta.block_size
    damaged_from = position // block_size * block_size
    got = bytearray()
    with ChunkReader(snapshot, store, EXECUTOR, window=2) as reader:
        with pytest.raises(IntegrityError):
            while piece := reader.read(8192):
                got += piece
        # Past the damaged block the file reads on.
        reader.seek(damaged_from + block_size)
        assert reader.read() == data[damaged_from + block_size :]
    assert bytes(got) == data[:damaged_from]


def test_a_truncated_chunk_fails_where_its_bytes_end(chunk_format):
    data = os.urandom(2 * MiB)
    store = TruncatingStore(keep=MiB + 100_000)
    snapshot, _ = build(data, 2 * MiB, None, store)
    block_size = snapshot.extents[0].chunk.meta.block_size
    with ChunkReader(snapshot, store, EXECUTOR, window=1) as reader:
        whole_blocks = (MiB + 100_000) // block_size * block_size
        assert reader.read(whole_blocks) == data[:whole_blocks]
        with pytest.raises(IntegrityError):
            reader.read(1)


def test_a_format_2_range_verifies_only_the_64_kib_blocks_it_covers():
    data = os.urandom(4 * MiB)
    store = CountingStore()
    snapshot, _ = build(data, 4 * MiB, None, store)
    with ChunkReader(snapshot, store, EXECUTOR, window=8) as reader:
        reader.prime(MiB + 70_000, end=MiB + 140_000)
        reader.seek(MiB + 70_000)
        assert reader.read(70_000) == data[MiB + 70_000 : MiB + 140_000]
        EXECUTOR.submit(lambda: None).result()
    assert [(offset, length) for _, offset, length in store.gets] == [(MiB + 65536, 2 * 65536)]


def test_a_read_reaching_damage_returns_the_verified_bytes_before_it_then_fails():
    """read(n) may be short (the blocks before the damage, so a download sends all it
    can); read() of everything never is."""
    data = os.urandom(2 * MiB)
    snapshot, store = build(data, 2 * MiB, None)
    store.corrupt(snapshot.extents[0].chunk.locator, 300 * 1024)  # block 4 of 64 KiB
    with ChunkReader(snapshot, store, EXECUTOR, window=2) as reader:
        assert reader.read(MiB) == data[: 256 * 1024]
        with pytest.raises(IntegrityError):
            reader.read(MiB)
        reader.seek(0)
        with pytest.raises(IntegrityError):
            reader.read()
