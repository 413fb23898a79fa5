#!/usr/bin/env python3
"""Scale-out bench: aggregate throughput of 1 and 2 davfs instances sharing one
PostgreSQL catalog, one Redis lock store and one local chunk folder.

    python bench/scale_bench.py              # e: 1,000 4 KiB PUTs + GETs; f: 16 clients × 4 GETs of 16 MiB
    python bench/scale_bench.py --quick      # 200 small files, 8 clients
    python bench/scale_bench.py --json out.json

Instances are ``python run_server.py`` subprocesses on free loopback ports with one
wsgidav.yaml (catalog_url, store, lock_storage); clients spread their requests
round-robin over the instances, as a load balancer would. Workloads (from the speed
issue): **e** small files, PUT by 8 concurrent clients then GET, files/s; **f** 16
parallel clients each GETting a 16 MiB file 4 times, aggregate MB/s. Every body is
checked with SHA-256. PostgreSQL and Redis must be running (``scripts/services``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
import yaml
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
POSTGRES_ADMIN = os.environ.get(
    "DAVFS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_instance(config: Path, data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAVFS_")}
    env.update(
        DAVFS_CONFIG=str(config), DAVFS_PORT=str(port), DAVFS_DATA_DIR=str(data_dir), DAVFS_ANONYMOUS="true"
    )
    process = subprocess.Popen(
        [sys.executable, str(REPO / "run_server.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.request("OPTIONS", url, timeout=2)
            return process, url
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("an instance did not start within 30 s")


def small_files(urls: list[str], count: int, clients: int, tag: str) -> dict[str, float]:
    bodies = [os.urandom(4096) for _ in range(count)]

    def put(i: int) -> None:
        with requests.put(f"{urls[i % len(urls)]}{tag}-{i}.bin", data=bodies[i]) as response:
            if response.status_code != 201:
                raise SystemExit(f"PUT {i}: HTTP {response.status_code}")

    def get(i: int) -> None:
        response = requests.get(f"{urls[(i + 1) % len(urls)]}{tag}-{i}.bin")
        if response.content != bodies[i]:
            raise SystemExit(f"GET {i}: wrong bytes")

    results = {}
    for name, work in (("put_files_per_s", put), ("get_files_per_s", get)):
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(work, range(count)))
        results[name] = count / (time.perf_counter() - started)
    return results


def parallel_gets(urls: list[str], clients: int, size: int, rounds: int, tag: str) -> float:
    body = os.urandom(size)
    digest = hashlib.sha256(body).hexdigest()
    requests.put(f"{urls[0]}{tag}.bin", data=body).raise_for_status()

    def client(i: int) -> int:
        total = 0
        with requests.Session() as http:
            for _ in range(rounds):
                data = http.get(f"{urls[i % len(urls)]}{tag}.bin").content
                if hashlib.sha256(data).hexdigest() != digest:
                    raise SystemExit("parallel GET: wrong bytes")
                total += len(data)
        return total

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        moved = sum(pool.map(client, range(clients)))
    return moved / (time.perf_counter() - started) / 1e6


def run(quick: bool) -> dict[str, Any]:
    count, small_clients, get_clients = (200, 8, 8) if quick else (1000, 8, 16)
    name = f"davfs_bench_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    results: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="davfs-scale-") as tmp:
            work = Path(tmp)
            config = work / "wsgidav.yaml"
            catalog_url = make_url(POSTGRES_ADMIN).set(database=name).render_as_string(hide_password=False)
            config.write_text(
                yaml.safe_dump(
                    {
                        "lock_storage": {
                            "class": "wsgidav.lock_man.lock_storage_redis.LockStorageRedis",
                            "kwargs": {"host": "127.0.0.1", "port": 6379, "db": 8},
                        },
                        "davfs": {"catalog_url": catalog_url, "store": f"local:{work / 'store'}"},
                    }
                )
            )
            for instances in (1, 2):
                started = [start_instance(config, work / f"data-{instances}-{i}") for i in range(instances)]
                urls = [url for _, url in started]
                try:
                    figures = small_files(urls, count, small_clients, f"e{instances}")
                    figures["parallel_get_MBps"] = parallel_gets(
                        urls, get_clients, 16 * MiB, 4, f"f{instances}"
                    )
                finally:
                    for process, _ in started:
                        process.terminate()
                        process.wait(timeout=20)
                results[f"{instances}_instance"] = figures
                print(instances, "instance(s):", json.dumps(figures), flush=True)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    results = run(args.quick)
    one, two = results["1_instance"], results["2_instance"]
    print(f"\n{'':22}{'1 instance':>12}{'2 instances':>13}{'ratio':>8}")
    for key in one:
        print(f"{key:22}{one[key]:12.1f}{two[key]:13.1f}{two[key] / one[key]:8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
