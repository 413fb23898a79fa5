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

from davfs.config import load_config  # noqa: E402
from davfs.server import build_app, make_server  # noqa: E402
from davfs.stores import telegram_accounts  # noqa: E402
from davfs.stores.telegram_accounts import SESSION_FOLDER, SessionFile, open_telegram_store  # noqa: E402
from davfs.testing.telegram_fake import (  # noqa: E402
    DEFAULT_API_HASH,
    DEFAULT_API_ID,
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
def server_on_fake(fake: FakeTelegram, work: Path, *, parallel: bool) -> Iterator[tuple[int, Any]]:
    """A davfs server over a TelegramStore on ``fake``; yields (port, app)."""
    data_dir = work / ("parallel" if parallel else "serial")
    user = fake.add_user(f"+1555{random.randrange(10**7):07d}")
    channel = fake.add_channel(
        "bench", username=f"bench_{random.randrange(10**9)}", admins={user: {"post", "delete"}}
    )
    session = fake.authorized_session(user)
    SessionFile(
        data_dir / SESSION_FOLDER / "user-bench.session", "user", session.save(), f"@{channel.username}", None
    ).save()
    davfs = {
        "store": "telegram",
        "telegram": {
            "channel": f"@{channel.username}",
            "api_id": DEFAULT_API_ID,
            "api_hash": DEFAULT_API_HASH,
            "parallelism": 8 if parallel else 1,
        },
        "prefetch_blocks": 8 if parallel else 0,
        "upload_in_flight": 2 if parallel else 1,
    }
    config_path = work / f"{data_dir.name}.yaml"
    config_path.write_text(json.dumps({"davfs": davfs}))
    config = load_config(
        config_path,
        environ={},
        overrides={"data_dir": str(data_dir), "port": 0, "host": HOST, "anonymous": True},
    )
    assert config.telegram is not None
    store = open_telegram_store(config.telegram, config.data_dir, spool_dir=str(data_dir))
    app = build_app(config, store=store)
    server: wsgi.Server = make_server(config, app)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield server.bind_addr[1], app
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
            with server_on_fake(fake, work, parallel=mode == "parallel") as (port, _app):
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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.150, help="seconds per request")
    parser.add_argument("--bandwidth", type=float, default=8e6, help="bytes/s per request")
    parser.add_argument("--ranges", type=int, default=20, help="random 64 KiB range reads")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
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
