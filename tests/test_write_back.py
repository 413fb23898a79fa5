"""Write-back (davfs.staging, davfs.shipper): an upload is answered once durable on this
machine, the shipper moves it into the store, small files share packs, and nothing a
client was told is lost, whatever the store does or when the server is killed."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from davfs.catalog import Catalog
from davfs.chunk import ChunkMeta
from davfs.fsck import fsck
from davfs.gc import collect_garbage
from davfs.manifest import recover
from davfs.staging import StagingArea
from davfs.stores.faulty import FaultPlan, FaultyStore
from davfs.stores.local import LocalStore
from tests.conftest import MiB, RunningServer, ServerProcess
from tests.telegram_rig import TelegramRig

Start = Callable[..., RunningServer]


def staged(server: RunningServer) -> int:
    """How many chunks wait in the staging area."""
    return len(server.app.drive.catalog.staging.to_ship(1_000_000))


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_an_upload_is_answered_before_the_store_holds_it_and_shipped_after(
    start_server: Start, tmp_path: Path
) -> None:
    store = FaultyStore(LocalStore(tmp_path / "store"), FaultPlan(gate_timeout=60))
    server = start_server(store=store, chunk_size="1MiB")
    store.arm(FaultPlan(put="W" * 100, gate_timeout=60))  # the store takes nothing until the gate opens
    big, small = os.urandom(3 * MiB + 1), b"a small file"
    assert requests.put(server.url + "big.bin", data=big, timeout=10).status_code == 201
    assert requests.put(server.url + "small.txt", data=small, timeout=10).status_code == 201
    assert requests.get(server.url + "big.bin").content == big  # read from staging, verified
    assert requests.get(server.url + "small.txt").content == small
    assert not any(True for _ in store.iter_chunks())
    store.gate.set()
    server.ship()
    assert {meta.kind for _, meta in store.iter_chunks()} >= {"data", "pack"}
    assert requests.get(server.url + "big.bin").content == big
    assert requests.get(server.url + "small.txt").content == small
    assert fsck(server.app.drive.catalog, server.app.drive.store, verify=True).lines() == []


def test_a_download_begun_on_the_staged_copy_finishes_after_shipping(start_server: Start) -> None:
    server = start_server(chunk_size="1MiB", prefetch_blocks=0)
    data = os.urandom(6 * MiB)
    requests.put(server.url + "movie.bin", data=data).raise_for_status()
    assert staged(server) == 6
    response = requests.get(server.url + "movie.bin", stream=True, timeout=30)
    pieces = response.iter_content(256 * 1024)
    received = next(pieces)  # the download holds a snapshot of the staged chunks
    server.ship()  # shipped, staging files replaced by forward records
    assert not any((server.config.staging_dir / "chunks").iterdir())
    for piece in pieces:
        received += piece
    assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()


def test_content_restaged_while_its_earlier_copy_ships_is_settled_not_stuck(
    start_server: Start, monkeypatch
) -> None:
    """A race the crash test found: an upload stages bytes the shipper is shipping from
    an earlier upload; the shipment removes the staging file (the same name, the same
    bytes) before the upload commits its staging locator. The shipper finds the bytes
    through the forward record instead of failing on the missing file for ever."""
    server = start_server(chunk_size="1MiB")
    data = os.urandom(MiB)
    requests.put(server.url + "first.bin", data=data).raise_for_status()
    server.ship()
    staging = server.app.drive.staging
    assert staging is not None
    original = StagingArea.put_file

    def staged_then_shipped_away(self: StagingArea, path: str, meta: ChunkMeta) -> str:
        locator = original(self, path, meta)
        self._drop(meta.chunk_hash)  # what the shipment of the earlier copy does meanwhile
        return locator

    monkeypatch.setattr(StagingArea, "put_file", staged_then_shipped_away)
    requests.put(server.url + "second.bin", data=data).raise_for_status()
    monkeypatch.undo()
    assert staged(server) == 1  # the catalog names the staging locator, whose file is gone
    server.ship()
    assert staged(server) == 0
    assert requests.get(server.url + "second.bin").content == data
    assert fsck(server.app.drive.catalog, server.app.drive.store, verify=True).lines() == []


def test_small_files_share_a_pack_and_read_only_their_own_range(
    telegram: TelegramRig, start_server: Start
) -> None:
    server = start_server(store=telegram.open_store(), chunk_size="4MiB")
    files = {f"doc{i:03d}.txt": random.Random(i).randbytes(1000 + 37 * i) for i in range(100)}
    for name, data in files.items():
        assert requests.put(server.url + name, data=data).status_code == 201
    server.ship()
    documents = [m for m in telegram.fake.messages(telegram.channel) if m.document is not None]
    assert len(documents) == 1  # one pack for 100 files (manifests come later)
    telegram.fake.getfile_log.clear()
    name = "doc050.txt"
    assert requests.get(server.url + name).content == files[name]
    offset = sum(len(files[n]) for n in sorted(files) if n < name)
    wanted = range(offset, offset + len(files[name]))
    requests_made = list(telegram.fake.getfile_log)
    assert len(requests_made) == 1  # one aligned window: the file's own bytes
    window_offset, window_limit = requests_made[0]
    assert window_offset <= wanted.start and wanted.stop <= window_offset + window_limit
    assert window_limit <= 16 * 1024  # not the pack: a few KiB around the file


def test_packs_are_sealed_by_age_and_freed_when_no_file_uses_them(start_server: Start, monkeypatch) -> None:
    monkeypatch.setattr("davfs.staging.PACK_AGE", 0.5)
    monkeypatch.setattr("davfs.shipper.PACK_AGE", 0.5)
    server = start_server(chunk_size="1MiB", gc_interval=0, gc_grace=0, trash_days=0)
    for i in range(5):
        requests.put(server.url + f"f{i}.txt", data=b"x" * (i + 1)).raise_for_status()
    wait_until(lambda: not server.app.drive.catalog.staging.open_packs() and staged(server) == 0)
    packs = [c for c, _ in server.app.drive.catalog.fsck.referenced_chunks() if c.meta.kind == "pack"]
    assert len(packs) == 1 and not packs[0].locator.startswith(("open:", "staged:"))
    for i in range(4):
        assert requests.delete(server.url + f"f{i}.txt").status_code == 204
    collect_garbage(server.app.drive.catalog, server.app.drive.store, grace=0)
    assert server.app.drive.backing_store.exists(packs[0].locator)  # f4.txt still uses it
    assert requests.delete(server.url + "f4.txt").status_code == 204
    collect_garbage(server.app.drive.catalog, server.app.drive.store, grace=0)
    assert not server.app.drive.backing_store.exists(packs[0].locator)


def test_store_failures_delay_shipping_and_never_a_client(start_server: Start, tmp_path: Path) -> None:
    store = FaultyStore(LocalStore(tmp_path / "store"))
    server = start_server(store=store, chunk_size="1MiB")
    store.arm(FaultPlan(put="EUL"))  # refused, unavailable, then stored with the answer lost
    data = os.urandom(2 * MiB + 3)
    assert requests.put(server.url + "f.bin", data=data).status_code == 201
    assert requests.get(server.url + "f.bin").content == data
    deadline = time.monotonic() + 60
    while staged(server) and time.monotonic() < deadline:
        server.app.drive.ship_all(timeout=5)
    assert staged(server) == 0
    assert sum(store.injected.values()) == 3
    assert requests.get(server.url + "f.bin").content == data
    health = requests.get(server.url + ".davfs/health").json()["write_back"]
    assert health["pending_bytes"] == 0 and health["last_store_error"] is None  # shipping works again


def test_a_long_flood_wait_delays_shipping_but_no_upload(telegram: TelegramRig, start_server: Start) -> None:
    server = start_server(store=telegram.open_store(), chunk_size="1MiB")
    telegram.fake.inject("SendMediaRequest", "FLOOD_WAIT_300")
    data = os.urandom(MiB + 5)
    started = time.monotonic()
    assert requests.put(server.url + "f.bin", data=data, timeout=30).status_code == 201
    assert time.monotonic() - started < 10
    assert requests.get(server.url + "f.bin").content == data
    shipper = server.app.drive.shipper
    assert shipper is not None
    wait_until(lambda: shipper.state().waiting_until is not None)
    state = shipper.state()
    assert state.waiting_until is not None and state.waiting_until - time.time() > 200
    health = requests.get(server.url + ".davfs/health").json()["write_back"]
    assert "300" in health["last_store_error"] and health["retrying_at"] > time.time() + 200
    assert staged(server) >= 1  # waits, as Telegram asked
    assert requests.put(server.url + "g.bin", data=b"more", timeout=30).status_code == 201


def test_the_staging_limit_makes_uploads_wait_then_refuses_with_retry_after(
    start_server: Start, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr("davfs.staging.ROOM_WAIT", 1.0)
    store = FaultyStore(LocalStore(tmp_path / "store"), FaultPlan(put="W" * 100, gate_timeout=60))
    server = start_server(store=store, chunk_size="1MiB", staging_limit="64MiB")
    data = os.urandom(MiB - 1)
    for i in range(64):  # 64 chunks of 1 MiB: the limit
        assert requests.put(server.url + f"f{i}.bin", data=data + bytes([i])).status_code == 201
    refused = requests.put(server.url + "one-too-many.bin", data=data + b"!", timeout=30)
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
    assert requests.get(server.url + "one-too-many.bin").status_code == 404
    store.gate.set()
    server.ship()
    assert requests.put(server.url + "one-too-many.bin", data=data + b"!", timeout=30).status_code == 201


def test_a_full_staging_disk_is_507_and_changes_nothing(start_server: Start, monkeypatch) -> None:
    server = start_server(chunk_size="1MiB")
    assert requests.put(server.url + "big.bin", data=b"o" * (MiB // 2)).status_code == 201
    assert requests.put(server.url + "small.txt", data=b"old").status_code == 201
    real_replace, real_fdatasync = os.replace, os.fdatasync

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("davfs.staging.os.replace", full)
    monkeypatch.setattr("davfs.staging.os.fdatasync", full)
    for name, data in (("big.bin", b"n" * (MiB // 2)), ("small.txt", b"new")):
        r = requests.put(server.url + name, data=data)
        assert r.status_code == 507 and "no space left" in r.text.lower(), name
    monkeypatch.setattr("davfs.staging.os.replace", real_replace)
    monkeypatch.setattr("davfs.staging.os.fdatasync", real_fdatasync)
    assert requests.get(server.url + "big.bin").content == b"o" * (MiB // 2)
    assert requests.get(server.url + "small.txt").content == b"old"


def test_a_lost_answer_during_shipping_leaves_nothing_behind(
    telegram: TelegramRig, start_server: Start
) -> None:
    server = start_server(store=telegram.open_store(), chunk_size="1MiB", gc_interval=0)
    data = os.urandom(MiB + 1)
    requests.put(server.url + "f.bin", data=data).raise_for_status()
    telegram.fake.lose_confirmation("SendMediaRequest", times=1)  # stored, but the answer is lost
    server.ship()
    referenced = {c.locator for c, _ in server.app.drive.catalog.fsck.referenced_chunks()}
    messages = {str(m.id) for m in telegram.fake.messages(telegram.channel) if m.document is not None}
    assert referenced <= messages
    catalog, store = server.app.drive.catalog, server.app.drive.store
    collect_garbage(catalog, store, grace=3600)  # strays are noted, kept for the grace period
    strays = messages - referenced
    collect_garbage(catalog, store, grace=0)
    remaining = {str(m.id) for m in telegram.fake.messages(telegram.channel) if m.document is not None}
    assert not strays & remaining
    assert referenced <= remaining
    assert requests.get(server.url + "f.bin").content == data


def test_a_duplicate_copy_older_than_the_grace_is_collected(
    telegram: TelegramRig, start_server: Start
) -> None:
    """A copy posted twice (e.g. a send that executed after its retry): the second is a
    stray from the first scan that sees it, deleted one grace period later."""
    server = start_server(store=telegram.open_store(), chunk_size="1MiB", gc_interval=0)
    data = os.urandom(MiB + 7)
    requests.put(server.url + "f.bin", data=data).raise_for_status()
    server.ship()
    catalog, store = server.app.drive.catalog, server.app.drive.backing_store
    chunk, _ = next((c, p) for c, p in catalog.fsck.referenced_chunks() if c.meta.kind == "data")
    extra = store.put(store.get(chunk.locator, 0, chunk.size), chunk.meta)
    assert extra != chunk.locator
    collect_garbage(catalog, server.app.drive.store, grace=3600)
    assert store.exists(extra)
    collect_garbage(catalog, server.app.drive.store, grace=0)
    assert not store.exists(extra) and store.exists(chunk.locator)


def test_the_channel_alone_rebuilds_what_was_shipped(
    telegram: TelegramRig, start_server: Start, tmp_path: Path
) -> None:
    server = start_server(store=telegram.open_store(), chunk_size="1MiB")
    rng = random.Random(3)
    files = {
        f"d{i % 3}/f{i:03d}.bin": rng.randbytes(rng.choice([100, 5000, 300_000, 2 * MiB + 5]))
        for i in range(30)
    }
    for folder in ("d0", "d1", "d2"):
        requests.request("MKCOL", server.url + folder).raise_for_status()
    for path, data in files.items():
        assert requests.put(server.url + path, data=data).status_code == 201
    server.ship()
    server.stop()
    fresh = Catalog(f"sqlite:///{tmp_path / 'fresh.sqlite'}")
    store = telegram.open_store()
    report = recover(fresh, store)
    assert report.problems == []
    rebuilt = launch_on(start_server, fresh, store, tmp_path)
    for path, data in files.items():
        assert requests.get(rebuilt.url + path).content == data, path


def test_a_lost_machine_loses_only_what_was_not_shipped(
    start_server: Start, tmp_path: Path, monkeypatch
) -> None:
    """Manifests name only shipped content: recover from the store alone rebuilds the
    last shipped state, with the previous content of a file whose new content never
    left the machine, and reports nothing broken."""
    store = LocalStore(tmp_path / "store")
    server = start_server(store=store, chunk_size="1MiB")
    shipped, first = os.urandom(MiB + 7), b"first content"
    assert requests.put(server.url + "shipped.bin", data=shipped).status_code == 201
    assert requests.put(server.url + "replaced.txt", data=first).status_code == 201
    server.ship()
    server.app.drive.manifests.flush()
    monkeypatch.setattr("davfs.shipper.Shipper.run_once", lambda self: False)  # the store is behind
    assert requests.put(server.url + "staged.bin", data=os.urandom(MiB + 9)).status_code == 201
    assert requests.put(server.url + "staged.txt", data=b"small").status_code == 201
    assert requests.put(server.url + "replaced.txt", data=b"second content").status_code == 204
    assert requests.request("MKCOL", server.url + "later").status_code == 201  # logged after them
    server.stop()
    fresh = Catalog(f"sqlite:///{tmp_path / 'fresh.sqlite'}")  # the machine, staging and all, is gone
    report = recover(fresh, store)
    assert report.problems == []
    rebuilt = launch_on(start_server, fresh, store, tmp_path)
    assert requests.get(rebuilt.url + "shipped.bin").content == shipped
    assert requests.get(rebuilt.url + "replaced.txt").content == first
    for missing in ("staged.bin", "staged.txt", "later"):
        assert requests.request("PROPFIND", rebuilt.url + missing, headers={"Depth": "0"}).status_code == 404


def launch_on(start_server: Start, catalog: Catalog, store: object, tmp_path: Path) -> RunningServer:
    url = catalog.url
    catalog.close()
    return start_server(store=store, data_dir=tmp_path / "rebuilt", catalog_url=url, chunk_size="1MiB")


@pytest.mark.slow
def test_kill_9_during_staging_sealing_and_shipping_loses_nothing_acknowledged(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Rounds of uploads killed at random moments: every acknowledged file reads back
    byte-exact after the restart, fsck finds nothing wrong, shipping resumes and ends
    with the store holding every byte, and gc leaves nothing shipped twice."""
    data_dir = tmp_path / "data"
    env = {"DAVFS_CHUNK_SIZE": "1MiB", "DAVFS_GC_INTERVAL": "0"}
    acknowledged: dict[str, bytes] = {}
    rng = random.Random(5)
    for round_number in range(6):
        server = server_process(data_dir, env=env)
        deadline = time.monotonic() + rng.uniform(0.5, 2.5)
        with requests.Session() as http:
            i = 0
            while time.monotonic() < deadline:
                path = f"r{round_number}-{i}.bin"
                data = rng.randbytes(rng.choice([10, 4000, 200_000, 1_500_000]))
                try:
                    if http.put(server.url + path, data=data, timeout=10).status_code == 201:
                        acknowledged[path] = data
                except requests.RequestException:
                    break
                i += 1
        server.kill()
    server = server_process(data_dir, env=env)
    with requests.Session() as http:
        for path, data in acknowledged.items():
            assert http.get(server.url + path).content == data, path
    server.stop()
    catalog = Catalog(f"sqlite:///{data_dir / 'catalog.sqlite'}")
    store = StagingArea(LocalStore(data_dir / "store"), data_dir / "staging", limit=1 << 40)
    try:
        assert fsck(catalog, store, verify=True).lines() == []
        from davfs.shipper import Shipper
        from davfs.staging import Packer

        shipper = Shipper(
            catalog, store, Packer(store, chunk_size=MiB, seal=catalog.staging.seal), forward_keep=0
        )
        left = shipper.drain(timeout=120)
        shipper.close()
        assert left == 0
        collect_garbage(catalog, store, grace=0)
        collect_garbage(catalog, store, grace=0)  # strays noted in the first run go in the second
        referenced = {c.locator for c, _ in catalog.fsck.referenced_chunks()}
        in_store = {loc for loc, meta in store.iter_chunks() if meta.kind in ("data", "pack")}
        assert in_store <= referenced, "a chunk shipped twice was left behind"
        assert fsck(catalog, store, verify=True).lines() == []
    finally:
        catalog.close()


def test_what_the_format_1_code_left_staged_ships_and_reads_after_the_upgrade(
    start_server: Start, tmp_path: Path, monkeypatch
) -> None:
    """The release before chunk format 2 staged chunks and packs hashed in format 1 (SHA-256,
    1 MiB blocks). A machine upgraded with some of that still waiting, one pack left open
    by a process that died, ships it as it was hashed, next to new format-2 packs."""
    from davfs import chunk
    from davfs.staging import Packer

    data_dir = tmp_path / "data"
    monkeypatch.setattr(chunk, "CURRENT_FORMAT", chunk.FORMAT_SHA256)  # as the earlier code wrote
    monkeypatch.setattr("davfs.shipper.Shipper.run_once", lambda self: False)  # nothing ships yet
    monkeypatch.setattr(Packer, "seal_now", lambda self: None)  # the process dies with its pack open
    old = start_server(data_dir=data_dir, chunk_size="1MiB")
    before = {f"old{i}.txt": os.urandom(1000 + i) for i in range(3)} | {"old.bin": os.urandom(MiB + 17)}
    for name, data in before.items():
        requests.put(old.url + name, data=data).raise_for_status()
    old.stop()
    catalog = Catalog(f"sqlite:///{data_dir / 'catalog.sqlite'}")
    try:
        assert set(catalog.staging.open_packs().values()) == {(chunk.FORMAT_SHA256, MiB)}
        assert {c.meta.format for c in catalog.staging.all_waiting()} == {chunk.FORMAT_SHA256}
    finally:
        catalog.close()
    monkeypatch.undo()

    monkeypatch.setattr("davfs.shipper.PACK_AGE", 0.01)  # the open pack is old: its process died
    new = start_server(data_dir=data_dir, chunk_size="1MiB")
    after = {f"new{i}.txt": os.urandom(2000 + i) for i in range(3)}
    for name, data in after.items():
        requests.put(new.url + name, data=data).raise_for_status()
    new.ship()
    assert staged(new) == 0 and not new.app.drive.catalog.staging.open_packs()
    formats = {c.meta.format for c, _ in new.app.drive.catalog.fsck.referenced_chunks()}
    assert formats == {chunk.FORMAT_SHA256, chunk.FORMAT_BLAKE3}
    for name, data in {**before, **after}.items():
        assert requests.get(new.url + name).content == data, name
    assert fsck(new.app.drive.catalog, new.app.drive.store, verify=True).lines() == []
