"""A real browser against a running server: Debian's headless Chromium (installed by
scripts/test) loads the HTML folder listing, and the links it renders must lead to the
stored bytes, with the headers browsers and download managers rely on. A screenshot of
the listing is kept as a test artifact, for a human to look at."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, unquote, urljoin

import pytest
import requests
from jinja2.filters import do_filesizeformat

from tests.conftest import REPO, RunningServer

MiB = 1024 * 1024
CHROMIUM_TIMEOUT = 60
"""Seconds one Chromium run may take; it normally needs about one."""

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # runs as root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-proxy-server",  # the server is on loopback; the network is closed
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALL_NAME = "hello.txt"
SMALL = b"hello from davfs, in a browser\n"
NON_ASCII_NAME = "Grüße 日本.txt"
NON_ASCII = "Grüße aus Tokio, 日本からこんにちは\n".encode()
BIG_NAME = "big.bin"
BIG = random.Random(6266).randbytes(3 * MiB + 12345)  # four 1 MiB chunks, the last one short
BIG_MTIME = 1700000000  # set with X-OC-Mtime, so the listing's date is known exactly
FOLDER = "sub"
INNER_NAME = "inner.txt"
INNER = b"inside the subfolder\n"


@dataclass
class Drive:
    """A running server holding the test files at its root and one subfolder."""

    url: str
    files: dict[str, bytes]
    uploaded_at: float


@dataclass
class Row:
    """One row of the listing table: its cells' text and the links in its first cell."""

    cells: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (href, text)
    size_title: str = ""  # the size cell's hover text: the exact byte count


class ListingParser(HTMLParser):
    """The rows of the listing's `table.dir-listing` and every asset the page loads."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[Row] = []
        self.assets: list[str] = []
        self._in_listing = False
        self._in_body_rows = False
        self._row: Row | None = None
        self._cell: list[str] | None = None
        self._link: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        source = attr.get("href") or attr.get("src")
        if tag in ("link", "script", "img") and source and not source.startswith("data:"):
            self.assets.append(source)
        elif tag == "table" and "dir-listing" in attr.get("class", "").split():
            self._in_listing = True
        elif self._in_listing and tag == "tbody":
            self._in_body_rows = True
        elif self._in_body_rows and tag == "tr":
            self._row = Row()
        elif self._row is not None and tag == "td":
            self._cell = []
            if "size" in attr.get("class", "").split():
                self._row.size_title = attr.get("title", "")
        elif self._cell is not None and tag == "a" and self._link is None:
            self._link = (attr.get("href", ""), [])

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._link is not None and self._row is not None:
            href, text = self._link
            self._row.links.append((href, " ".join("".join(text).split())))
            self._link = None
        elif tag == "td" and self._cell is not None and self._row is not None:
            self._row.cells.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_body_rows = False
        elif tag == "table":
            self._in_listing = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._link is not None:
            self._link[1].append(data)


@dataclass
class Listing:
    """A folder listing as the browser rendered it, at its URL (links resolve against it)."""

    url: str
    rows: list[Row]
    assets: list[str]

    def row(self, name: str) -> Row:
        """The row whose link text is ``name``, as the browser shows it."""
        found = [row for row in self.rows if row.links and row.links[0][1] == name]
        assert len(found) == 1, f"{name!r} listed {len(found)} times in {self.url}: {self.rows}"
        return found[0]

    def link(self, name: str) -> str:
        """The absolute URL the browser would follow for ``name``."""
        return urljoin(self.url, self.row(name).links[0][0])


def chromium_binary() -> str:
    """Chromium on PATH; its absence fails the test (scripts/test installs it as root)."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not on PATH: the browser test needs Debian's chromium "
            "(scripts/test installs it as root; else run `sudo apt-get install chromium`)",
            pytrace=False,
        )
    return path


def run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[bytes]:
    """One headless Chromium run with a fresh profile, bounded by CHROMIUM_TIMEOUT.

    Chromium forks helpers (zygote, renderer); it runs in its own session so that on a
    timeout, and after it exits, all of them are killed by that session's process group."""
    profile.mkdir(parents=True, exist_ok=False)
    command = [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=CHROMIUM_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        stdout, stderr = process.communicate()
        pytest.fail(f"chromium did not finish within {CHROMIUM_TIMEOUT} s: {command}\n{_tail(stderr)}")
    finally:
        _kill_group(process.pid)
    assert process.returncode == 0, f"chromium exited {process.returncode}: {command}\n{_tail(stderr)}"
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(stderr: bytes) -> str:
    return stderr.decode(errors="replace")[-3000:]


@pytest.fixture
def drive(start_server: Callable[..., RunningServer]) -> Iterator[Drive]:
    """A server with a small file, a non-ASCII name, a multi-chunk file and a subfolder."""
    server = start_server(chunk_size="1MiB")
    uploaded_at = time.time()
    with requests.Session() as http:
        for name, body, headers in [
            (SMALL_NAME, SMALL, {}),
            (NON_ASCII_NAME, NON_ASCII, {}),
            (BIG_NAME, BIG, {"X-OC-Mtime": str(BIG_MTIME)}),
        ]:
            r = http.put(server.url + quote(name), data=body, headers=headers, timeout=30)
            assert r.status_code == 201, (name, r.status_code, r.text)
        assert http.request("MKCOL", server.url + FOLDER, timeout=30).status_code == 201
        r = http.put(server.url + f"{FOLDER}/{INNER_NAME}", data=INNER, timeout=30)
        assert r.status_code == 201, r.text
    files = {SMALL_NAME: SMALL, NON_ASCII_NAME: NON_ASCII, BIG_NAME: BIG}
    yield Drive(server.url, files, uploaded_at)


def browse(url: str, profile: Path) -> Listing:
    """The listing at ``url`` as Chromium rendered it (the DOM after scripts ran)."""
    dom = run_chromium(["--dump-dom", url], profile).stdout.decode("utf-8")
    assert 'class="dir-listing"' in dom, f"no folder listing at {url}:\n{dom[:2000]}"
    parser = ListingParser()
    parser.feed(dom)
    parser.close()
    return Listing(url, parser.rows, parser.assets)


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("DAVFS_TEST_ARTIFACTS") or REPO / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_listing_links_lead_to_the_stored_files(drive: Drive, tmp_path: Path) -> None:
    """What a user sees in the browser: every member, linked to the right resource,
    with its size and modification date, and a subfolder link that lists its file."""
    listing = browse(drive.url, tmp_path / "profile-root")
    names = [row.links[0][1] for row in listing.rows]
    assert sorted(names) == sorted([FOLDER, *drive.files]), names

    with requests.Session() as http:
        for name, body in drive.files.items():
            link = listing.link(name)
            assert link == drive.url + quote(name), (name, link)
            r = http.get(link, timeout=30)
            assert r.status_code == 200, (name, r.status_code)
            assert r.content == body, f"{name}: {len(r.content)} bytes differ from the stored {len(body)}"

        # Name, type, size, last modified, a link to the file's versions; sizes read
        # "3.0 MiB", exact bytes on hover.
        for name, body in drive.files.items():
            row = listing.row(name)
            cells = row.cells
            assert len(cells) == 5 and cells[4] == "versions", cells
            assert urljoin(listing.url, row.links[1][0]) == drive.url + quote(name) + "?davfs=versions"
            assert cells[2] == do_filesizeformat(len(body), binary=True), (name, cells)
            assert row.size_title == f"{len(body):,d} bytes", (name, row.size_title)
            shown = parsedate_to_datetime(cells[3]).timestamp()
            if name == BIG_NAME:
                assert cells[3] == "Tue, 14 Nov 2023 22:13:20 GMT", (name, cells)
            else:
                assert drive.uploaded_at - 2 <= shown <= time.time() + 2, (name, cells[3])
        assert listing.row(BIG_NAME).cells[2] == "3.0 MiB"
        folder_cells = listing.row(FOLDER).cells
        assert folder_cells[1:3] == ["Folder", ""], folder_cells

        # The page's own stylesheet, script and icons load (no broken assets).
        assert listing.assets, "the listing loads no assets at all"
        for asset in listing.assets:
            r = http.get(urljoin(drive.url, asset), timeout=30)
            assert r.status_code == 200, (asset, r.status_code)

    folder_link = listing.link(FOLDER)
    assert folder_link == drive.url + FOLDER + "/"
    inner = browse(folder_link, tmp_path / "profile-sub")
    assert inner.link(INNER_NAME) == drive.url + f"{FOLDER}/{INNER_NAME}"
    assert inner.row(INNER_NAME).cells[2] == f"{len(INNER)} Bytes"  # small sizes stay exact
    assert inner.link("..") == drive.url, "the subfolder's parent link must lead back to the root"
    assert requests.get(inner.link(INNER_NAME), timeout=30).content == INNER


def test_screenshot_of_the_listing(drive: Drive, tmp_path: Path) -> None:
    """A picture of the listing as Chromium draws it, kept for a human to check."""
    shot = artifacts_dir() / "browser-listing.png"
    shot.unlink(missing_ok=True)
    run_chromium([f"--screenshot={shot}", "--window-size=1280,900", drive.url], tmp_path / "profile")
    assert shot.is_file(), f"chromium wrote no screenshot to {shot}"
    png = shot.read_bytes()
    assert png.startswith(PNG_SIGNATURE), png[:16]
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # IHDR
    assert (width, height) == (1280, 900)
    assert len(png) > 8 * 1024, f"{len(png)} bytes: an empty page?"


def test_file_link_supports_resumed_downloads(drive: Drive, tmp_path: Path) -> None:
    """Download managers check Accept-Ranges and Content-Length, then resume with Range."""
    listing = browse(drive.url, tmp_path / "profile")
    with requests.Session() as http:
        for name, body in drive.files.items():
            link = listing.link(name)
            r = http.get(link, timeout=30)
            assert r.status_code == 200
            assert r.headers.get("Accept-Ranges") == "bytes", (name, r.headers)
            assert r.headers.get("Content-Length") == str(len(body)), (name, r.headers)
            part = http.get(link, headers={"Range": "bytes=10-19"}, timeout=30)
            assert part.status_code == 206, (name, part.status_code)
            assert part.content == body[10:20], name
            assert part.headers.get("Content-Range") == f"bytes 10-19/{len(body)}", part.headers


def test_file_link_names_the_file_in_content_disposition(drive: Drive, tmp_path: Path) -> None:
    """A browser saves a download under the name Content-Disposition gives; for non-ASCII
    names only RFC 6266's `filename*=UTF-8''…` (RFC 5987 encoding) carries it intact, with
    an ASCII `filename="…"` as the fallback for old clients."""
    listing = browse(drive.url, tmp_path / "profile")
    with requests.Session() as http:
        for name in drive.files:
            r = http.get(listing.link(name), timeout=30)
            assert r.status_code == 200
            disposition = r.headers.get("Content-Disposition")
            assert disposition, f"{name}: no Content-Disposition in {dict(r.headers)}"
            extended = re.search(r"(?:^|;)\s*filename\*\s*=\s*([^;]+)", disposition)
            plain = re.search(r'(?:^|;)\s*filename\s*=\s*"([^"]*)"', disposition)
            if name == NON_ASCII_NAME or extended:
                assert extended, f"{name}: no filename*= in {disposition!r}"
                charset, _, encoded = extended.group(1).strip().partition("''")
                assert charset.upper() == "UTF-8", disposition
                assert unquote(encoded, encoding="utf-8", errors="strict") == name, disposition
                assert plain and plain.group(1).isascii(), f"{name}: no ASCII fallback in {disposition!r}"
            else:
                assert plain and plain.group(1) == name, disposition
