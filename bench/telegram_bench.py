#!/usr/bin/env python3
"""Telegram store bench: davfs on the wire-level fake Telegram with Telegram-like
latency, against the same stack with one request in flight.

    python bench/telegram_bench.py                # 200 MiB, 150 ms per request, 8 MB/s per request
    python bench/telegram_bench.py --size-mib 32  # quicker
    python bench/telegram_bench.py --json out.json

Both configurations run the real server (cheroot + wsgidav + davfs) in this process
over a real ``TelegramStore`` whose clients are ``FakeTelegramClient`` (real telethon
above a simulated wire, davfs/testing/telegram_fake.py). The fake sleeps ``latency`` plus
``bytes / bandwidth`` per request, and requests overlap, as on Telegram.

- **parallel**: davfs's Telegram defaults (8 requests in flight per account, 8-block
  read prefetch, 2 chunks uploading at once, 64 MiB chunks).
- **one at a time**: the same code with parallelism 1, no prefetch, one chunk in flight.

Every body is checked with SHA-256. Figures: PUT and GET MB/s and their ratio, peak
RSS above the level before each transfer (the fake keeps every stored byte in this
process, so PUT growth is reported net of what the fake holds), and for random 64 KiB
range reads the time to first byte and the number of ``getFile`` requests each one made.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import hashlib
import http.client
import json
import math
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cheroot import wsgi  # noqa: E402

from davfs.config import DavfsConfig, load_config  # noqa: E402
from davfs.drive import Drive  # noqa: E402
from davfs.manifest import recover  # noqa: E402
from davfs.server import build_app, make_server  # noqa: E402
from davfs.stores import telegram_accounts  # noqa: E402
from davfs.stores.telegram_accounts import SESSION_FOLDER, SessionFile, open_telegram_store  # noqa: E402
from davfs.testing.telegram_fake import (  # noqa: E402
    DEFAULT_API_HASH,
    DEFAULT_API_ID,
    FakeAccount,
    FakeChannel,
    FakeTelegram,
    FakeTelegramClient,
)

try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6")
except OSError:
    _LIBC = None
MiB = 1024 * 1024
HOST = "127.0.0.1"
CHANNEL = "@bench_store"


class PeakRss:
    """Samples this process's RSS every 10 ms while a transfer runs, less what the fake
    Telegram holds at that moment (stored documents and uploaded parts live in this
    process too, and are Telegram's memory, not davfs's).

    Each sample first asks glibc to return free heap pages (``malloc_trim``): the fake
    keeps a chunk's 128 uploaded parts of 512 KiB until the send joins them, and the
    holes they leave in the heap would otherwise stay in RSS and be counted as ours."""

    def __init__(self, fake: FakeTelegram) -> None:
        self._fake = fake
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def sample(self) -> int:
        if _LIBC is not None:
            _LIBC.malloc_trim(0)
        return self.now() - self._fake.stored_bytes()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self.peak = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def server_on_fake(
    fake: FakeTelegram, work: Path, *, parallel: bool, bot: bool = False, write_back: bool = True
) -> Iterator[tuple[int, Any, FakeChannel]]:
    """A davfs server over a TelegramStore on ``fake``, signed in as a user (or a bot);
    yields (port, app, channel)."""
    data_dir = work / f"{'parallel' if parallel else 'serial'}-{'bot' if bot else 'user'}-{write_back}"
    if bot:
        account = fake.add_bot(f"{random.randrange(10**8, 10**9)}:bench")
    else:
        account = fake.add_user(f"+1555{random.randrange(10**7):07d}")
    channel = fake.add_channel(
        "bench", username=f"bench_{random.randrange(10**9)}", admins={account: {"post", "delete"}}
    )
    config = signed_in_config(
        fake,
        account,
        channel,
        data_dir,
        telegram={"parallelism": 8 if parallel else 1},
        davfs={
            "prefetch_blocks": 8 if parallel else 0,
            "upload_in_flight": 2 if parallel else 1,
            "write_back": write_back,
        },
        overrides={"port": 0, "host": HOST, "anonymous": True},
    )
    assert config.telegram is not None
    store = open_telegram_store(config.telegram, config.data_dir, spool_dir=str(data_dir))
    app = build_app(config, store=store)
    with serving(config, app) as port:
        yield port, app, channel


@contextmanager
def serving(config: Any, app: Any) -> Iterator[int]:
    """Serve ``app`` on a loopback port until the block ends; yields the port."""
    server: wsgi.Server = make_server(config, app)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield server.bind_addr[1]
    finally:
        server.stop()
        thread.join(timeout=10)
        app.close()


def put_file(port: int, path: str, source: Path, size: int) -> float:
    conn = http.client.HTTPConnection(HOST, port, timeout=3600)
    started = time.perf_counter()
    with open(source, "rb") as body:
        conn.request("PUT", path, body=body, headers={"Content-Length": str(size)})
        response = conn.getresponse()
        response.read()
    elapsed = time.perf_counter() - started
    conn.close()
    if response.status not in (201, 204):
        raise SystemExit(f"PUT {path}: HTTP {response.status}")
    return elapsed


def get_file(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[float, float, str, int]:
    """(seconds to first byte, total seconds, sha256, bytes)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=3600)
    started = time.perf_counter()
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    digest = hashlib.sha256()
    first = response.read(1)
    first_byte = time.perf_counter() - started
    digest.update(first)
    total = len(first)
    while block := response.read(MiB):
        digest.update(block)
        total += len(block)
    elapsed = time.perf_counter() - started
    conn.close()
    if response.status not in (200, 206):
        raise SystemExit(f"GET {path}: HTTP {response.status}")
    return first_byte, elapsed, digest.hexdigest(), total


def run(size: int, latency: float, bandwidth: float, ranges: int) -> dict[str, Any]:
    fake = FakeTelegram(latency=latency, bandwidth=bandwidth, bot_posts_per_minute=None)
    real_make_client = telegram_accounts.make_client
    fake_client = functools.partial(FakeTelegramClient, server=fake)
    telegram_accounts.make_client = functools.partial(real_make_client, client_class=fake_client)
    results: dict[str, Any] = {
        "size_mib": size // MiB,
        "latency_s": latency,
        "bandwidth_MBps": bandwidth / 1e6,
    }
    with tempfile.TemporaryDirectory(prefix="davfs-tgbench-") as tmp:
        work = Path(tmp)
        source = work / "source.bin"
        with open(source, "wb") as out:
            for _ in range(size // MiB):
                out.write(os.urandom(MiB))
        expected = hashlib.sha256(source.read_bytes()).hexdigest()
        rng = random.Random(5)
        offsets = [rng.randrange(0, size - 64 * 1024) for _ in range(ranges)]
        for mode in ("parallel", "serial"):
            with server_on_fake(fake, work, parallel=mode == "parallel") as (port, _app, _channel):
                with PeakRss(fake) as rss:
                    baseline = rss.peak
                    put_seconds = put_file(port, "/big.bin", source, size)
                put_growth = rss.peak - baseline
                with PeakRss(fake) as rss:
                    baseline = rss.peak
                    _, get_seconds, digest, got = get_file(port, "/big.bin")
                get_growth = rss.peak - baseline
                if digest != expected or got != size:
                    raise SystemExit(f"{mode}: GET returned wrong bytes")
                first_bytes, requests_per_range = [], []
                for offset in offsets:
                    fake.reset_stats()
                    first, _, _, count = get_file(
                        port, "/big.bin", {"Range": f"bytes={offset}-{offset + 64 * 1024 - 1}"}
                    )
                    if count != 64 * 1024:
                        raise SystemExit(f"{mode}: range returned {count} bytes")
                    first_bytes.append(first)
                    requests_per_range.append(fake.requests["GetFileRequest"])
                results[mode] = {
                    "put_MBps": size / put_seconds / 1e6,
                    "get_MBps": size / get_seconds / 1e6,
                    "put_rss_growth_MiB": max(0, put_growth) / MiB,
                    "get_rss_growth_MiB": get_growth / MiB,
                    "range_ttfb_median_s": sorted(first_bytes)[len(first_bytes) // 2],
                    "range_getfile_requests": sorted(set(requests_per_range)),
                }
                print(mode, json.dumps(results[mode]), flush=True)
    parallel, serial = results["parallel"], results["serial"]
    results["get_ratio"] = parallel["get_MBps"] / serial["get_MBps"]
    results["put_ratio"] = parallel["put_MBps"] / serial["put_MBps"]
    return results


EXPLORER = {"User-Agent": "Microsoft-WebDAV-MiniRedir/10.0.19045", "Translate": "f"}
LOCKINFO = (
    b'<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
    b"</D:lockscope><D:locktype><D:write/></D:locktype><D:owner><D:href>DOMAIN\\user</D:href></D:owner>"
    b"</D:lockinfo>"
)
WIN32_TIMES = (
    b'<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:" '
    b'xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop>'
    b"<Z:Win32LastModifiedTime>Tue, 03 Jan 2023 04:05:06 GMT</Z:Win32LastModifiedTime>"
    b"<Z:Win32FileAttributes>00000020</Z:Win32FileAttributes></D:prop></D:set></D:propertyupdate>"
)


class ExplorerPerson:
    """Copies files the way Explorer does (shared/notes/explorer-copy-on-telegram.md):
    per file PROPFIND (404), PUT of 0 bytes, LOCK, PROPPATCH, PUT of the content,
    PROPPATCH, UNLOCK; after a 5xx, waits ``Retry-After`` and clicks "Try again"."""

    def __init__(self, port: int, deadline: float) -> None:
        self._conn = http.client.HTTPConnection(HOST, port, timeout=600)
        self._deadline = deadline
        self.refusals = 0
        self.waited = 0.0

    def copy(self, path: str, body: bytes) -> bool:
        """Whether the file was copied before the deadline."""
        xml = {**EXPLORER, "Content-Type": 'text/xml; charset="utf-8"'}
        if self._request("PROPFIND", path, b"", {**EXPLORER, "Depth": "0"}, (404,)) is None:
            return False
        if self._request("PUT", path, b"", EXPLORER, (201,)) is None:
            return False
        locked = self._request("LOCK", path, LOCKINFO, {**xml, "Timeout": "Second-3600"}, (200,))
        if locked is None:
            return False
        token = locked.getheader("Lock-Token", "")
        steps = (
            ("PROPPATCH", WIN32_TIMES, {**xml, "If": f"({token})"}, (207,)),
            ("PUT", body, {**EXPLORER, "If": f"({token})"}, (201, 204)),
            ("PROPPATCH", WIN32_TIMES, {**xml, "If": f"({token})"}, (207,)),
            ("UNLOCK", b"", {**EXPLORER, "Lock-Token": token}, (204,)),
        )
        return all(
            self._request(method, path, data, headers, ok) is not None for method, data, headers, ok in steps
        )

    def _request(
        self, method: str, path: str, body: bytes, headers: dict[str, str], ok: tuple[int, ...]
    ) -> http.client.HTTPResponse | None:
        while time.monotonic() < self._deadline:
            self._conn.request(method, path, body=body, headers={**headers, "Content-Length": str(len(body))})
            response = self._conn.getresponse()
            response.read()
            if response.status in ok:
                return response
            if response.status < 500:
                raise SystemExit(f"{method} {path}: HTTP {response.status}")
            self.refusals += 1
            pause = min(float(response.getheader("Retry-After", "5")), self._deadline - time.monotonic())
            self.waited += max(0.0, pause)
            time.sleep(max(0.0, pause))
        return None


def explorer_copy(files: int, latency: float, bandwidth: float, budget: float) -> dict[str, Any]:
    """Explorer copies ``files`` files of 1 KiB-2 MiB (log-uniform) onto a bot's
    Telegram store with write-back (the default) and without (the first release), and
    onto the local store; each run gets at most ``budget`` seconds."""
    fake = FakeTelegram(latency=latency, bandwidth=bandwidth, bot_posts_per_minute=20)
    real_make_client = telegram_accounts.make_client
    fake_client = functools.partial(FakeTelegramClient, server=fake)
    telegram_accounts.make_client = functools.partial(real_make_client, client_class=fake_client)
    rng = random.Random(11)
    bodies = [os.urandom(int(2 ** rng.uniform(10, 21))) for _ in range(files)]
    results: dict[str, Any] = {
        "files": files,
        "total_MiB": round(sum(map(len, bodies)) / MiB, 1),
        "latency_s": latency,
        "bandwidth_MBps": bandwidth / 1e6,
        "bot_posts_per_minute": 20,
    }
    with tempfile.TemporaryDirectory(prefix="davfs-tgbench-") as tmp:
        work = Path(tmp)
        runs: list[tuple[str, Any]] = [
            ("local", None),
            ("telegram bot, write-back", True),
            ("telegram bot, no write-back", False),
        ]
        for label, write_back in runs:
            with copy_target(fake, work, write_back) as (port, app, channel):
                deadline = time.monotonic() + budget
                person = ExplorerPerson(port, deadline)
                started = time.monotonic()
                copied = 0
                for i, body in enumerate(bodies):
                    if not person.copy(f"/copy/f{i:04d}.bin", body):
                        break
                    copied += 1
                acknowledged = time.monotonic() - started
                shipped = None
                if copied == files and app.drive.shipper is not None:
                    while app.drive.catalog.staging.pending().chunks and time.monotonic() < deadline:
                        time.sleep(0.2)
                    if not app.drive.catalog.staging.pending().chunks:
                        shipped = time.monotonic() - started
                for i in range(0, copied, max(1, copied // 20)):
                    _, _, digest, _ = get_file(port, f"/copy/f{i:04d}.bin")
                    if digest != hashlib.sha256(bodies[i]).hexdigest():
                        raise SystemExit(f"{label}: /copy/f{i:04d}.bin holds wrong bytes")
                figures = {
                    "copied": copied,
                    "seconds": round(acknowledged, 1),
                    "files_per_minute": round(copied / acknowledged * 60, 1),
                    "refused_503": person.refusals,
                    "waited_s": round(person.waited, 1),
                    "all_in_store_s": None if shipped is None else round(shipped, 1),
                }
            # The server has stopped (its last manifest written): count, then lose the machine.
            figures["messages"] = None if channel is None else len(fake.messages(channel))
            if write_back and shipped is not None and channel is not None:
                figures["recovered_from_channel"] = recovered_byte_exact(fake, channel, bodies, work)
            results[label] = figures
            print(label, json.dumps(figures), flush=True)
    local = results["local"]["seconds"] / results["local"]["copied"]
    for label, _ in runs[1:]:  # time per file copied (a run cut by the budget copied fewer)
        run = results[label]
        run["time_per_file_vs_local"] = round(run["seconds"] / max(1, run["copied"]) / local, 2)
    results["chunk_messages_bound"] = math.ceil(sum(map(len, bodies)) / (64 * MiB))
    return results


def signed_in_config(
    fake: FakeTelegram,
    account: FakeAccount,
    channel: FakeChannel,
    data_dir: Path,
    *,
    telegram: dict[str, Any] | None = None,
    davfs: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> DavfsConfig:
    """A data folder signed in as ``account`` (a session file, as `davfs login` leaves
    it) and the config of a Telegram drive on ``channel`` using it."""
    kind = "bot" if account.is_bot else "user"
    session = fake.authorized_session(account).save()
    SessionFile(
        data_dir / SESSION_FOLDER / f"{kind}-bench.session", kind, session, f"@{channel.username}", None
    ).save()
    settings = {"channel": f"@{channel.username}", "api_id": DEFAULT_API_ID, "api_hash": DEFAULT_API_HASH}
    config_path = data_dir.with_suffix(".yaml")
    config_path.write_text(
        json.dumps(
            {"davfs": {"store": "telegram", "telegram": {**settings, **(telegram or {})}, **(davfs or {})}}
        )
    )
    return load_config(config_path, environ={}, overrides={"data_dir": str(data_dir), **(overrides or {})})


def recovered_byte_exact(fake: FakeTelegram, channel: FakeChannel, bodies: list[bytes], work: Path) -> bool:
    """Forget the catalog and the staging area: ``recover`` from the channel alone (as a
    user: bots cannot read a channel's history), then read every file back verified."""
    data_dir = work / "recovered"
    user = fake.add_user(f"+1666{random.randrange(10**7):07d}")
    fake.set_admin(channel, user, {"post", "delete"})
    config = signed_in_config(fake, user, channel, data_dir, davfs={"write_back": False})
    assert config.telegram is not None
    store = open_telegram_store(config.telegram, config.data_dir, spool_dir=str(data_dir))
    with Drive(config, store=store) as drive:
        report = recover(drive.catalog, store)
        if report.problems:
            print("recover:", report.problems[:5], flush=True)
            return False
        for i, body in enumerate(bodies):
            with drive.open_read(f"/copy/f{i:04d}.bin") as reader:
                if reader.read() != body:
                    return False
    return True


@contextmanager
def copy_target(
    fake: FakeTelegram, work: Path, write_back: bool | None
) -> Iterator[tuple[int, Any, FakeChannel | None]]:
    """The server for one run of :func:`explorer_copy`: a bot's Telegram store, or
    (``write_back`` None) the local store with davfs's defaults."""
    if write_back is not None:
        with server_on_fake(fake, work, parallel=True, bot=True, write_back=write_back) as served:
            _mkcol(served[0])
            yield served
        return
    config = load_config(
        os.devnull,
        environ={},
        overrides={"data_dir": str(work / "local"), "port": 0, "host": HOST, "anonymous": True},
    )
    app = build_app(config)
    with serving(config, app) as port:
        _mkcol(port)
        yield port, app, None


def _mkcol(port: int) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    conn.request("MKCOL", "/copy/")
    if conn.getresponse().status != 201:
        raise SystemExit("MKCOL /copy/ failed")
    conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.150, help="seconds per request")
    parser.add_argument("--bandwidth", type=float, default=8e6, help="bytes/s per request")
    parser.add_argument("--ranges", type=int, default=20, help="random 64 KiB range reads")
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument(
        "--explorer-copy",
        type=int,
        metavar="FILES",
        help="instead: Explorer copies FILES files of 1 KiB-2 MiB onto a bot's store "
        "(20 posts a minute) with and without write-back, and onto the local store",
    )
    parser.add_argument(
        "--budget", type=float, default=600, help="seconds each --explorer-copy run may take (default 600)"
    )
    args = parser.parse_args()
    if args.explorer_copy:
        figures = explorer_copy(args.explorer_copy, args.latency, args.bandwidth, args.budget)
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1))
        return 0
    results = run(args.size_mib * MiB, args.latency, args.bandwidth, args.ranges)
    print()
    print(f"{'':24}{'parallel':>12}{'one at a time':>16}{'ratio':>8}{'target':>8}")
    for key, target in (("put_MBps", 4.0), ("get_MBps", 6.0)):
        p, s = results["parallel"][key], results["serial"][key]
        print(f"{key:24}{p:12.2f}{s:16.2f}{p / s:8.2f}{'>= ' + str(target):>8}")
    for key in ("put_rss_growth_MiB", "get_rss_growth_MiB", "range_ttfb_median_s"):
        print(f"{key:24}{results['parallel'][key]:12.2f}{results['serial'][key]:16.2f}")
    print(f"{'range getFile requests':24}{results['parallel']['range_getfile_requests']!s:>12}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
