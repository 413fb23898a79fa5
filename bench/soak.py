#!/usr/bin/env python3
"""Bounded soak test: N clients mix PUT/GET/Range GET/PROPFIND/MOVE/COPY/DELETE against
one davfs server for a fixed time, verifying every answer; reports operations, errors
(must be 0) and the server's RSS growth.

    python3 bench/soak.py                       # 8 clients, 300 s
    python3 bench/soak.py --seconds 60 --json /tmp/soak.json

The server is ``python3 run_server.py`` as a subprocess on a free loopback port over a
fresh data folder, with one real user (Digest authentication, as a client over plain HTTP
would use) and 1 MiB chunks so multi-chunk files are cheap. Each client has its own
requests.Session and its own folder ``/c<i>/`` whose expected content it models exactly
(names, sizes, SHA-256 of seeded content), so every status, listing and byte is checked;
a shared folder ``/shared/`` lets clients race each other with PUT/GET/MOVE/COPY/DELETE,
where only sane statuses and self-consistent bodies are checked. At the end every client
folder is verified once more, the server is stopped and ``davfs fsck`` runs on its data.
Exit status 0 iff there were no errors and fsck is clean. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, unquote, urlparse

import requests
from requests.auth import HTTPDigestAuth

# bench/bench.py, next to this script: the same plumbing for servers and /proc.
from bench import _die_with_parent, free_port, terminate_on_sigterm
from bench import rss_kib as proc_status  # any numeric /proc/<pid>/status field

REPO = Path(__file__).resolve().parent.parent
KiB = 1024
MiB = 1024 * 1024
HOST = "127.0.0.1"
DAV = "{DAV:}"
USER, PASSWORD = "soak", "soak-pass"
SHARED = "/shared/"
# Names that need escaping in a URL and in the PROPFIND hrefs (the suffix of some files).
ODD_SUFFIXES = (" space.bin", "-äöü-ß.txt", "+plus&and.dat", "(1)~'q'.bin", " 100%.bin", "-€-日本.bin")
PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
    b"<D:resourcetype/><D:getcontentlength/></D:prop></D:propfind>"
)
MAX_FIRST_ERRORS = 20


# ---------------------------------------------------------------------------------------
# Content: seeded, so a file is (seed, size) and can be regenerated to check any range
# ---------------------------------------------------------------------------------------


def content(seed: int, size: int) -> bytes:
    """The bytes of a file: a pure function of (seed, size), so no client keeps file
    bodies in memory and any range can be checked against a regenerated slice."""
    return random.Random(seed).randbytes(size)


def self_checking(payload: bytes) -> bytes:
    """A shared-folder body: SHA-256 of the payload, then the payload. Whoever wrote the
    file last, a GET must return a body that checks out (no torn or mixed versions)."""
    return hashlib.sha256(payload).digest() + payload


def body_checks_out(body: bytes) -> bool:
    return len(body) >= 32 and hashlib.sha256(body[32:]).digest() == body[:32]


def first_difference(got: bytes, want: bytes) -> int:
    for i, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            return i
    return min(len(got), len(want))


# ---------------------------------------------------------------------------------------
# Server process, RSS sampling
# ---------------------------------------------------------------------------------------


def davfs_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment minus every DAVFS_* variable (a developer's own settings must not
    leak into the run), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAVFS_")}
    env.update(DAVFS_CONFIG=os.devnull, **extra)
    return env


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 15 s; returns the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


def start_server(work: Path, chunk_size_mib: int, anonymous: bool) -> Server:
    port = free_port()
    data_dir = work / "data"
    data_dir.mkdir()
    log_path = work / "server.log"  # beside the data folder, so it survives fsck and is kept on failure
    extra = {
        "DAVFS_PORT": str(port),
        "DAVFS_DATA_DIR": str(data_dir),
        "DAVFS_HOST": HOST,
        "DAVFS_CHUNK_SIZE": f"{chunk_size_mib}MiB",
    }
    if anonymous:
        extra["DAVFS_ANONYMOUS"] = "true"
    else:
        extra["DAVFS_USERS"] = json.dumps({USER: PASSWORD})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "run_server.py")],
            cwd=str(work),
            env=davfs_env(extra),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    server = Server(process, port, data_dir, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"davfs exited at start:\n{server.log_tail()}")
        try:
            requests.request("OPTIONS", server.url + "/", timeout=2)
            return server
        except requests.ConnectionError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"davfs did not answer within 30 s:\n{server.log_tail()}")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (from /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
        fields = text[text.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


@dataclass
class Sample:
    t: float  # seconds since the load started
    rss_kib: int
    ops: int
    fds: int | None
    threads: int | None


class Sampler:
    """Samples the server's VmRSS (and open fds, threads) every ``interval`` s in a thread.
    A leak shows as RSS or fds that keep climbing after warm-up, not as one high sample."""

    def __init__(self, pid: int, started: float, ops: Callable[[], int], interval: float = 1.0) -> None:
        self.pid = pid
        self.started = started
        self.ops = ops
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def sample(self) -> None:
        rss = proc_status(self.pid, "VmRSS")
        if rss is not None:
            self.samples.append(
                Sample(
                    time.monotonic() - self.started,
                    rss,
                    self.ops(),
                    open_fds(self.pid),
                    proc_status(self.pid, "Threads"),
                )
            )

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ---------------------------------------------------------------------------------------
# Shared bookkeeping
# ---------------------------------------------------------------------------------------


class Stats:
    """Counters shared by all clients (one lock: a few hundred ops/s do not contend)."""

    def __init__(self, max_ops: int) -> None:
        self.max_ops = max_ops
        self.lock = threading.Lock()
        self.reserved = 0
        self.ops: Counter[str] = Counter()
        self.latency: dict[str, list[float]] = {}
        self.statuses: Counter[str] = Counter()
        self.errors = 0
        self.first_errors: list[dict[str, Any]] = []
        self.bytes_up = 0
        self.bytes_down = 0

    def reserve(self) -> bool:
        """Claim one operation of the ``--max-ops`` budget; False once it is spent."""
        with self.lock:
            if self.reserved >= self.max_ops:
                return False
            self.reserved += 1
            return True

    def total_ops(self) -> int:
        with self.lock:
            return sum(self.ops.values())

    def done(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.ops[kind] += 1
            self.latency.setdefault(kind, []).append(seconds)

    def error(self, record: dict[str, Any]) -> None:
        with self.lock:
            self.errors += 1
            if len(self.first_errors) < MAX_FIRST_ERRORS:
                self.first_errors.append(record)
        print(f"  ERROR {json.dumps(record, ensure_ascii=False)[:600]}", flush=True)


@dataclass
class FileState:
    seed: int
    size: int
    sha256: str


class ClientFailure(Exception):
    """This client's check failed (already recorded as an error)."""


@dataclass
class Client:
    """One simulated user: its own session and folder, whose exact content it models."""

    index: int
    base: str
    auth: Any
    rng: random.Random
    stats: Stats
    args: argparse.Namespace
    started: float
    files: dict[str, FileState] = field(default_factory=dict)
    counter: int = 0
    history: deque[str] = field(default_factory=lambda: deque(maxlen=8))
    session: requests.Session = field(default_factory=requests.Session)
    folder: str = field(init=False)
    finished: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.session.auth = self.auth
        self.folder = f"/c{self.index}/"

    # -- plumbing ------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.base + quote(path)

    def fail(self, kind: str, request: str, expected: Any, got: Any, detail: str = "") -> NoReturn:
        self.stats.error(
            {
                "t": round(time.monotonic() - self.started, 2),
                "client": self.index,
                "op": kind,
                "request": request,
                "expected": expected,
                "got": got,
                "detail": detail,
                "recent_requests": list(self.history),
            }
        )
        raise ClientFailure(request)

    def request(
        self,
        kind: str,
        method: str,
        path: str,
        expect: set[int],
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> requests.Response:
        """One request, timed and checked against the expected statuses; any other status,
        or an exception (timeout, reset), is an error."""
        label = f"{method} {path}" + "".join(f" [{k}: {v}]" for k, v in (headers or {}).items())
        started = time.perf_counter()
        try:
            response = self.session.request(
                method, self.url(path), headers=headers, timeout=(10, self.args.timeout), **kw
            )
        except requests.RequestException as exc:
            self.history.append(f"{label} -> {type(exc).__name__}")
            self.fail(kind, label, sorted(expect), f"{type(exc).__name__}: {exc}")
        elapsed = time.perf_counter() - started
        self.history.append(f"{label} -> {response.status_code}")
        with self.stats.lock:
            self.stats.statuses[f"{method} {response.status_code}"] += 1
            self.stats.bytes_down += len(response.content)
            data = kw.get("data")
            if isinstance(data, bytes):
                self.stats.bytes_up += len(data)
        if response.status_code not in expect:
            self.fail(kind, label, sorted(expect), response.status_code, response.text[:300])
        self.stats.done(kind, elapsed)
        return response

    def new_name(self) -> str:
        self.counter += 1
        suffix = self.rng.choice(ODD_SUFFIXES) if self.rng.random() < 0.15 else ".bin"
        return f"f{self.counter}{suffix}"

    def pick(self) -> str:
        return self.rng.choice(sorted(self.files))

    def random_size(self) -> int:
        """Mostly small (0-200 KiB, some empty), sometimes 1-5 MiB so a file spans several
        chunks, and now and then exactly on or next to a chunk boundary."""
        chunk: int = self.args.chunk_size * MiB
        roll = self.rng.random()
        if roll < 0.03:
            return 0
        if roll < 0.88:
            return self.rng.randint(1, 200 * KiB)
        if roll < 0.94:
            return self.rng.randint(1, 5) * chunk + self.rng.choice((-1, 0, 1))
        return self.rng.randint(MiB, 5 * MiB)

    def listing(self, kind: str, path: str) -> dict[str, int | None]:
        """PROPFIND Depth 1: member name -> getcontentlength (None for a folder)."""
        response = self.request(
            kind,
            "PROPFIND",
            path,
            {207},
            headers={"Depth": "1", "Content-Type": "application/xml"},
            data=PROPFIND_BODY,
        )
        try:
            root = ET.fromstring(response.content)
        except ET.ParseError as exc:
            self.fail(kind, f"PROPFIND {path}", "XML multistatus", f"unparsable: {exc}", response.text[:300])
        members: dict[str, int | None] = {}
        for entry in root.iter(f"{DAV}response"):
            href = unquote(urlparse(entry.findtext(f"{DAV}href") or "").path)
            if href.rstrip("/") == path.rstrip("/"):
                continue
            name = href.rstrip("/").rsplit("/", 1)[-1]
            if name in members:
                self.fail(kind, f"PROPFIND {path}", "unique names", f"{name!r} listed twice")
            is_folder = entry.find(f".//{DAV}resourcetype/{DAV}collection") is not None
            length = entry.findtext(f".//{DAV}getcontentlength")
            members[name] = None if is_folder else int(length) if length is not None else -1
        return members

    # -- operations on the client's own folder --------------------------------------------

    def put(self, overwrite: bool) -> None:
        name = self.pick() if overwrite else self.new_name()
        seed, size = self.rng.getrandbits(63), self.random_size()
        body = content(seed, size)
        self.request(
            "put_overwrite" if overwrite else "put_new",
            "PUT",
            self.folder + name,
            {204 if overwrite else 201},
            data=body,
        )
        self.files[name] = FileState(seed, size, hashlib.sha256(body).hexdigest())

    def get(self, kind: str = "get", name: str | None = None) -> None:
        name = name or self.pick()
        want = self.files[name]
        response = self.request(kind, "GET", self.folder + name, {200})
        got = response.content
        if len(got) != want.size or hashlib.sha256(got).hexdigest() != want.sha256:
            at = first_difference(got, content(want.seed, want.size))
            self.fail(
                kind,
                f"GET {self.folder}{name}",
                f"{want.size} bytes sha256 {want.sha256[:16]}",
                f"{len(got)} bytes sha256 {hashlib.sha256(got).hexdigest()[:16]}",
                f"first difference at byte {at}",
            )

    def get_missing(self) -> None:
        self.request("get_missing", "GET", self.folder + f"missing-{self.rng.getrandbits(32)}.bin", {404})

    def get_range(self) -> None:
        candidates = sorted(n for n, f in self.files.items() if f.size > 0)
        if not candidates:
            return self.get()
        name = self.rng.choice(candidates)
        want = self.files[name]
        size = want.size
        form = self.rng.random()
        if form < 0.1:  # suffix: the last N bytes
            n = self.rng.randint(1, min(size, 256 * KiB))
            spec, first, last = f"-{n}", size - n, size - 1
        elif form < 0.2:  # open-ended
            first = self.rng.randrange(size)
            spec, last = f"{first}-", size - 1
        else:
            first = self.rng.randrange(size)
            last = min(size - 1, first + self.rng.randint(0, min(2 * MiB, size)))
            spec = f"{first}-{last}"
        path = self.folder + name
        response = self.request("get_range", "GET", path, {206}, headers={"Range": f"bytes={spec}"})
        expected_range = f"bytes {first}-{last}/{size}"
        if response.headers.get("Content-Range") != expected_range:
            self.fail(
                "get_range", f"GET {path} bytes={spec}", expected_range, response.headers.get("Content-Range")
            )
        want_bytes = content(want.seed, size)[first : last + 1]
        if response.content != want_bytes:
            self.fail(
                "get_range",
                f"GET {path} bytes={spec}",
                f"{len(want_bytes)} bytes",
                f"{len(response.content)} bytes",
                f"first difference at byte {first_difference(response.content, want_bytes)} of the range",
            )

    def propfind(self, kind: str = "propfind") -> None:
        got = self.listing(kind, self.folder)
        want = {name: f.size for name, f in self.files.items()}
        if got != want:
            missing = sorted(set(want) - set(got))
            extra = sorted(set(got) - set(want))
            sizes = {n: (want[n], got[n]) for n in set(want) & set(got) if want[n] != got[n]}
            self.fail(
                kind,
                f"PROPFIND {self.folder}",
                f"{len(want)} files",
                f"{len(got)} members",
                f"missing {missing[:5]}, unexpected {extra[:5]}, "
                f"size (want, got) {dict(list(sizes.items())[:5])}",
            )

    def move_or_copy(self, method: str) -> None:
        kind = method.lower()
        src = self.pick()
        others = [n for n in sorted(self.files) if n != src]
        roll = self.rng.random()
        headers: dict[str, str] = {}
        if others and roll < 0.05:  # Overwrite: F onto an existing file must be refused
            dst, expect = self.rng.choice(others), 412
            headers["Overwrite"] = "F"
        elif others and roll < 0.3:
            dst, expect = self.rng.choice(others), 204
        else:
            dst, expect = self.new_name(), 201
        headers["Destination"] = self.url(self.folder + dst)
        self.request(kind, method, self.folder + src, {expect}, headers=headers)
        if expect != 412:
            self.files[dst] = self.files[src]
            if method == "MOVE":
                del self.files[src]
        # A move must take the source away and leave the bytes under the new name.
        if method == "MOVE" and expect != 412 and self.rng.random() < 0.3:
            self.request("move_check", "GET", self.folder + src, {404})
            self.get("move_check", dst)

    def delete(self) -> None:
        if self.rng.random() < 0.05:
            self.request(
                "delete_missing", "DELETE", self.folder + f"missing-{self.rng.getrandbits(32)}.bin", {404}
            )
            return
        name = self.pick()
        self.request("delete", "DELETE", self.folder + name, {204})
        del self.files[name]

    # -- the shared folder: clients race; only sane statuses and whole bodies are checked --

    def shared_name(self) -> str:
        return f"s{self.rng.randrange(self.args.shared_files)}.bin"

    def shared_op(self) -> None:
        roll = self.rng.random()
        path = SHARED + self.shared_name()
        if roll < 0.3:
            size = (
                self.rng.randint(0, 64 * KiB) if self.rng.random() < 0.85 else self.rng.randint(MiB, 3 * MiB)
            )
            self.request(
                "shared_put",
                "PUT",
                path,
                {201, 204},
                data=self_checking(content(self.rng.getrandbits(63), size)),
            )
        elif roll < 0.6:
            response = self.request("shared_get", "GET", path, {200, 404})
            if response.status_code == 200 and not body_checks_out(response.content):
                self.fail(
                    "shared_get",
                    f"GET {path}",
                    "a self-consistent body",
                    f"{len(response.content)} bytes that do not check out",
                )
        elif roll < 0.75:
            dst = SHARED + self.shared_name()
            if dst != path:
                method = "MOVE" if self.rng.random() < 0.8 else "COPY"
                self.request(
                    f"shared_{method.lower()}",
                    method,
                    path,
                    {201, 204, 404},
                    headers={"Destination": self.url(dst)},
                )
        elif roll < 0.9:
            self.request("shared_delete", "DELETE", path, {204, 404})
        else:
            members = self.listing("shared_propfind", SHARED)
            bad = {n: s for n, s in members.items() if s is None or s < 32 or not n.startswith("s")}
            # A 0-byte payload still has its 32-byte hash, so no shared file is shorter.
            if bad:
                self.fail("shared_propfind", f"PROPFIND {SHARED}", "files s*.bin of >= 32 bytes", bad)

    # -- the loop ------------------------------------------------------------------------

    def step(self) -> None:
        at_cap = len(self.files) >= self.args.max_files
        ops = self.args.mix
        kind = self.rng.choices(list(ops), weights=list(ops.values()))[0]
        if not self.files and kind not in ("get_missing", "shared", "propfind"):
            kind = "put_new"
        if kind == "put_new" and at_cap:
            kind = "put_overwrite"
        if kind == "put_new":
            self.put(overwrite=False)
        elif kind == "put_overwrite":
            self.put(overwrite=True)
        elif kind == "get":
            self.get()
        elif kind == "get_missing":
            self.get_missing()
        elif kind == "get_range":
            self.get_range()
        elif kind == "propfind":
            self.propfind()
        elif kind == "move":
            self.move_or_copy("MOVE")
        elif kind == "copy":
            self.move_or_copy("COPY")
        elif kind == "delete":
            self.delete()
        else:
            self.shared_op()

    def resync(self) -> bool:
        """After an error the model may be wrong; rebuild it from a listing by deleting
        what the server holds (the soak goes on with a known-empty folder). False if even
        that fails: the client stops."""
        try:
            for name in list(self.listing("resync", self.folder)):
                self.request("resync", "DELETE", self.folder + name, {204, 404})
            self.files.clear()
            return True
        except (ClientFailure, requests.RequestException):
            return False

    def run(self, stop: threading.Event, deadline: float) -> None:
        try:
            while not stop.is_set() and time.monotonic() < deadline and self.stats.reserve():
                try:
                    self.step()
                except ClientFailure:
                    if not self.resync():
                        print(f"  client {self.index}: cannot resync its folder, stopping", flush=True)
                        return
        except Exception as exc:  # a bug in the soak itself must show, not hang the run
            traceback.print_exc()
            self.stats.error({"client": self.index, "op": "client crashed", "got": repr(exc)})
        finally:
            self.finished.set()


# ---------------------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------------------


def check_auth(base: str, auth: Any, anonymous: bool) -> str:
    """Proves the run is authenticated: no credentials gets 401, Digest gets in."""
    if anonymous:
        return "anonymous (DAVFS_ANONYMOUS=true)"
    bare = requests.request("PROPFIND", base + "/", headers={"Depth": "0"}, timeout=10)
    if bare.status_code != 401:
        raise RuntimeError(f"PROPFIND without credentials answered {bare.status_code}, not 401")
    challenge = bare.headers.get("WWW-Authenticate", "")
    with requests.Session() as session:
        session.auth = auth
        ok = session.request("PROPFIND", base + "/", headers={"Depth": "0"}, timeout=10)
    if ok.status_code != 207:
        raise RuntimeError(f"PROPFIND with Digest credentials answered {ok.status_code}")
    return f"Digest as user {USER!r} (unauthenticated requests get 401: {challenge.split(' ', 1)[0]})"


def final_verify(clients: list[Client]) -> dict[str, Any]:
    """Every file of every client folder, GET in full and hashed, and each listing checked."""
    files = sum(len(c.files) for c in clients)
    size = sum(f.size for c in clients for f in c.files.values())
    before = clients[0].stats.errors

    def verify(client: Client) -> None:
        try:
            client.propfind("final_propfind")
            for name in sorted(client.files):
                client.get("final_get", name)
        except ClientFailure:
            pass  # recorded; go on with the other clients

    started = time.monotonic()
    with ThreadPoolExecutor(len(clients)) as pool:
        list(pool.map(verify, clients))
    return {
        "files": files,
        "bytes": size,
        "seconds": round(time.monotonic() - started, 1),
        "errors": clients[0].stats.errors - before,
    }


def run_fsck(data_dir: Path, verify: bool) -> dict[str, Any]:
    """``davfs fsck`` on the stopped server's data: every file's chunks must be there."""
    cmd = [sys.executable, "-m", "davfs.cli", "-d", str(data_dir), "fsck"] + (["--verify"] if verify else [])
    try:
        out = subprocess.run(
            cmd, cwd=str(REPO), env=davfs_env({}), capture_output=True, text=True, timeout=600, check=False
        )
    except subprocess.TimeoutExpired:
        return {
            "command": "python3 " + " ".join(cmd[1:]),
            "exit_code": None,
            "clean": False,
            "output": "timed out after 600 s",
        }
    output = (out.stdout + out.stderr).strip()
    return {
        "command": "python3 " + " ".join(cmd[1:]),
        "exit_code": out.returncode,
        "clean": out.returncode == 0,
        "output": output,
    }


def latency_summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(1000 * statistics.median(ordered), 1),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
        "max_ms": round(1000 * ordered[-1], 1),
    }


def rss_report(
    samples: list[Sample], hwm_kib: int | None, warmup_s: float, warmup_ops: int
) -> dict[str, Any]:
    """RSS at warm-up (first sample with both ``warmup_s`` seconds and ``warmup_ops``
    operations behind it), peak (samples and the kernel's VmHWM) and end, growth =
    end - warm-up, and the least-squares slope after warm-up (a leak keeps climbing)."""
    if not samples:
        return {}
    warm_index = next(
        (i for i, s in enumerate(samples) if s.t >= warmup_s and s.ops >= warmup_ops), len(samples) - 1
    )
    warm, end = samples[warm_index], samples[-1]
    peak = max(max(s.rss_kib for s in samples), hwm_kib or 0)
    after = samples[warm_index:]
    slope = 0.0
    if len(after) >= 3 and after[-1].t > after[0].t:
        ts = [s.t for s in after]
        mean_t, mean_r = statistics.fmean(ts), statistics.fmean(s.rss_kib for s in after)
        num = sum((s.t - mean_t) * (s.rss_kib - mean_r) for s in after)
        den = sum((t - mean_t) ** 2 for t in ts)
        slope = num / den * 60 / 1024 if den else 0.0
    return {
        "first_mib": round(samples[0].rss_kib / 1024, 1),
        "warmup_mib": round(warm.rss_kib / 1024, 1),
        "warmup_at_s": round(warm.t, 1),
        "warmup_at_ops": warm.ops,
        "peak_mib": round(peak / 1024, 1),
        "end_mib": round(end.rss_kib / 1024, 1),
        "growth_mib": round((end.rss_kib - warm.rss_kib) / 1024, 1),
        "slope_after_warmup_mib_per_min": round(slope, 2),
        "fds": {"warmup": warm.fds, "end": end.fds, "max": max((s.fds or 0) for s in samples)},
        "threads": {
            "warmup": warm.threads,
            "end": end.threads,
            "max": max((s.threads or 0) for s in samples),
        },
    }


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------

# Relative weights of the operations each client picks from ("shared" = one shared-folder op).
DEFAULT_MIX = {
    "put_new": 18,
    "put_overwrite": 8,
    "get": 18,
    "get_range": 16,
    "get_missing": 1,
    "propfind": 10,
    "move": 8,
    "copy": 3,
    "delete": 8,
    "shared": 10,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=300, help="wall time of the load phase (default 300)")
    p.add_argument(
        "--max-ops",
        type=int,
        default=200_000,
        help="stop after this many steps (one request each; a checked MOVE is three), default 200,000",
    )
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (threads), default 8")
    p.add_argument("--seed", type=int, default=1234, help="seed of every client's choices and contents")
    p.add_argument(
        "--chunk-size", type=int, default=1, metavar="MIB", help="davfs chunk size in MiB (default 1)"
    )
    p.add_argument(
        "--max-files", type=int, default=20, help="files a client folder holds at most (default 20)"
    )
    p.add_argument("--shared-files", type=int, default=6, help="names in the shared folder (default 6)")
    p.add_argument("--timeout", type=float, default=60, help="seconds a response may take (default 60)")
    p.add_argument(
        "--warmup-seconds", type=float, default=10, help="RSS baseline after this long (default 10) ..."
    )
    p.add_argument("--warmup-ops", type=int, default=200, help="... and this many operations (default 200)")
    p.add_argument("--anonymous", action="store_true", help="no authentication (DAVFS_ANONYMOUS=true)")
    p.add_argument("--fsck-verify", action="store_true", help="run `fsck --verify` (re-hash every block)")
    p.add_argument("--tmp", help="where the work folder goes (default: system tmp)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the work folder (kept anyway on failure)")
    p.add_argument("--json", help="write the report as JSON to this file")
    args = p.parse_args(argv)
    if not 1 <= args.clients <= 64:
        p.error("--clients must be 1-64")
    if args.seconds <= 0 or args.max_ops < 1 or args.max_files < 2 or args.shared_files < 2:
        p.error("--seconds, --max-ops must be positive; --max-files, --shared-files at least 2")
    if not 1 <= args.chunk_size <= 2000:
        p.error("--chunk-size is 1-2000 MiB")
    args.mix = dict(DEFAULT_MIX)
    return args


def print_report(report: dict[str, Any]) -> None:
    ops, rss, fsck = report["ops"], report["rss"], report["fsck"]
    print()
    print(
        f"davfs soak: {report['clients']} clients, {report['load_seconds']:.0f} s, "
        f"{ops['total']} operations ({ops['per_second']:.1f}/s), "
        f"{report['mib_up']:.0f} MiB up, {report['mib_down']:.0f} MiB down; auth: {report['auth']}"
    )
    load = report["environment"]["load_average_1min"]
    cpu = report["server_cpu_seconds"]
    print(
        f"  server CPU {cpu or 0:.0f} s ({1000 * (cpu or 0) / max(1, ops['total']):.1f} ms/op); "
        f"1-min load average {load['start']:.2f} at start, {load['end']:.2f} at end "
        f"({report['environment']['cpus']} CPUs)"
    )
    print(f"  {'operation':<18}{'count':>8}{'median ms':>11}{'p99 ms':>9}{'max ms':>9}")
    for kind, count in sorted(ops["by_kind"].items(), key=lambda kv: -kv[1]):
        lat = report["latency"][kind]
        print(f"  {kind:<18}{count:>8}{lat['median_ms']:>11}{lat['p99_ms']:>9}{lat['max_ms']:>9}")
    print(f"  statuses: {', '.join(f'{k}: {v}' for k, v in sorted(report['statuses'].items()))}")
    if rss:
        print(
            f"  server RSS: first {rss['first_mib']} MiB, warm-up {rss['warmup_mib']} MiB "
            f"(at {rss['warmup_at_s']} s, {rss['warmup_at_ops']} ops), peak {rss['peak_mib']} MiB, "
            f"end {rss['end_mib']} MiB; growth {rss['growth_mib']:+} MiB "
            f"(slope after warm-up {rss['slope_after_warmup_mib_per_min']:+} MiB/min)"
        )
        fds, threads = rss["fds"], rss["threads"]
        print(
            f"  server open fds: warm-up {fds['warmup']}, end {fds['end']}, max {fds['max']}; "
            f"threads: warm-up {threads['warmup']}, end {threads['end']}, max {threads['max']}"
        )
    final = report["final_verify"]
    if final:
        print(
            f"  final check: {final['files']} files ({final['bytes'] / MiB:.1f} MiB) "
            f"in {final['seconds']} s, {final['errors']} errors"
        )
    if fsck:
        state = "clean" if fsck["clean"] else "NOT CLEAN"
        print(f"  fsck: {state} (exit {fsck['exit_code']}): {fsck['output'][-300:]}")
    log = report["server_log"]
    print(f"  server log: {log['tracebacks']} tracebacks, exit code {log['exit_code']}")
    print(f"  errors: {report['errors']}")
    for record in report["first_errors"]:
        print(f"    {json.dumps(record, ensure_ascii=False)[:1000]}")
    print(f"soak {'INTERRUPTED' if report['interrupted'] else 'PASSED' if report['passed'] else 'FAILED'}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="davfs-soak-", dir=args.tmp))
    stats = Stats(args.max_ops)
    auth = None if args.anonymous else HTTPDigestAuth(USER, PASSWORD)
    server: Server | None = None
    sampler: Sampler | None = None
    clients: list[Client] = []
    interrupted = False
    report: dict[str, Any] = {}
    exit_code: int | None = None
    print(
        f"davfs soak: {args.clients} clients for {args.seconds:.0f} s (at most {args.max_ops} ops), "
        f"{args.chunk_size} MiB chunks, seed {args.seed}; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; work folder {work}",
        flush=True,
    )
    try:
        with terminate_on_sigterm():
            server = start_server(work, args.chunk_size, args.anonymous)
            print(f"  server pid {server.process.pid} at {server.url}/, log {server.log_path}", flush=True)
            auth_text = check_auth(server.url, auth, args.anonymous)
            print(f"  auth: {auth_text}", flush=True)
            setup = requests.Session()
            setup.auth = auth
            for folder in [SHARED] + [f"/c{i}/" for i in range(args.clients)]:
                response = setup.request("MKCOL", server.url + folder, timeout=30)
                if response.status_code != 201:
                    raise RuntimeError(f"MKCOL {folder} answered {response.status_code}")
            setup.close()

            load_start = os.getloadavg()[0]
            started = time.monotonic()
            deadline = started + args.seconds
            for i in range(args.clients):
                # One session (and Digest state) per client; a fresh HTTPDigestAuth each,
                # since its nonce count is per session.
                client_auth = None if args.anonymous else HTTPDigestAuth(USER, PASSWORD)
                rng = random.Random(f"{args.seed}-{i}")
                clients.append(Client(i, server.url, client_auth, rng, stats, args, started))
            sampler = Sampler(server.process.pid, started, stats.total_ops)
            sampler.start()
            stop = threading.Event()
            threads = [
                threading.Thread(target=c.run, args=(stop, deadline), name=f"client-{c.index}")
                for c in clients
            ]
            for thread in threads:
                thread.start()
            next_progress = started + 30
            # The main thread polls with sleep(), never Thread.join(timeout): on Python 3.11 a
            # Ctrl-C that lands inside join() marks a still-running thread as stopped (the
            # bpo-45274 branch of _wait_for_tstate_lock), and the server would be stopped
            # under a live client.
            try:
                while not all(c.finished.is_set() for c in clients):
                    time.sleep(0.5)
                    if server.process.poll() is not None and not stop.is_set():
                        stats.error(
                            {"op": "server", "got": f"davfs exited with code {server.process.returncode}"}
                        )
                        stop.set()
                    if time.monotonic() >= next_progress:
                        next_progress += 30
                        last = sampler.samples[-1] if sampler.samples else None
                        rss = f", RSS {last.rss_kib / 1024:.1f} MiB" if last else ""
                        print(
                            f"  {time.monotonic() - started:5.0f} s: {stats.total_ops()} ops, "
                            f"{stats.errors} errors{rss}",
                            flush=True,
                        )
            except KeyboardInterrupt:
                interrupted = True
                stop.set()
                print("\n  interrupted: stopping the clients", flush=True)
                give_up = time.monotonic() + args.timeout + 15  # a request in flight may take that long
                while not all(c.finished.is_set() for c in clients) and time.monotonic() < give_up:
                    time.sleep(0.2)
            load_seconds = time.monotonic() - started

            final: dict[str, Any] = {}
            if not interrupted and server.process.poll() is None:
                final = final_verify(clients)
            sampler.sample()  # the end point: after the final check, before the server stops
            sampler.stop()
            hwm = proc_status(server.process.pid, "VmHWM")
            server_cpu = cpu_seconds(server.process.pid)
            server_exit = server.stop()
            fsck = {} if interrupted else run_fsck(server.data_dir, args.fsck_verify)

            log_text = server.log_path.read_text(errors="replace")
            total = sum(stats.ops.values())
            report = {
                "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "args": {k: v for k, v in vars(args).items()},
                "environment": {
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "machine": platform.machine(),
                    # Other work on the machine slows the run; it shows here (the clients add ~1-2).
                    "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
                },
                "auth": auth_text,
                "server_cpu_seconds": server_cpu,
                "clients": args.clients,
                "interrupted": interrupted,
                "load_seconds": round(load_seconds, 1),
                "ops": {
                    "total": total,
                    "per_second": round(total / load_seconds, 1) if load_seconds else 0.0,
                    "by_kind": dict(stats.ops),
                },
                "latency": {k: latency_summary(v) for k, v in stats.latency.items()},
                "statuses": dict(stats.statuses),
                "mib_up": round(stats.bytes_up / MiB, 1),
                "mib_down": round(stats.bytes_down / MiB, 1),
                "rss": rss_report(sampler.samples, hwm, args.warmup_seconds, args.warmup_ops),
                "rss_samples": [
                    {
                        "t": round(s.t, 1),
                        "rss_kib": s.rss_kib,
                        "ops": s.ops,
                        "fds": s.fds,
                        "threads": s.threads,
                    }
                    for s in sampler.samples
                ],
                "final_verify": final,
                "fsck": fsck,
                "server_log": {
                    "path": str(server.log_path),
                    "tracebacks": log_text.count("Traceback (most recent call last)"),
                    "exit_code": server_exit,
                },
                "errors": stats.errors,
                "first_errors": stats.first_errors,
            }
            report["passed"] = bool(stats.errors == 0 and fsck.get("clean") and not interrupted)
            print_report(report)
            if report["server_log"]["tracebacks"]:
                print(f"--- server log tail:\n{server.log_tail()}")
            if args.json:
                Path(args.json).write_text(json.dumps(report, indent=2, ensure_ascii=False))
                print(f"wrote {args.json}")
            exit_code = 130 if interrupted else 0 if report["passed"] else 1
            return exit_code
    except (Exception, KeyboardInterrupt) as exc:
        if not isinstance(exc, KeyboardInterrupt):
            traceback.print_exc()
        print(f"\nsoak FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        if server is not None:
            print(f"--- server log tail:\n{server.log_tail()}", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    finally:
        if sampler is not None:
            sampler.stop()
        for client in clients:
            client.session.close()
        if server is not None:
            server.stop()
        if exit_code == 0 and not args.keep_tmp:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work folder kept: {work} (server log: {work / 'server.log'})")


if __name__ == "__main__":
    sys.exit(main())
