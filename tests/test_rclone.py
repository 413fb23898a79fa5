"""rclone (webdav backend) as a real client against a real davfs server.

A 200-file tree (nested folders, spaces, non-ASCII and URL-special names, a 0-byte file,
files spanning several chunks, a 300 MiB file) goes up with ``rclone copy``, is compared
byte for byte with ``rclone check --download``, listed with ``rclone lsf``/``lsjson``,
read back in ranges with ``rclone cat --offset --count``, and removed with ``rclone purge``.
The tree test runs once with 1 MiB chunks (every file over 1 MiB spans several chunks)
and once with the production default of 20 MiB chunks (1 MiB verification blocks and
chunk boundaries differ). A second test uses ``vendor=owncloud``, whose ``X-OC-Mtime``
header davfs honours, and checks that modification times survive the upload.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import RunningServer
from tests.telegram_rig import TelegramRig

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
BIG_NAME = "big file.bin"
BIG_SIZE = 300 * MiB
FILE_COUNT = 200
RCLONE_FLAGS = [
    "--transfers",
    "4",
    "--checkers",
    "4",
    "--timeout",
    "60s",
    "--contimeout",
    "10s",
    # A client must not need retries against a local server: surface every error.
    "--retries",
    "1",
    "--low-level-retries",
    "1",
]

DIRS = [
    "",
    "Grüße",
    "日本語",
    "docs and notes",
    "Grüße/zweite Ebene",
    "Grüße/zweite Ebene/dritte Ebene",
    "日本語/サブ フォルダ",
    "日本語/サブ フォルダ/深い",
    "docs and notes/a b c/x y z",
]
SPECIAL_FILES = {
    "naïve café.txt": 1234,
    "empty.bin": 0,
    "one byte": 1,
    "Grüße/Grüße.txt": 777,
    "日本語/日本語.txt": 4096,
    "日本語/サブ フォルダ/深い/ファイル 名.dat": 65_537,
    "docs and notes/100% sure.txt": 10,
    "docs and notes/a&b=c.txt": 11,
    "docs and notes/hash#tag.txt": 12,
    "docs and notes/plus+sign.txt": 13,
    "docs and notes/[brackets] (1).txt": 14,
    "docs and notes/it's here.txt": 15,
    # Around the 1 MiB block (and, with the 1 MiB server, chunk) size.
    "Grüße/zweite Ebene/block minus one.bin": MiB - 1,
    "Grüße/zweite Ebene/exactly one block.bin": MiB,
    "Grüße/zweite Ebene/block plus one.bin": MiB + 1,
    "Grüße/zweite Ebene/dritte Ebene/two blocks.bin": 2 * MiB,
    "Grüße/zweite Ebene/dritte Ebene/two and a half.bin": 5 * MiB // 2 + 7,
    "日本語/サブ フォルダ/three plus.bin": 3 * MiB + 12_345,
    "docs and notes/a b c/x y z/five plus one.bin": 5 * MiB + 1,
    # Spans two chunks even on the 20 MiB server.
    "docs and notes/a b c/twenty-one.bin": 21 * MiB + 3,
}


@dataclass(frozen=True)
class LocalTree:
    root: Path
    sizes: dict[str, int]  # relative POSIX path → size

    @property
    def big(self) -> Path:
        return self.root / BIG_NAME


@pytest.fixture(scope="module")
def local_tree(tmp_path_factory: pytest.TempPathFactory) -> LocalTree:
    """200 files of random bytes (sizes from a fixed seed), built once per module."""
    root = tmp_path_factory.mktemp("rclone-src") / "tree"
    rng = random.Random(20240601)
    sizes: dict[str, int] = dict(SPECIAL_FILES)
    index = 0
    while len(sizes) < FILE_COUNT - 1:
        folder = DIRS[index % len(DIRS)]
        name = f"file {index:03d}{rng.choice(['.txt', '.bin', '', ' ü.dat'])}"
        sizes[f"{folder}/{name}" if folder else name] = rng.randint(0, 200_000)
        index += 1
    for rel, size in sizes.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            remaining = size
            while remaining:
                piece = min(MiB, remaining)
                out.write(os.urandom(piece))
                remaining -= piece
    with open(root / BIG_NAME, "wb") as out:
        for _ in range(BIG_SIZE // MiB):
            out.write(os.urandom(MiB))
    sizes[BIG_NAME] = BIG_SIZE
    assert len(sizes) == FILE_COUNT
    return LocalTree(root, sizes)


def rclone_binary() -> str:
    path = shutil.which("rclone")
    if path is None:
        pytest.fail("the `rclone` binary is not on PATH (Debian/Ubuntu: apt-get install rclone)")
    return path


@dataclass
class Rclone:
    binary: str
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        """``rclone ARGS RCLONE_FLAGS``; fails the test on a timeout or a non-zero exit."""
        command = [self.binary, *args, *RCLONE_FLAGS]
        try:
            result = subprocess.run(command, env=self.env, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            stderr = _text(exc.stderr)
            pytest.fail(f"{command} did not finish within {timeout} s; stderr:\n{stderr}")
        assert result.returncode == 0, (
            f"{command} exited {result.returncode}\nstdout:\n{_text(result.stdout)[-5000:]}"
            f"\nstderr:\n{_text(result.stderr)[-20000:]}"
        )
        return result


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")


def make_rclone(url: str, home: Path, vendor: str) -> Rclone:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RCLONE_") and not k.lower().endswith("_proxy")
    }
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        TZ="UTC",
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_CONFIG_HOME=str(home / "config"),
        RCLONE_CONFIG=os.devnull,
        RCLONE_CONFIG_DAV_TYPE="webdav",
        RCLONE_CONFIG_DAV_URL=url,
        RCLONE_CONFIG_DAV_VENDOR=vendor,
    )
    return Rclone(rclone_binary(), env)


def copied(stderr: bytes) -> list[str]:
    """Names rclone -v reported as copied."""
    return re.findall(r"INFO  : (.+?): Copied \(", _text(stderr))


def errors(stderr: bytes) -> list[str]:
    return [line for line in _text(stderr).splitlines() if "ERROR" in line]


@pytest.mark.parametrize("chunk_size", ["1MiB", "20MiB", "telegram-4MiB"])
def test_rclone_copy_check_list_cat_purge(
    telegram: TelegramRig,  # first, so it outlives the servers that use it
    start_server: Callable[..., RunningServer],
    local_tree: LocalTree,
    tmp_path: Path,
    chunk_size: str,
) -> None:
    if chunk_size.startswith("telegram-"):
        server = start_server(store=telegram.open_store(), chunk_size=chunk_size.removeprefix("telegram-"))
    else:
        server = start_server(chunk_size=chunk_size)
    chunk = server.config.chunk_size
    rclone = make_rclone(server.url, tmp_path / "home", vendor="other")
    src = str(local_tree.root)

    upload = rclone.run("copy", src, "dav:tree", "-v", timeout=150)
    assert not errors(upload.stderr), _text(upload.stderr)
    assert sorted(copied(upload.stderr)) == sorted(local_tree.sizes), _text(upload.stderr)

    check = rclone.run("check", "--download", src, "dav:tree", timeout=150)
    report = _text(check.stderr)
    assert "0 differences found" in report, report
    assert f"{FILE_COUNT} matching files" in report, report

    listing = rclone.run("lsf", "-R", "--files-only", "dav:tree")
    listed = _text(listing.stdout).splitlines()
    assert len(listed) == FILE_COUNT, listed
    assert sorted(listed) == sorted(local_tree.sizes)

    entries = json.loads(rclone.run("lsjson", "-R", "--files-only", "dav:tree").stdout)
    assert {e["Path"]: e["Size"] for e in entries} == local_tree.sizes

    # Sizes match, so a second copy must transfer nothing.
    again = rclone.run("copy", src, "dav:tree", "-v", timeout=60)
    assert copied(again.stderr) == [], _text(again.stderr)
    assert not errors(again.stderr), _text(again.stderr)

    ranges = [
        (0, 1),
        (0, 1000),
        (0, 3 * MiB + 5),  # several blocks from the start
        (12_345, 54_321),  # unaligned, inside the first block
        (chunk // 2 + 4_097, 777),  # unaligned, mid-chunk
        (7 * MiB - 100, 200),  # crosses a 1 MiB block boundary (inside a chunk on 20 MiB)
        (3 * chunk - 5_000, 10_000),  # crosses a chunk boundary
        (2 * chunk - 1, 2 * chunk + 2),  # spans more than two whole chunks
        (5 * chunk, MiB),  # exactly one aligned block at a chunk start
        (123 * MiB + 999_999, 4 * MiB + 3),  # deep inside, several blocks
        (BIG_SIZE - MiB - 10, 20),  # crosses the last block boundary
        (BIG_SIZE - 1000, 1000),  # the tail
        (BIG_SIZE - 1, 1),  # the last byte
        (BIG_SIZE - 10, 100),  # count past the end: only the remaining 10 bytes
    ]
    with open(local_tree.big, "rb") as local:
        for offset, count in ranges:
            result = rclone.run("cat", "--offset", str(offset), "--count", str(count), f"dav:tree/{BIG_NAME}")
            local.seek(offset)
            expected = local.read(count)
            assert len(result.stdout) == len(expected), (offset, count, len(result.stdout))
            assert result.stdout == expected, f"cat --offset {offset} --count {count}: wrong bytes"

    rclone.run("purge", "dav:tree")
    root = rclone.run("lsf", "dav:")
    assert _text(root.stdout).splitlines() == []


def test_rclone_owncloud_vendor_keeps_modification_times(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """vendor=owncloud sends X-OC-Mtime on PUT; davfs stores it as the file's mtime."""
    server = start_server(chunk_size="1MiB")
    rclone = make_rclone(server.url, tmp_path / "home", vendor="owncloud")
    src = tmp_path / "src"
    mtimes = {
        "old.txt": 1_000_000_000,  # 2001-09-09T01:46:40Z
        "Grüße/naïve café.txt": 1_234_567_890,
        "日本語/two chunks.bin": 1_600_000_000,
        "empty.bin": 946_684_800,  # 2000-01-01T00:00:00Z
    }
    sizes = {
        "old.txt": 100,
        "Grüße/naïve café.txt": 5000,
        "日本語/two chunks.bin": MiB + 17,
        "empty.bin": 0,
    }
    for rel, mtime in mtimes.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(sizes[rel]))
        os.utime(path, (mtime, mtime))

    upload = rclone.run("copy", str(src), "dav:stamped", "-v")
    assert sorted(copied(upload.stderr)) == sorted(mtimes), _text(upload.stderr)
    assert not errors(upload.stderr), _text(upload.stderr)

    entries = json.loads(rclone.run("lsjson", "-R", "--files-only", "dav:stamped").stdout)
    remote = {e["Path"]: (e["Size"], datetime.fromisoformat(e["ModTime"]).timestamp()) for e in entries}
    assert remote == {rel: (sizes[rel], float(mtimes[rel])) for rel in mtimes}

    lsl = _text(rclone.run("lsl", "dav:stamped").stdout)
    assert "2001-09-09 01:46:40" in lsl, lsl

    # Same size and modification time: rclone must see nothing to do.
    again = rclone.run("copy", str(src), "dav:stamped", "-v")
    assert copied(again.stderr) == [], _text(again.stderr)

    check = rclone.run("check", "--download", str(src), "dav:stamped")
    assert "0 differences found" in _text(check.stderr), _text(check.stderr)
