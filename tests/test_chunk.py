"""Chunk formats: how a chunk is hashed in each, and that a hash of one format never
passes for another (invariant 2 holds for every format ever written)."""

from __future__ import annotations

import hashlib
import os

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from davfs import chunk
from davfs.chunk import (
    BLOCK_SIZES,
    FORMAT_BLAKE3,
    FORMAT_SHA256,
    ChunkHasher,
    ChunkMeta,
    ChunkRef,
    chunk_hash_of,
    verified_blocks,
)
from davfs.errors import IntegrityError
from davfs.stores.memory import MemoryStore

KiB = 1024
MiB = 1024 * KiB


def test_new_chunks_are_format_2_with_64_kib_blocks():
    data = os.urandom(200 * KiB)
    meta = ChunkMeta.of(data)
    assert (meta.format, meta.block_size) == (FORMAT_BLAKE3, 64 * KiB)
    assert meta.block_hashes == b"".join(
        blake3.blake3(data[i : i + 64 * KiB]).digest() for i in range(0, len(data), 64 * KiB)
    )
    assert meta.chunk_hash == chunk_hash_of(len(data), 64 * KiB, meta.block_hashes)


def test_format_1_is_what_the_first_release_wrote():
    data = os.urandom(MiB + 5)
    meta = ChunkMeta.of(data, format=FORMAT_SHA256)
    assert meta.block_size == MiB
    assert meta.chunk_hash == hashlib.sha256(data).hexdigest()
    assert meta.block_hashes == hashlib.sha256(data[:MiB]).digest() + hashlib.sha256(data[MiB:]).digest()


def test_the_current_format_is_read_when_hashing_starts(monkeypatch):
    """Tests write the first release's format by setting CURRENT_FORMAT, as an old davfs would."""
    monkeypatch.setattr(chunk, "CURRENT_FORMAT", FORMAT_SHA256)
    assert ChunkMeta.of(b"old").format == FORMAT_SHA256


@settings(max_examples=60, deadline=None)
@given(
    pieces=st.lists(st.integers(min_value=0, max_value=150 * KiB), max_size=6),
    format=st.sampled_from(sorted(BLOCK_SIZES)),
)
def test_hashing_in_pieces_equals_hashing_whole(pieces, format):
    data = os.urandom(sum(pieces))
    hasher = ChunkHasher(format=format)
    position = 0
    for size in pieces:
        hasher.update(data[position : position + size])
        position += size
    assert hasher.meta() == ChunkMeta.of(data, format=format)


@pytest.mark.parametrize("format", sorted(BLOCK_SIZES))
@pytest.mark.parametrize("position", [0, 64 * KiB - 1, 64 * KiB, 300 * KiB, -1])
def test_any_changed_byte_changes_the_chunk_hash(format, position):
    data = bytearray(os.urandom(300 * KiB + 7))
    before = ChunkMeta.of(bytes(data), format=format)
    data[position] ^= 1
    after = ChunkMeta.of(bytes(data), format=format)
    assert after.chunk_hash != before.chunk_hash
    assert after.block_hashes != before.block_hashes


def test_the_chunk_hash_binds_size_and_block_size():
    hashes = os.urandom(64)
    assert (
        len({chunk_hash_of(100, 64, hashes), chunk_hash_of(101, 64, hashes), chunk_hash_of(100, 128, hashes)})
        == 3
    )


def test_the_two_formats_never_share_a_hash():
    data = os.urandom(70 * KiB)
    one, two = ChunkMeta.of(data, format=FORMAT_SHA256), ChunkMeta.of(data, format=FORMAT_BLAKE3)
    assert one.chunk_hash != two.chunk_hash
    assert one.block_hashes[:32] != two.block_hashes[:32]


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown chunk format 3"):
        ChunkHasher(format=3)


def _stored(data: bytes, format: int) -> tuple[MemoryStore, ChunkRef]:
    store = MemoryStore()
    meta = ChunkMeta.of(data, format=format)
    return store, ChunkRef(store.put(data, meta), meta)


@pytest.mark.parametrize("format", sorted(BLOCK_SIZES))
def test_verified_blocks_reads_every_byte_in_windows_of_at_most_1_mib(format):
    data = os.urandom(2 * MiB + 100 * KiB)
    store, ref = _stored(data, format)
    reads: list[int] = []
    assert b"".join(verified_blocks(store, ref, before_read=reads.append)) == data
    assert reads == [MiB, MiB, 100 * KiB]


@pytest.mark.parametrize("format", sorted(BLOCK_SIZES))
@pytest.mark.parametrize("position", [0, 70 * KiB, MiB + 5, 2 * MiB + 99 * KiB])
def test_verified_blocks_stops_at_a_damaged_block(format, position):
    data = os.urandom(2 * MiB + 100 * KiB)
    store, ref = _stored(data, format)
    store.corrupt(ref.locator, position)
    good = b""
    with pytest.raises(IntegrityError):
        for window in verified_blocks(store, ref):
            good += window
    assert good == data[: position // MiB * MiB]  # nothing of the damaged window


@pytest.mark.parametrize("claimed, written", [(FORMAT_SHA256, FORMAT_BLAKE3), (FORMAT_BLAKE3, FORMAT_SHA256)])
def test_a_chunk_claiming_the_other_format_fails(claimed, written):
    """A record whose format marker is wrong (hand-edited, or a bug) cannot pass its
    block hashes off as the other format's."""
    data = os.urandom(100 * KiB)
    store, ref = _stored(data, written)
    wrong = ChunkMeta(
        ref.meta.chunk_hash, ref.meta.size, ref.meta.block_size, ref.meta.block_hashes, format=claimed
    )
    with pytest.raises(IntegrityError):
        list(verified_blocks(store, ChunkRef(ref.locator, wrong)))
