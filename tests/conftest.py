"""Shared fixtures: a real cheroot server on a free loopback port, in-process or as a
subprocess, over a fresh data folder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from davfs.config import DavfsConfig, load_config
from davfs.server import App, build_app, make_server
from davfs.stores.base import ChunkStore
from tests.dav_client import dav  # noqa: F401 - a logged-in client session, for every test
from tests.services import postgres_url, redis_url  # noqa: F401 - real-server fixtures, for every test
from tests.telegram_rig import telegram  # noqa: F401 - the fake-Telegram fixture, for every test

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


@dataclass
class RunningServer:
    """A davfs server running in this process on a loopback port."""

    url: str
    app: App
    config: DavfsConfig
    server: Any
    thread: threading.Thread
    stopped: bool = False

    def ship(self) -> None:
        """Ship everything write-back staged into the store now (the store then holds
        every byte, as a test that looks at the store expects)."""
        assert self.app.drive.ship_all(timeout=120) == 0, "staged chunks could not be shipped"

    def stop(self) -> None:
        """Stop serving and close the catalog, store and lock storage (idempotent)."""
        if not self.stopped:
            self.stopped = True
            self.server.stop()
            self.thread.join(timeout=10)
            self.app.close()


def davfs_config(data_dir: Path, **davfs: Any) -> DavfsConfig:
    """A config for tests: no config file, port 0, the given davfs keys; anonymous
    (loopback only) unless users are given, so most tests need no credentials."""
    overrides: dict[str, Any] = {"data_dir": str(data_dir), "port": 0, "host": "127.0.0.1"}
    if "users" not in davfs:
        overrides["anonymous"] = True
    overrides.update(davfs)
    return load_config(os.devnull, environ={}, overrides=overrides)


def launch(config: DavfsConfig, store: ChunkStore | None = None) -> RunningServer:
    """Serve ``config`` on a thread of this process; the caller stops it."""
    app = build_app(config, store=store)
    server = make_server(config, app)
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    host, port = server.bind_addr[:2]
    scheme = "https" if config.tls else "http"
    return RunningServer(f"{scheme}://{host}:{port}/", app, config, server, thread)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Factory: start_server(store=None, **davfs_keys) → RunningServer; all stopped at teardown."""
    started: list[RunningServer] = []

    def start(
        *, store: ChunkStore | None = None, data_dir: Path | None = None, **davfs: Any
    ) -> RunningServer:
        running = launch(davfs_config(data_dir or tmp_path / f"data{len(started)}", **davfs), store)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def server(start_server: Callable[..., RunningServer]) -> RunningServer:
    """A server on the embedded default (SQLite + local store) with small chunks, so
    multi-chunk files stay small in tests."""
    return start_server(chunk_size="1MiB")


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """`python run_server.py` as a child process (for kill -9 tests and real clients)."""

    process: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    log_path: Path

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def spawn_server(
    data_dir: Path, *, env: dict[str, str] | None = None, args: list[str] | None = None
) -> ServerProcess:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"server-{port}.log"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("DAVFS_")}
    child_env.update({"DAVFS_PORT": str(port), "DAVFS_DATA_DIR": str(data_dir), "DAVFS_CONFIG": os.devnull})
    child_env.update(env or {})
    child_env.setdefault("DAVFS_ANONYMOUS", "false" if "DAVFS_USERS" in child_env else "true")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "run_server.py"), *(args or [])],
            cwd=data_dir.parent,
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()}")
        try:
            requests.request("OPTIONS", url, timeout=2)
            return ServerProcess(process, url, data_dir, log_path)
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start within 30 s")


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    spawned: list[ServerProcess] = []

    def spawn(data_dir: Path | None = None, **kwargs: Any) -> ServerProcess:
        proc = spawn_server(data_dir or tmp_path / "data", **kwargs)
        spawned.append(proc)
        return proc

    yield spawn
    for proc in spawned:
        proc.stop()
