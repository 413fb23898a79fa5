"""`davfs fsck`: clean when every file is whole; names the files a problem breaks."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from davfs.cli import main as cli_main
from davfs.stores.local import LocalStore
from tests.conftest import MiB, RunningServer


def data_with_files(start_server: Callable[..., RunningServer]) -> tuple[Path, dict[str, str]]:
    """A stopped server's data folder with two files; {path: locator of its first chunk}."""
    running = start_server(chunk_size="1MiB")
    first_chunks = {}
    for name, size in (("one.bin", 2 * MiB + 3), ("two.bin", 5000)):
        requests.put(running.url + name, data=os.urandom(size)).raise_for_status()
        node = running.app.catalog.resolve([name])
        assert node is not None and node.version_id is not None
        first_chunks[name] = running.app.catalog.snapshot(node.version_id, name).extents[0].chunk.locator
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
    with catalog.engine.begin() as conn:
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
