"""Two davfs instances (separate processes) on one PostgreSQL catalog, one Redis lock
store and one shared local chunk folder, as behind a load balancer."""

from __future__ import annotations

import hashlib
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import requests
import yaml

from davfs.catalog import Catalog
from davfs.fsck import fsck
from davfs.staging import StagingArea
from davfs.stores.local import LocalStore
from tests.conftest import MiB, ServerProcess

LOCK_BODY = (
    '<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
    "</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>A</D:owner></D:lockinfo>"
)


def scale_out_config(folder: Path, postgres_url: str, redis_url: str | None = None) -> Path:
    """A wsgidav.yaml for an instance of a shared deployment: locks in the catalog, or
    in Redis when its URL is given."""
    config: dict[str, Any] = {
        "davfs": {
            "catalog_url": postgres_url,
            "store": f"local:{folder / 'shared-store'}",
            "staging_dir": str(folder / "shared-staging"),  # write-back: every instance reads it
            "chunk_size": "1MiB",
            "manifest_interval": 2,
        },
    }
    if redis_url is not None:
        redis = urlparse(redis_url)
        config["lock_storage"] = {
            "class": "wsgidav.lock_man.lock_storage_redis.LockStorageRedis",
            "kwargs": {
                "host": redis.hostname,
                "port": redis.port or 6379,
                "db": int(redis.path.strip("/") or 0),
            },
        }
    path = folder / "wsgidav.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Deployment:
    a: ServerProcess
    b: ServerProcess
    catalog_url: str
    store_dir: Path

    def problems(self) -> list[str]:
        """What `davfs fsck --verify` finds ([] when every file is whole)."""
        catalog = Catalog(self.catalog_url)
        # What the instances read: the shared staging area in front of the shared store.
        store = StagingArea(
            LocalStore(str(self.store_dir)), self.store_dir.parent / "shared-staging", limit=1 << 40
        )
        try:
            return fsck(catalog, store, verify=True).lines()
        finally:
            catalog.close()


@pytest.fixture
def deployment(
    request: pytest.FixtureRequest,
    server_process: Callable[..., ServerProcess],
    postgres_url: str,
    redis_url: str,
    tmp_path: Path,
) -> Deployment:
    """Two instances on one PostgreSQL catalog and one store folder; locks in the
    catalog, or in Redis for tests parametrized with ``indirect=["deployment"]``."""
    locks = getattr(request, "param", "catalog")
    config = scale_out_config(tmp_path, postgres_url, redis_url if locks == "redis" else None)
    env = {"DAVFS_CONFIG": str(config)}
    a = server_process(tmp_path / "a", env=env)
    b = server_process(tmp_path / "b", env=env)
    return Deployment(a, b, postgres_url, tmp_path / "shared-store")


def test_both_instances_serve_one_tree(deployment: Deployment) -> None:
    a, b = deployment.a.url, deployment.b.url
    body = os.urandom(3 * MiB + 5)
    assert requests.request("MKCOL", a + "docs").status_code == 201
    assert requests.put(a + "docs/f.bin", data=body).status_code == 201
    assert requests.get(b + "docs/f.bin").content == body
    assert requests.request("MOVE", b + "docs/f.bin", headers={"Destination": b + "g.bin"}).status_code == 201
    assert requests.get(a + "docs/f.bin").status_code == 404
    assert requests.get(a + "g.bin").content == body
    props = '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop><Z:k>v</Z:k></D:prop></D:set></D:propertyupdate>'
    assert requests.request("PROPPATCH", a + "g.bin", data=props).status_code == 207
    found = requests.request("PROPFIND", b + "g.bin", headers={"Depth": "0"})
    assert ">v</" in found.text
    assert deployment.problems() == []


@pytest.mark.parametrize("deployment", ["catalog", "redis"], indirect=True)
def test_a_lock_on_one_instance_is_honoured_by_the_other(deployment: Deployment) -> None:
    a, b = deployment.a.url, deployment.b.url
    requests.put(a + "locked.txt", data=b"v1").raise_for_status()
    locked = requests.request("LOCK", a + "locked.txt", data=LOCK_BODY, headers={"Timeout": "Second-600"})
    assert locked.status_code == 200
    token = locked.headers["Lock-Token"]
    assert requests.put(b + "locked.txt", data=b"intruder").status_code == 423
    assert requests.request("DELETE", b + "locked.txt").status_code == 423
    assert requests.put(b + "locked.txt", data=b"v2", headers={"If": f"({token})"}).status_code == 204
    assert requests.request("UNLOCK", b + "locked.txt", headers={"Lock-Token": token}).status_code == 204
    assert requests.put(b + "locked.txt", data=b"v3").status_code == 204
    assert requests.get(a + "locked.txt").content == b"v3"


def test_concurrent_writers_on_both_instances_end_consistent(deployment: Deployment) -> None:
    """Bounded: 6 clients × 15 operations, mixing PUT/MOVE/COPY/DELETE on 4 names."""
    urls = [deployment.a.url, deployment.b.url]
    names = [f"n{i}.bin" for i in range(4)]
    written: set[str] = set()
    failures: list[str] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with requests.Session() as http:
            for _ in range(15):
                base = rng.choice(urls)
                name, other = rng.sample(names, 2)
                op = rng.random()
                if op < 0.6:
                    body = rng.randbytes(rng.choice([0, 100, MiB - 1, MiB + 1, 2 * MiB + 7]))
                    with lock:
                        written.add(hashlib.sha256(body).hexdigest())
                    status = http.put(base + name, data=body).status_code
                    ok = status in (201, 204)
                elif op < 0.75:
                    status = http.request(
                        "MOVE", base + name, headers={"Destination": base + other}
                    ).status_code
                    ok = status in (201, 204, 404)
                elif op < 0.9:
                    status = http.request(
                        "COPY", base + name, headers={"Destination": base + other}
                    ).status_code
                    ok = status in (201, 204, 404)
                else:
                    status = http.request("DELETE", base + name).status_code
                    ok = status in (204, 404)
                if not ok:
                    with lock:
                        failures.append(f"op {op:.2f} on {name}: HTTP {status}")

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    for name in names:
        from_a, from_b = requests.get(urls[0] + name), requests.get(urls[1] + name)
        assert from_a.status_code == from_b.status_code
        if from_a.status_code == 200:
            assert from_a.content == from_b.content
            assert hashlib.sha256(from_a.content).hexdigest() in written
    assert deployment.problems() == []


def test_a_reader_on_one_instance_sees_old_or_new_never_a_mix(deployment: Deployment) -> None:
    a, b = deployment.a.url, deployment.b.url
    versions = [os.urandom(4 * MiB) for _ in range(2)]
    requests.put(a + "hot.bin", data=versions[0]).raise_for_status()
    done = threading.Event()

    def overwrite() -> None:
        with requests.Session() as http:
            for round_number in range(10):
                http.put(a + "hot.bin", data=versions[(round_number + 1) % 2]).raise_for_status()
        done.set()

    writer = threading.Thread(target=overwrite)
    writer.start()
    seen = 0
    deadline = time.monotonic() + 120
    with requests.Session() as http:
        while not done.is_set() and time.monotonic() < deadline:
            body = http.get(b + "hot.bin").content
            assert body in versions
            seen += 1
    writer.join(timeout=60)
    assert seen >= 2


def test_killing_an_instance_mid_upload_loses_nothing(deployment: Deployment) -> None:
    a, b = deployment.a, deployment.b
    kept = os.urandom(2 * MiB + 1)
    requests.put(a.url + "kept.bin", data=kept).raise_for_status()
    requests.put(a.url + "target.bin", data=b"old").raise_for_status()
    host, port = urlparse(a.url).hostname, urlparse(a.url).port
    with socket.create_connection((host, port)) as sock:
        sock.sendall(
            f"PUT /target.bin HTTP/1.1\r\nHost: {host}\r\nContent-Length: {8 * MiB}\r\n\r\n".encode()
            + os.urandom(3 * MiB)
        )
        time.sleep(0.5)  # the first chunks reach the store
        a.kill()
    assert requests.get(b.url + "kept.bin").content == kept
    assert requests.get(b.url + "target.bin").content == b"old"
    assert requests.put(b.url + "after.bin", data=b"still serving").status_code == 201
    assert requests.get(b.url + "after.bin").content == b"still serving"
    assert deployment.problems() == []


def test_only_one_instance_writes_manifests_at_a_time(postgres_url: str, tmp_path: Path) -> None:
    from davfs.manifest import ManifestWriter

    first, second = Catalog(postgres_url), Catalog(postgres_url)
    store = LocalStore(str(tmp_path / "store"))
    try:
        first.tree.mkdir(1, "x")
        with first.db.single_instance("manifests") as mine:
            assert mine
            assert ManifestWriter(second, store, interval=3600).flush() == 0  # the other is at it
        assert ManifestWriter(second, store, interval=3600).flush() == 1
    finally:
        first.close()
        second.close()


def test_recover_into_postgresql_keeps_ids_going(postgres_url: str, tmp_path: Path) -> None:
    from davfs.manifest import ManifestWriter, recover

    source = Catalog(f"sqlite:///{tmp_path / 'old.sqlite'}")
    store = LocalStore(str(tmp_path / "store"))
    folder = source.tree.mkdir(1, "kept")
    source.tree.mkdir(folder.id, "inner")
    ManifestWriter(source, store, interval=3600).flush()
    source.close()
    target = Catalog(postgres_url)
    try:
        assert recover(target, store).problems == []
        assert target.tree.resolve(["kept", "inner"]) is not None
        fresh = target.tree.mkdir(1, "new")  # the id sequence continues after the recovered ids
        assert fresh.id > target.tree.resolve(["kept", "inner"]).id  # type: ignore[union-attr]
    finally:
        target.close()
