"""`davfs fsck`: clean when every file is whole; names the files a problem breaks."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from davfs.chunk import ChunkMeta
from davfs.cli import main as cli_main
from davfs.stores.local import LocalStore
from davfs.stores.memory import MemoryStore
from tests.conftest import MiB, RunningServer


def data_with_files(start_server: Callable[..., RunningServer]) -> tuple[Path, dict[str, str]]:
    """A stopped server's data folder with two files; {path: locator of its first chunk}."""
    running = start_server(chunk_size="1MiB")
    first_chunks = {}
    for name, size in (("one.bin", 2 * MiB + 3), ("two.bin", 5000)):
        requests.put(running.url + name, data=os.urandom(size)).raise_for_status()
    running.ship()  # the store holds every byte
    for name in ("one.bin", "two.bin"):
        node = running.app.drive.catalog.tree.resolve([name])
        assert node is not None and node.version_id is not None
        first_chunks[name] = (
            running.app.drive.catalog.tree.snapshot(node.version_id, name).extents[0].chunk.locator
        )
    requests.request("COPY", running.url + "two.bin", headers={"Destination": running.url + "copy.bin"})
    running.stop()
    return running.config.data_dir, first_chunks


def run_fsck(data_dir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli_main(["-c", os.devnull, "-d", str(data_dir), "fsck", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_whole_drive_is_clean(
    start_server: Callable[..., RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, _ = data_with_files(start_server)
    assert run_fsck(data_dir, capsys) == (0, "clean\n")
    code, output = run_fsck(data_dir, capsys, "--verify")
    assert code == 0 and "4 chunks" in output  # 3 for one.bin, 1 shared by two and its copy


def test_a_damaged_chunk_is_found_by_verify_and_named_by_path(
    start_server: Callable[..., RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, first_chunks = data_with_files(start_server)
    chunk_file = next((data_dir / "store" / "chunks").glob(f"*/{first_chunks['one.bin']}.chunk"))
    with open(chunk_file, "r+b") as handle:
        handle.seek(MiB - 1)
        byte = handle.read(1)
        handle.seek(MiB - 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert run_fsck(data_dir, capsys)[0] == 0  # the chunk is there; only --verify reads it
    code, output = run_fsck(data_dir, capsys, "--verify")
    assert code == 1 and "damaged" in output and "/one.bin" in output and "/two.bin" not in output


def test_a_missing_chunk_names_every_file_that_uses_it(
    start_server: Callable[..., RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, first_chunks = data_with_files(start_server)
    LocalStore(str(data_dir / "store")).delete(first_chunks["two.bin"])
    code, output = run_fsck(data_dir, capsys)
    assert code == 1 and "missing" in output and "/two.bin" in output and "/copy.bin" in output


def test_a_wrong_reference_count_is_a_catalog_problem(
    start_server: Callable[..., RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, _ = data_with_files(start_server)
    from davfs.catalog import Catalog

    catalog = Catalog(f"sqlite:///{data_dir / 'catalog.sqlite'}")
    with catalog.db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE chunks SET refcount = refcount + 5")
    catalog.close()
    code, output = run_fsck(data_dir, capsys)
    assert code == 1 and "reference count" in output


def test_chunks_only_replaced_versions_hold_must_still_be_there(
    start_server: Callable[..., RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    """A download that started before an overwrite still reads the old chunks."""
    data_dir, first_chunks = data_with_files(start_server)
    running = start_server(data_dir=data_dir, chunk_size="1MiB")
    requests.put(running.url + "one.bin", data=b"replaced").raise_for_status()
    running.stop()
    assert run_fsck(data_dir, capsys)[0] == 0
    LocalStore(str(data_dir / "store")).delete(first_chunks["one.bin"])
    code, output = run_fsck(data_dir, capsys, "--verify")
    assert code == 1 and "no current file" in output


def test_repair_marks_a_broken_file_which_stays_listed_fails_clearly_and_heals_on_upload(
    start_server: Callable[..., RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, first_chunks = data_with_files(start_server)
    LocalStore(str(data_dir / "store")).delete(first_chunks["one.bin"])
    code, output = run_fsck(data_dir, capsys, "--repair")
    assert code == 1 and "marked damaged" in output and "/one.bin" in output
    code, output = run_fsck(data_dir, capsys)  # the mark stays until healed
    assert code == 1 and "missing from the store (marked damaged)" in output

    running = start_server(data_dir=data_dir, chunk_size="1MiB")
    listing = requests.request("PROPFIND", running.url, headers={"Depth": "1"}).text
    assert "one.bin" in listing  # still listed
    broken = requests.get(running.url + "one.bin", timeout=10)
    assert broken.status_code == 500 and "is damaged" in broken.text and "fsck" in broken.text
    assert requests.get(running.url + "two.bin").status_code == 200  # the others are fine
    requests.put(running.url + "other.bin", data=os.urandom(1)).raise_for_status()  # heals nothing
    running.stop()
    assert run_fsck(data_dir, capsys)[0] == 1


def test_uploading_the_same_content_again_heals_a_marked_chunk(
    start_server: Callable[..., RunningServer], capsys: pytest.CaptureFixture[str]
) -> None:
    running = start_server(chunk_size="1MiB")
    data = os.urandom(MiB + 10)
    requests.put(running.url + "f.bin", data=data).raise_for_status()
    running.ship()
    node = running.app.drive.catalog.tree.resolve(["f.bin"])
    assert node is not None and node.version_id is not None
    chunk = running.app.drive.catalog.tree.snapshot(node.version_id, "/f.bin").extents[0].chunk
    running.stop()
    data_dir = running.config.data_dir
    LocalStore(str(data_dir / "store")).delete(chunk.locator)
    assert run_fsck(data_dir, capsys, "--repair")[0] == 1
    running = start_server(data_dir=data_dir, chunk_size="1MiB")
    assert requests.get(running.url + "f.bin").status_code == 500
    requests.put(running.url + "copy-of-f.bin", data=data).raise_for_status()  # the user copies it back
    assert requests.get(running.url + "f.bin").content == data
    running.ship()
    running.stop()
    assert run_fsck(data_dir, capsys, "--verify") == (0, "clean, 2 chunks (1048586 bytes) re-hashed\n")


class CopiesStore(MemoryStore):
    """Like Telegram, every put is a new copy with a locator of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.properties = dataclasses.replace(self.properties, content_addressed=False)
        self._copies = 0

    def put(self, data: bytes | memoryview, meta: ChunkMeta) -> str:
        self._copies += 1
        locator = f"{meta.chunk_hash}-{self._copies}"
        with self._lock:
            self._chunks[locator] = (bytes(data), meta)
        return locator


def test_repair_points_a_broken_chunk_at_another_intact_copy(tmp_path: Path) -> None:
    from davfs.catalog import ROOT_ID, Catalog
    from davfs.fsck import fsck, repair
    from davfs.writer import ChunkWriter, UploadTarget

    catalog, store = Catalog(f"sqlite:///{tmp_path / 'c.sqlite'}"), CopiesStore()
    data = os.urandom(300_000)
    with ThreadPoolExecutor(2) as pool:
        writer = ChunkWriter(
            UploadTarget(ROOT_ID, "f", "/f"),
            catalog.uploads,
            store,
            pool,
            expected_size=len(data),
            chunk_size=MiB,
        )
        writer.write(data)
        writer.close()
    first = catalog.uploads.locator_of(ChunkMeta.of(data).chunk_hash)
    second = store.put(data, ChunkMeta.of(data))  # e.g. a re-upload after a lost confirmation
    store.put(b"\0" * len(data), ChunkMeta.of(data))  # a damaged third copy is not used
    assert first is not None
    store.delete(first)
    report = fsck(catalog, store, verify=True)
    assert list(report.missing) == [ChunkMeta.of(data).chunk_hash]
    repair(catalog, store, report)
    assert report.relocated == [ChunkMeta.of(data).chunk_hash] and not report.newly_marked
    assert catalog.uploads.locator_of(ChunkMeta.of(data).chunk_hash) == second
    assert fsck(catalog, store, verify=True).clean
    catalog.close()


def test_an_interrupted_verification_continues_where_it_stopped(
    start_server: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from davfs import fsck as fsck_module
    from davfs.catalog import Catalog

    running = start_server(chunk_size="1MiB")
    for i in range(6):
        requests.put(running.url + f"f{i}", data=os.urandom(MiB)).raise_for_status()
    running.ship()
    running.stop()
    catalog = Catalog(running.config.catalog_url)
    store = LocalStore(str(running.config.data_dir / "store"))
    checkpoint = fsck_module.Checkpoint(tmp_path / "fsck-verify.json")
    monkeypatch.setattr(fsck_module, "CHECKPOINT_SECONDS", 0.0)
    read = []

    def stop_after_three(n: int) -> None:
        read.append(n)
        if len(read) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fsck_module.fsck(catalog, store, verify=True, progress=stop_after_three, checkpoint=checkpoint)
    assert checkpoint.path.exists()
    resumed = fsck_module.fsck(
        catalog,
        store,
        verify=True,
        progress=read.append,
        checkpoint=fsck_module.Checkpoint.load(checkpoint.path),
    )
    assert resumed.resumed_after and resumed.clean
    assert resumed.chunks_verified == 6 and len(read) == 3 + 4  # the third chunk is read again
    assert not checkpoint.path.exists()  # finished: the next run starts from the beginning
    catalog.close()


def test_the_rate_limit_paces_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    from davfs import fsck as fsck_module

    clock = [100.0]
    monkeypatch.setattr("davfs.fsck.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("davfs.fsck.time.sleep", lambda seconds: clock.__setitem__(0, clock[0] + seconds))
    throttle = fsck_module._Throttle(2 * MiB)
    for _ in range(10):
        throttle.take(MiB)
    assert clock[0] == pytest.approx(100.0 + 5.0)  # 10 MiB at 2 MiB/s
