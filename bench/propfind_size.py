#!/usr/bin/env python3
"""How big a folder listing gets, against Windows' limit on it.

Windows' WebDAV client refuses a PROPFIND response larger than
``FileAttributesLimitInBytes`` (1,000,000 bytes by default): Explorer then shows the
folder as empty or fails to open it. This measures the Depth-1 PROPFIND that Explorer
sends (allprop: an empty body, ``Translate: f``) for one folder of N files, its size in
bytes and how long it takes, and derives the bytes per entry and the largest folder that
fits under the limit.

Two answers are measured, because davfs has two: its own one-pass listing
(``davfs/listing.py``), and wsgidav's, which davfs falls back to when a lock is held on
the folder or anything in it. Explorer holds exactly such a lock while it copies a file
into the folder, and re-lists the folder meanwhile.

    python3 bench/propfind_size.py                 # 5,000 files with 20-character names
    python3 bench/propfind_size.py --files 1000    # quicker; sizes scale linearly

The server runs in this process on a free loopback port over a temporary folder (the
embedded default: SQLite catalog, local store), anonymous, and is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from davfs.config import load_config  # noqa: E402
from davfs.server import build_app, make_server  # noqa: E402

WINDOWS_LIMIT = 1_000_000
"""Default ``FileAttributesLimitInBytes`` of the Windows WebClient service."""
EXPLORER = {"User-Agent": "Microsoft-WebDAV-MiniRedir/10.0.19045", "Translate": "f"}
LOCKINFO = (
    '<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
    "</D:lockscope><D:locktype><D:write/></D:locktype><D:owner><D:href>DOMAIN\\user</D:href>"
    "</D:owner></D:lockinfo>"
)


def name(i: int) -> str:
    """A 20-character file name, like a camera's or a report's."""
    return f"photo_{i:05d}_edit.jpg"


@contextmanager
def running_server(data_dir: Path) -> Iterator[str]:
    config = load_config(
        os.devnull,
        environ={},
        overrides={"data_dir": str(data_dir), "port": 0, "host": "127.0.0.1", "anonymous": True},
    )
    app = build_app(config)
    server = make_server(config, app)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    host, port = server.bind_addr[:2]
    try:
        yield f"http://{host}:{port}/"
    finally:
        server.stop()
        thread.join(timeout=10)
        app.close()


def listing(session: requests.Session, url: str, rounds: int) -> tuple[int, float, int]:
    """(bytes, median seconds, entries) of Explorer's Depth-1 PROPFIND of ``url``."""
    sizes, times = set(), []
    entries = 0
    for _ in range(rounds):
        started = time.perf_counter()
        response = session.request("PROPFIND", url, headers={**EXPLORER, "Depth": "1"}, data=b"")
        times.append(time.perf_counter() - started)
        assert response.status_code == 207, response.status_code
        sizes.add(len(response.content))
        entries = response.content.count(b":response>") // 2  # opening and closing tags
    assert len(sizes) == 1, sizes  # the same listing every time
    return sizes.pop(), statistics.median(times), entries


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=5000, help="files in the folder (default 5000)")
    parser.add_argument("--rounds", type=int, default=5, help="PROPFINDs per measurement (median time)")
    parser.add_argument(
        "--size", type=int, default=123456, help="bytes per file (digits of getcontentlength)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="davfs-propfind-") as work, running_server(Path(work)) as url:
        session = requests.Session()
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=8))
        folder = url + "Folder/"
        assert session.request("MKCOL", folder).status_code == 201
        empty_size, _, _ = listing(session, folder, 1)
        body = os.urandom(args.size)

        started = time.perf_counter()

        def put(i: int) -> None:
            status = session.put(folder + name(i), data=body).status_code
            assert status == 201, status

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, range(args.files)))
        created = time.perf_counter() - started

        fast_size, fast_time, entries = listing(session, folder, args.rounds)
        assert entries == args.files + 1, entries
        lock = session.request(
            "LOCK", folder + name(0), data=LOCKINFO, headers={**EXPLORER, "Timeout": "Second-3600"}
        )
        assert lock.status_code == 200, lock.status_code
        locked_size, locked_time, _ = listing(session, folder, args.rounds)

    print(f"{args.files} files named like {name(0)!r} ({len(name(0))} characters), {args.size} bytes each")
    print(f"created by PUT in {created:.1f} s ({args.files / created:.0f} files/s, 8 in parallel)")
    print(f"empty folder listing: {empty_size} bytes")
    for label, size, seconds in (
        ("davfs listing (no lock in the folder)", fast_size, fast_time),
        ("wsgidav listing (a lock in the folder)", locked_size, locked_time),
    ):
        per_entry = (size - empty_size) / args.files
        fits = int((WINDOWS_LIMIT - empty_size) // per_entry)
        at_5000 = empty_size + 5000 * per_entry
        print(f"{label}:")
        print(f"  {size:,} bytes, median {seconds * 1000:.0f} ms over {args.rounds} requests")
        print(f"  {per_entry:.1f} bytes per entry; 5,000 entries = {at_5000:,.0f} bytes", end="")
        print(f" ({'over' if at_5000 > WINDOWS_LIMIT else 'under'} Windows' {WINDOWS_LIMIT:,})")
        print(f"  largest folder under {WINDOWS_LIMIT:,} bytes: {fits:,} entries")


if __name__ == "__main__":
    main()
