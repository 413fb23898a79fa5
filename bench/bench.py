#!/usr/bin/env python3
"""davfs benchmark: davfs vs. wsgidav's own FilesystemProvider and ``rclone serve webdav``,
same machine, same run, same files.

    python bench/bench.py --json /tmp/bench-full.json  # full run (512 MiB, 5,000-file folder, ...)
    python bench/bench.py --quick                      # fast sanity run (~1 min)

Each server runs as a subprocess on a free 127.0.0.1 port over its own fresh temporary
folder; all run side by side and every workload alternates between them round by round;
every response body is checked with SHA-256 against what was sent (a fast wrong answer
fails the run). See bench/README.md.

The same file also is the baseline server: ``bench.py --serve-wsgidav-fs ROOT PORT
[BLOCK_SIZE]`` serves ROOT with wsgidav's FilesystemProvider and wsgidav's default
config (block_size 8192 unless BLOCK_SIZE is given) on cheroot with 64 threads.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import http.client
import json
import os
import platform
import queue
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
IO_BLOCK = MiB
HOST = "127.0.0.1"
DAV = "{DAV:}"

ALLPROP_BODY = b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>'
# What a file manager (Windows' MiniRedir, Finder) asks for: a named set, not allprop.
NAMED_PROPS = (
    "resourcetype",
    "getcontentlength",
    "getlastmodified",
    "creationdate",
    "getetag",
    "displayname",
)
NAMED_BODY = (
    '<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
    + "".join(f"<D:{p}/>" for p in NAMED_PROPS)
    + "</D:prop></D:propfind>"
).encode()


# ---------------------------------------------------------------------------------------
# Baseline server (runs in the child process)
# ---------------------------------------------------------------------------------------


def serve_wsgidav_fs(root: str, port: int, block_size: int | None) -> None:
    from cheroot import wsgi
    from wsgidav.wsgidav_app import WsgiDAVApp

    config: dict[str, Any] = {
        "host": HOST,
        "port": port,
        "provider_mapping": {"/": root},
        "simple_dc": {"user_mapping": {"*": True}},
        "verbose": 1,
        "logging": {"enable": False},
    }
    if block_size:
        config["block_size"] = block_size
    app = WsgiDAVApp(config)
    server = wsgi.Server((HOST, port), app, numthreads=64)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    print(
        f"wsgidav FS serving {root} on http://{HOST}:{port}/ block_size={block_size or 'default'}", flush=True
    )
    try:
        server.safe_start()
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------
# Plumbing: budget, servers, RSS sampling, HTTP
# ---------------------------------------------------------------------------------------


class BenchError(RuntimeError):
    """A failed check (wrong body, bad status) or an exceeded time budget."""


class Budget:
    """A wall-clock deadline for the whole run; every loop calls :meth:`check`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def check(self, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise BenchError(f"time budget of {self.seconds:.0f} s exceeded during {what}")

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


def process_cpu() -> dict[int, tuple[str, float, bool]]:
    """CPU seconds of every process on the machine: pid -> (name, utime + stime including
    reaped children, is a kernel thread). Read from /proc/<pid>/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float, bool]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
            name = text[text.index("(") + 1 : text.rindex(")")]
            fields = text[text.rindex(")") + 2 :].split()
            cpu = sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
            out[int(entry)] = (name, cpu, bool(int(fields[6]) & 0x00200000))  # PF_KTHREAD
    return out


def other_cpu(
    before: dict[int, tuple[str, float, bool]], after: dict[int, tuple[str, float, bool]]
) -> tuple[float, float, list[tuple[float, str]]]:
    """CPU seconds used between two :func:`process_cpu` snapshots by user processes other
    than this one (whose figure includes the reaped servers) and by kernel threads, and
    the busiest other user processes."""
    users: list[tuple[float, str]] = []
    kernel = 0.0
    for pid, (name, cpu, kthread) in after.items():
        if pid == os.getpid():
            continue
        prev = before.get(pid)
        used = cpu - (prev[1] if prev is not None and prev[0] == name else 0.0)
        if used <= 0:
            continue
        if kthread:
            kernel += used
        else:
            users.append((used, f"{name}[{pid}]"))
    users.sort(reverse=True)
    return sum(u for u, _ in users), kernel, users[:3]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM if the bench process dies, even on SIGKILL."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class ServerSpec:
    key: str
    label: str
    kind: str  # "davfs", "fs" (wsgidav FilesystemProvider) or "rclone"
    block_size: int | None = None
    exe: str | None = None  # rclone binary
    short: str = ""  # column label of the ratio against this server
    env: tuple[tuple[str, str], ...] = ()  # extra environment (davfs settings)


def rclone_command(exe: str, root: Path, port: int) -> list[str]:
    """``rclone serve webdav`` as a fair peer: no auth, no config file, and the VFS cache
    off (rclone's default, spelled out): PUT bodies stream straight into the target file
    and GETs stream straight from it, as davfs and wsgidav FS do, instead of being staged
    through a second on-disk copy. Everything else is rclone's default."""
    return [
        exe,
        "serve",
        "webdav",
        str(root),
        "--addr",
        f"{HOST}:{port}",
        "--config",
        os.devnull,
        "--vfs-cache-mode",
        "off",
    ]


def rclone_version(exe: str) -> str:
    try:
        out = subprocess.run([exe, "version"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    first = out.stdout.splitlines()[0] if out.stdout else ""
    return first.removeprefix("rclone ").strip() or "unknown"


@dataclass
class Server:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(spec: ServerSpec, work: Path, budget: Budget) -> Server:
    port = free_port()
    data = work / f"data-{spec.key}"
    data.mkdir()
    log_path = work / f"server-{spec.key}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAVFS_", "RCLONE_"))}
    if spec.kind == "davfs":
        env.update(
            DAVFS_PORT=str(port),
            DAVFS_DATA_DIR=str(data),
            DAVFS_CONFIG=os.devnull,
            DAVFS_HOST=HOST,
            DAVFS_ANONYMOUS="true",
        )
        env.update(spec.env)
        cmd = [sys.executable, str(REPO / "run_server.py")]
    elif spec.kind == "rclone":
        assert spec.exe is not None
        cmd = rclone_command(spec.exe, data, port)
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-wsgidav-fs", str(data), str(port)]
        if spec.block_size:
            cmd.append(str(spec.block_size))
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd, cwd=str(work), env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
    server = Server(spec, process, port, log_path)
    deadline = time.monotonic() + min(30.0, budget.remaining())
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{spec.label} exited at start:\n{server.log_tail()}")
        try:
            with contextlib.closing(http.client.HTTPConnection(HOST, port, timeout=2)) as conn:
                conn.request("OPTIONS", "/")
                conn.getresponse().read()
            return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise BenchError(f"{spec.label} did not answer within 30 s:\n{server.log_tail()}")


def rss_kib(pid: int, key: str = "VmRSS") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Samples VmRSS of ``pid`` every ``interval`` s in a thread; also resets and reads the
    kernel's high-water mark (VmHWM, via /proc/pid/clear_refs) so short peaks between two
    samples are not missed. ``peak_mib`` is the larger of both."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self.hwm_reset = False
        self.hwm_kib: int | None = None
        self.start_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_kib(self.pid)
            if value is not None:
                self.samples.append(value)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as refs:
                refs.write("5")  # reset VmHWM to the current RSS
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self.start_kib = rss_kib(self.pid) or 0
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        value = rss_kib(self.pid)
        if value is not None:
            self.samples.append(value)
        self.hwm_kib = rss_kib(self.pid, "VmHWM") if self.hwm_reset else None

    @property
    def peak_mib(self) -> float:
        peak = max(self.samples, default=0)
        if self.hwm_kib:
            peak = max(peak, self.hwm_kib)
        return peak / 1024


class Client:
    """One persistent HTTP/1.1 connection; counts it when the server asks to close it.

    Servers drop idle keep-alive connections (cheroot's default timeout is 10 s) while the
    bench is busy with another server, so a connection idle for more than
    ``IDLE_REOPEN`` seconds is reopened before the next request (not counted)."""

    IDLE_REOPEN = 3.0

    def __init__(self, port: int, timeout: float = 120.0) -> None:
        self.port = port
        self.timeout = timeout
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout, blocksize=IO_BLOCK)
        self.reconnects = 0
        self._last_used = time.monotonic()

    def close(self) -> None:
        self.conn.close()

    def _send(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> None:
        if time.monotonic() - self._last_used > self.IDLE_REOPEN:
            self.conn.close()  # http.client reconnects on the next request
        self.conn.request(method, path, body=body, headers=headers or {})

    def _response(self) -> http.client.HTTPResponse:
        response = self.conn.getresponse()
        if response.will_close:
            self.reconnects += 1
        return response

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        self._send(method, path, body, headers)
        response = self._response()
        data = response.read()
        self._last_used = time.monotonic()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def put_file(self, path: str, local: Path, size: int) -> int:
        with open(local, "rb") as body:
            status, _, _ = self.request("PUT", path, body=body, headers={"Content-Length": str(size)})
        return status

    def get_hashed(self, path: str, budget: Budget) -> tuple[int, int, str]:
        """GET streamed in 1 MiB reads; SHA-256 runs on a second thread (hashlib releases
        the GIL), so receiving and hashing overlap, as a real client would do."""
        self._send("GET", path)
        response = self._response()
        digest = hashlib.sha256()
        pieces: queue.Queue[bytes | None] = queue.Queue(maxsize=8)

        def hasher() -> None:
            while (piece := pieces.get()) is not None:
                digest.update(piece)

        thread = threading.Thread(target=hasher, daemon=True, name="sha256")
        thread.start()
        total = 0
        try:
            while piece := response.read(IO_BLOCK):
                total += len(piece)
                pieces.put(piece)
                if total % (64 * MiB) < IO_BLOCK:
                    budget.check(f"GET {path}")
        finally:
            pieces.put(None)
            thread.join(timeout=60)
            self._last_used = time.monotonic()
        return response.status, total, digest.hexdigest()

    def get_inline(self, path: str, budget: Budget, buffer: memoryview) -> tuple[int, int, str]:
        """GET read into ``buffer`` (no allocation per piece) and hashed on the calling
        thread; for many parallel clients, where the clients already overlap."""
        self._send("GET", path)
        response = self._response()
        digest = hashlib.sha256()
        total = 0
        try:
            while n := response.readinto(buffer):
                digest.update(buffer[:n])
                total += n
                if total % (64 * MiB) < len(buffer):
                    budget.check(f"GET {path}")
        finally:
            self._last_used = time.monotonic()
        return response.status, total, digest.hexdigest()


# ---------------------------------------------------------------------------------------
# Test data
# ---------------------------------------------------------------------------------------


@dataclass
class BigFile:
    path: Path
    size: int
    sha256: str


def make_big_file(path: Path, size_mib: int) -> BigFile:
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for _ in range(size_mib):
            piece = os.urandom(MiB)
            digest.update(piece)
            out.write(piece)
    return BigFile(path, size_mib * MiB, digest.hexdigest())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------
# Workloads
#
# All servers run at once (an idle server costs nothing) and every workload alternates
# between them round by round, so a burst of load from elsewhere on the machine hits all
# of them alike instead of whichever happened to be measured at that moment.
# ---------------------------------------------------------------------------------------


@dataclass
class Result:
    values: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Target:
    """One server under test, its persistent connection and its figures."""

    spec: ServerSpec
    server: Server
    client: Client
    res: Result = field(default_factory=Result)
    big: BigFile | None = None
    big_path: str = "/big-0.bin"
    put_rates: list[float] = field(default_factory=list)
    get_rates: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.spec.label


def expect(status: int, allowed: tuple[int, ...], what: str) -> None:
    if status not in allowed:
        raise BenchError(f"{what}: HTTP {status}, expected {allowed}")


def workload_big(targets: list[Target], files: list[BigFile], rounds: int, budget: Budget) -> None:
    """(1) PUT, (2) GET warm, (6) RSS. Each PUT round uploads different bytes (so davfs's
    chunk dedup cannot skip work) and is checked by an untimed GET (which also warms the
    caches); then ``rounds`` timed GETs of the last file."""
    for t in targets:
        t.res.values["rss_idle_mib"] = (rss_kib(t.server.pid) or 0) / 1024
    put_peaks: dict[str, list[float]] = {t.spec.key: [] for t in targets}
    get_peaks: dict[str, list[float]] = {t.spec.key: [] for t in targets}
    starts: dict[str, list[float]] = {t.spec.key: [] for t in targets}
    for i in range(rounds):
        big = files[i]
        for t in targets:
            budget.check("big PUT")
            os.sync()  # start every PUT with no dirty pages from the previous one
            with RssSampler(t.server.pid) as sampler:
                t0 = time.perf_counter()
                # A new name every round: overwriting one file in place is much faster on
                # ext4 than writing new blocks, which is all a chunk store ever does.
                status = t.client.put_file(f"/big-{i}.bin", big.path, big.size)
                elapsed = time.perf_counter() - t0
            expect(status, (200, 201, 204), f"{t.label}: PUT /big-{i}.bin")
            t.put_rates.append(big.size / elapsed / 1e6)
            put_peaks[t.spec.key].append(sampler.peak_mib)
            starts[t.spec.key].append(sampler.start_kib / 1024)
            with RssSampler(t.server.pid) as sampler:
                status, got, digest = t.client.get_hashed(f"/big-{i}.bin", budget)
            expect(status, (200,), f"{t.label}: GET /big-{i}.bin (check)")
            if got != big.size or digest != big.sha256:
                raise BenchError(f"{t.label}: GET after PUT round {i + 1} returned wrong bytes ({got} B)")
            get_peaks[t.spec.key].append(sampler.peak_mib)
            t.big = big
            t.big_path = f"/big-{i}.bin"
    for _ in range(rounds):
        for t in targets:
            budget.check("big GET")
            assert t.big is not None
            with RssSampler(t.server.pid) as sampler:
                t0 = time.perf_counter()
                status, got, digest = t.client.get_hashed(t.big_path, budget)
                elapsed = time.perf_counter() - t0
            expect(status, (200,), f"{t.label}: GET {t.big_path}")
            if got != t.big.size or digest != t.big.sha256:
                raise BenchError(f"{t.label}: GET {t.big_path} returned wrong bytes ({got} B)")
            t.get_rates.append(t.big.size / elapsed / 1e6)
            get_peaks[t.spec.key].append(sampler.peak_mib)
            starts[t.spec.key].append(sampler.start_kib / 1024)
    for t in targets:
        key = t.spec.key
        t.res.values["put_mbps"] = statistics.median(t.put_rates)
        t.res.values["get_mbps"] = statistics.median(t.get_rates)
        t.res.values["rss_put_peak_mib"] = max(put_peaks[key])
        t.res.values["rss_get_peak_mib"] = max(get_peaks[key])
        idle = t.res.values["rss_idle_mib"]
        t.res.values["rss_put_growth_mib"] = max(0.0, t.res.values["rss_put_peak_mib"] - idle)
        t.res.values["rss_get_growth_mib"] = max(0.0, t.res.values["rss_get_peak_mib"] - idle)
        t.res.values["rss_after_big_mib"] = (rss_kib(t.server.pid) or 0) / 1024
        t.res.notes.append(
            f"PUT MB/s per round {[round(x) for x in t.put_rates]}, "
            f"GET MB/s per round {[round(x) for x in t.get_rates]}"
        )
        t.res.notes.append(
            f"RSS MiB when each PUT / timed GET started {[round(x) for x in starts[key]]}; "
            f"peaks PUT {[round(x) for x in put_peaks[key]]}, GET {[round(x) for x in get_peaks[key]]}"
        )


def workload_ranges(targets: list[Target], count: int, rounds: int, budget: Budget, seed: int) -> None:
    """(3) ``count`` random 64 KiB range GETs (the same offsets for every server), each body
    checked against the local file slice; ``rounds`` passes, median pass reported."""
    rng = random.Random(seed)
    length = 64 * 1024
    per_target: dict[str, tuple[list[float], list[float]]] = {t.spec.key: ([], []) for t in targets}
    for _ in range(rounds):
        size = min(t.big.size for t in targets if t.big is not None)
        offsets = [rng.randrange(0, size - length + 1) for _ in range(count)]
        for t in targets:
            big = t.big
            assert big is not None
            with open(big.path, "rb") as local:
                expected = [sha(os.pread(local.fileno(), length, off)) for off in offsets]
            latencies: list[float] = []
            answers: list[tuple[int, str, str]] = []
            t_start = time.perf_counter()
            for off in offsets:
                budget.check("range GETs")
                t0 = time.perf_counter()
                status, headers, body = t.client.request(
                    "GET", t.big_path, headers={"Range": f"bytes={off}-{off + length - 1}"}
                )
                latencies.append(time.perf_counter() - t0)
                expect(status, (206,), f"{t.label}: range GET at {off}")
                answers.append((off, headers.get("content-range", ""), sha(body)))
            total = time.perf_counter() - t_start
            for (off, content_range, got), want in zip(answers, expected, strict=True):
                if got != want:
                    raise BenchError(
                        f"{t.label}: range at {off} returned wrong bytes (Content-Range {content_range!r})"
                    )
                if not content_range.startswith(f"bytes {off}-{off + length - 1}/"):
                    raise BenchError(f"{t.label}: range at {off}: bad Content-Range {content_range!r}")
            rates, medians = per_target[t.spec.key]
            rates.append(count / total)
            medians.append(statistics.median(latencies) * 1000)
    for t in targets:
        rates, medians = per_target[t.spec.key]
        t.res.values["range_rps"] = statistics.median(rates)
        t.res.values["range_median_ms"] = statistics.median(medians)


def _small_body(tag: str, i: int, size: int) -> bytes:
    """Unique bytes per file (so no server can deduplicate them), ``size`` long."""
    head = f"{tag} {i:06d} ".encode()[:size]
    return head + os.urandom(size - len(head))


def _parse_multistatus(body: bytes) -> dict[str, ET.Element]:
    root = ET.fromstring(body)
    out: dict[str, ET.Element] = {}
    for response in root.iter(f"{DAV}response"):
        href = response.findtext(f"{DAV}href") or ""
        out[href] = response
    return out


def _prop_text(response: ET.Element, name: str) -> str | None:
    for propstat in response.iter(f"{DAV}propstat"):
        status = propstat.findtext(f"{DAV}status") or ""
        if " 200 " not in status + " ":
            continue
        element = propstat.find(f"{DAV}prop/{DAV}{name}")
        if element is not None:
            return element.text or ""
    return None


def _check_listing(data: bytes, sizes: dict[str, int], label: str) -> None:
    responses = _parse_multistatus(data)
    if len(responses) != len(sizes) + 1:
        raise BenchError(f"{label}: {len(responses)} responses, expected {len(sizes) + 1}")
    by_name = {href.rstrip("/").rsplit("/", 1)[-1]: resp for href, resp in responses.items()}
    for name, size in sizes.items():
        resp = by_name.get(name)
        if resp is None:
            raise BenchError(f"{label}: {name} missing")
        length = _prop_text(resp, "getcontentlength")
        if length is None or int(length) != size:
            raise BenchError(f"{label}: {name} getcontentlength {length!r}, expected {size}")


def _put_folder(t: Target, names: list[tuple[int, str]], sizes: dict[str, int], budget: Budget) -> float:
    """PUT ``names`` into /folder/ with 8 threads (one persistent connection each)."""
    local = threading.local()
    clients: list[Client] = []
    lock = threading.Lock()

    def put_one(item: tuple[int, str]) -> None:
        i, name = item
        budget.check("folder PUTs")
        if not hasattr(local, "client"):
            local.client = Client(t.server.port)
            with lock:
                clients.append(local.client)
        status, _, _ = local.client.request(
            "PUT", f"/folder/{name}", body=_small_body("folder", i, sizes[name])
        )
        expect(status, (201, 204), f"{t.label}: PUT /folder/{name}")

    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(put_one, names))
    finally:
        for c in clients:
            c.close()
    return time.perf_counter() - t0


def workload_propfind(targets: list[Target], n_files: int, rounds: int, budget: Budget) -> None:
    """(4) PROPFIND Depth 1 on a folder of ``n_files`` small files, created beforehand by
    8 PUT threads (in batches of 1,000, alternating servers)."""
    sizes = {f"f{i:05d}.txt": 100 + (i % 50) for i in range(n_files)}
    items = list(enumerate(sizes))
    put_time = {t.spec.key: 0.0 for t in targets}
    for t in targets:
        status, _, _ = t.client.request("MKCOL", "/folder/")
        expect(status, (201,), f"{t.label}: MKCOL /folder/")
    for start in range(0, n_files, 1000):
        for t in targets:
            put_time[t.spec.key] += _put_folder(t, items[start : start + 1000], sizes, budget)
    for t in targets:
        t.res.values["folder_put_fps"] = n_files / put_time[t.spec.key]

    for label, body, key in (
        ("allprop", ALLPROP_BODY, "propfind_s"),
        ("named", NAMED_BODY, "propfind_named_s"),
    ):
        times: dict[str, list[float]] = {t.spec.key: [] for t in targets}
        for r in range(rounds):
            for t in targets:
                budget.check("PROPFIND")
                t0 = time.perf_counter()
                status, _, data = t.client.request(
                    "PROPFIND",
                    "/folder/",
                    body=body,
                    headers={"Depth": "1", "Content-Type": 'application/xml; charset="utf-8"'},
                )
                times[t.spec.key].append(time.perf_counter() - t0)
                expect(status, (207,), f"{t.label}: PROPFIND {label}")
                if r == 0:
                    t.res.values[key[:-2] + "_bytes"] = len(data)
                    _check_listing(data, sizes, f"{t.label}: PROPFIND {label}")
        for t in targets:
            t.res.values[key] = statistics.median(times[t.spec.key])


def workload_small(targets: list[Target], count: int, budget: Budget) -> None:
    """(5) sequential PUTs of 4 KiB files, then GETs of them, one connection per server,
    in batches of 100 alternating servers. Each PUT carries the file's modification
    time in ``X-OC-Mtime``, as rclone and ownCloud clients send it."""
    bodies = [_small_body("small", i, 4096) for i in range(count)]
    put_time = {t.spec.key: 0.0 for t in targets}
    get_time = {t.spec.key: 0.0 for t in targets}
    got: dict[str, list[str]] = {t.spec.key: [] for t in targets}
    for t in targets:
        status, _, _ = t.client.request("MKCOL", "/small/")
        expect(status, (201,), f"{t.label}: MKCOL /small/")
    for start in range(0, count, 100):
        for t in targets:
            t0 = time.perf_counter()
            for i in range(start, min(count, start + 100)):
                budget.check("small PUTs")
                status, _, _ = t.client.request(
                    "PUT",
                    f"/small/s{i:05d}.bin",
                    body=bodies[i],
                    headers={"X-OC-Mtime": str(1_600_000_000 + i)},
                )
                expect(status, (201, 204), f"{t.label}: PUT /small/s{i:05d}.bin")
            put_time[t.spec.key] += time.perf_counter() - t0
    for start in range(0, count, 100):
        for t in targets:
            t0 = time.perf_counter()
            for i in range(start, min(count, start + 100)):
                budget.check("small GETs")
                status, _, data = t.client.request("GET", f"/small/s{i:05d}.bin")
                expect(status, (200,), f"{t.label}: GET /small/s{i:05d}.bin")
                got[t.spec.key].append(sha(data))
            get_time[t.spec.key] += time.perf_counter() - t0
    for t in targets:
        for i, (digest, body) in enumerate(zip(got[t.spec.key], bodies, strict=True)):
            if digest != sha(body):
                raise BenchError(f"{t.label}: GET /small/s{i:05d}.bin returned wrong bytes")
        t.res.values["small_put_fps"] = count / put_time[t.spec.key]
        t.res.values["small_get_fps"] = count / get_time[t.spec.key]


def workload_parallel(
    targets: list[Target], clients: int, gets: int, big: BigFile, rounds: int, budget: Budget
) -> None:
    """(f) ``clients`` parallel clients (threads, one connection each) each GET the same
    file ``gets`` times; aggregate MB/s, median of ``rounds`` passes. The file is PUT and
    checked (untimed, which also warms it) first; every GET is checked."""
    path = "/parallel.bin"
    for t in targets:
        budget.check("parallel PUT")
        expect(t.client.put_file(path, big.path, big.size), (201, 204), f"{t.label}: PUT {path}")
        status, got, digest = t.client.get_hashed(path, budget)
        expect(status, (200,), f"{t.label}: GET {path} (check)")
        if got != big.size or digest != big.sha256:
            raise BenchError(f"{t.label}: GET {path} after PUT returned wrong bytes ({got} B)")
    rates: dict[str, list[float]] = {t.spec.key: [] for t in targets}
    peaks: dict[str, list[float]] = {t.spec.key: [] for t in targets}
    for _ in range(rounds):
        for t in targets:
            budget.check("parallel GETs")

            def one_client(i: int, t: Target = t) -> int:
                client = Client(t.server.port)
                buffer = memoryview(bytearray(IO_BLOCK))
                moved = 0
                try:
                    for n in range(gets):
                        status, got, digest = client.get_inline(path, budget, buffer)
                        expect(status, (200,), f"{t.label}: parallel GET {path} (client {i}, GET {n + 1})")
                        if got != big.size or digest != big.sha256:
                            raise BenchError(
                                f"{t.label}: parallel GET {path} (client {i}) returned wrong bytes ({got} B)"
                            )
                        moved += got
                finally:
                    client.close()
                return moved

            with ThreadPoolExecutor(max_workers=clients) as pool, RssSampler(t.server.pid) as sampler:
                t0 = time.perf_counter()
                moved = sum(pool.map(one_client, range(clients)))
                elapsed = time.perf_counter() - t0
            rates[t.spec.key].append(moved / elapsed / 1e6)
            peaks[t.spec.key].append(sampler.peak_mib)
    for t in targets:
        key = t.spec.key
        t.res.values["parallel_mbps"] = statistics.median(rates[key])
        t.res.values["rss_parallel_peak_mib"] = max(peaks[key])
        t.res.notes.append(
            f"{clients} parallel clients × {gets} GETs: MB/s per round {[round(x) for x in rates[key]]}, "
            f"RSS peak {max(peaks[key]):.0f} MiB"
        )


def workload_rss_large(t: Target, big: BigFile, budget: Budget) -> None:
    """(g, large) one PUT and one GET of a big file (2 GiB) on davfs only, to show that its
    peak RSS does not grow with the file size. Both checked; MB/s reported for reference."""
    idle = t.res.values["rss_idle_mib"]
    path = "/large.bin"
    budget.check("large PUT")
    os.sync()
    with RssSampler(t.server.pid) as sampler:
        t0 = time.perf_counter()
        status = t.client.put_file(path, big.path, big.size)
        elapsed = time.perf_counter() - t0
    expect(status, (201, 204), f"{t.label}: PUT {path}")
    t.res.values["large_put_mbps"] = big.size / elapsed / 1e6
    t.res.values["rss_large_put_peak_mib"] = sampler.peak_mib
    t.res.values["rss_large_put_growth_mib"] = max(0.0, sampler.peak_mib - idle)
    budget.check("large GET")
    with RssSampler(t.server.pid) as sampler:
        t0 = time.perf_counter()
        status, got, digest = t.client.get_hashed(path, budget)
        elapsed = time.perf_counter() - t0
    expect(status, (200,), f"{t.label}: GET {path}")
    if got != big.size or digest != big.sha256:
        raise BenchError(f"{t.label}: GET {path} returned wrong bytes ({got} B)")
    t.res.values["large_get_mbps"] = big.size / elapsed / 1e6
    t.res.values["rss_large_get_peak_mib"] = sampler.peak_mib
    t.res.values["rss_large_get_growth_mib"] = max(0.0, sampler.peak_mib - idle)
    t.res.notes.append(
        f"{big.size // MiB} MiB PUT {t.res.values['large_put_mbps']:.0f} MB/s, RSS peak "
        f"{t.res.values['rss_large_put_peak_mib']:.1f} MiB; GET {t.res.values['large_get_mbps']:.0f} MB/s, "
        f"RSS peak {t.res.values['rss_large_get_peak_mib']:.1f} MiB (idle {idle:.1f} MiB)"
    )
    status, _, _ = t.client.request("DELETE", path)  # untimed; frees the space
    expect(status, (200, 204), f"{t.label}: DELETE {path}")


EXPLORER_HEADERS = {"User-Agent": "Microsoft-WebDAV-MiniRedir/10.0.19045", "Translate": "f"}
EXPLORER_LOCKINFO = (
    b'<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
    b"</D:lockscope><D:locktype><D:write/></D:locktype><D:owner><D:href>DOMAIN\\user</D:href></D:owner>"
    b"</D:lockinfo>"
)
EXPLORER_STEPS = ("PROPFIND", "PUT0", "LOCK", "PROPPATCH1", "PUT", "PROPPATCH2", "UNLOCK")
"""Explorer's copy of one file (shared/notes/webdav-client-quirks.md, appendix): probe the
name, create it empty, lock it, set its Win32 times, write it, set its time, unlock."""


def _win32_proppatch(stamp: str) -> bytes:
    props = "".join(
        f"<Z:{name}>{stamp}</Z:{name}>"
        for name in ("Win32CreationTime", "Win32LastAccessTime", "Win32LastModifiedTime")
    )
    return (
        '<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:" '
        f'xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop>{props}'
        "<Z:Win32FileAttributes>00000020</Z:Win32FileAttributes></D:prop></D:set></D:propertyupdate>"
    ).encode()


def workload_explorer(targets: list[Target], count: int, budget: Budget) -> None:
    """(8) Explorer copying ``count`` files of 4 KiB into a folder, one after the other,
    each with its whole request sequence (:data:`EXPLORER_STEPS`), in batches of 100
    alternating servers; also the median time of each kind of request."""
    bodies = [_small_body("explorer", i, 4096) for i in range(count)]
    stamp = "Tue, 03 Jan 2023 04:05:06 GMT"
    patch = _win32_proppatch(stamp)
    xml = {**EXPLORER_HEADERS, "Content-Type": 'text/xml; charset="utf-8"'}
    elapsed = {t.spec.key: 0.0 for t in targets}
    steps: dict[str, dict[str, list[float]]] = {t.spec.key: {s: [] for s in EXPLORER_STEPS} for t in targets}
    for t in targets:
        status, _, _ = t.client.request("MKCOL", "/explorer/", headers=EXPLORER_HEADERS)
        expect(status, (201,), f"{t.label}: MKCOL /explorer/")

    def step(t: Target, name: str, method: str, path: str, ok: tuple[int, ...], **kw: Any) -> dict[str, str]:
        started = time.perf_counter()
        status, headers, _ = t.client.request(method, path, **kw)
        steps[t.spec.key][name].append(time.perf_counter() - started)
        expect(status, ok, f"{t.label}: {method} {path}")
        return headers

    for start in range(0, count, 100):
        for t in targets:
            t0 = time.perf_counter()
            for i in range(start, min(count, start + 100)):
                budget.check("Explorer copy")
                path = f"/explorer/e{i:05d}.txt"
                step(t, "PROPFIND", "PROPFIND", path, (404,), headers={**EXPLORER_HEADERS, "Depth": "0"})
                step(t, "PUT0", "PUT", path, (201,), body=b"", headers=EXPLORER_HEADERS)
                lock = step(
                    t,
                    "LOCK",
                    "LOCK",
                    path,
                    (200,),
                    body=EXPLORER_LOCKINFO,
                    headers={**xml, "Timeout": "Second-3600"},
                )
                token = lock["lock-token"]
                locked = {**xml, "If": f"({token})"}
                step(t, "PROPPATCH1", "PROPPATCH", path, (207,), body=patch, headers=locked)
                step(
                    t,
                    "PUT",
                    "PUT",
                    path,
                    (201, 204),
                    body=bodies[i],
                    headers={**EXPLORER_HEADERS, "If": f"({token})"},
                )
                step(t, "PROPPATCH2", "PROPPATCH", path, (207,), body=patch, headers=locked)
                step(t, "UNLOCK", "UNLOCK", path, (204,), headers={**EXPLORER_HEADERS, "Lock-Token": token})
            elapsed[t.spec.key] += time.perf_counter() - t0
    for t in targets:
        t.res.values["explorer_s"] = elapsed[t.spec.key]
        for name, times in steps[t.spec.key].items():
            t.res.values[f"explorer_{name.lower()}_ms"] = statistics.median(times) * 1000
        get_fps = t.res.values.get("small_get_fps")
        if get_fps:  # e's GETs of 4 KiB files, on the same connection
            slowest = max(t.res.values[f"explorer_{n}_ms"] for n in ("lock", "unlock", "proppatch1"))
            t.res.values["explorer_vs_get"] = slowest / (1000 / get_fps)
        for i in range(0, count, max(1, count // 20)):  # a sample is read back and compared
            status, _, data = t.client.request("GET", f"/explorer/e{i:05d}.txt")
            expect(status, (200,), f"{t.label}: GET /explorer/e{i:05d}.txt")
            if data != bodies[i]:
                raise BenchError(f"{t.label}: /explorer/e{i:05d}.txt holds wrong bytes")


def run_suite(
    targets: list[Target],
    files: list[BigFile],
    parallel_file: BigFile,
    large_file: BigFile | None,
    args: argparse.Namespace,
    budget: Budget,
) -> None:
    steps: list[tuple[str, Callable[[], None]]] = [
        ("a/b PUT/GET big file", lambda: workload_big(targets, files, args.rounds, budget)),
    ]
    davfs = [t for t in targets if t.spec.kind == "davfs"]
    if large_file is not None and davfs:
        large = large_file
        steps.append(
            (f"g PUT/GET {args.large_mib} MiB (davfs)", lambda: workload_rss_large(davfs[0], large, budget))
        )
    steps += [
        ("c range GETs", lambda: workload_ranges(targets, args.ranges, args.rounds, budget, args.seed)),
        (
            "d PROPFIND folder",
            lambda: workload_propfind(targets, args.folder_files, args.propfind_rounds, budget),
        ),
        ("e small files", lambda: workload_small(targets, args.small_files, budget)),
        ("h Explorer copy", lambda: workload_explorer(targets, args.small_files, budget)),
        (
            "f parallel GETs",
            lambda: workload_parallel(
                targets, args.parallel_clients, args.parallel_gets, parallel_file, args.rounds, budget
            ),
        ),
    ]
    for name, step in steps:
        t0 = time.perf_counter()
        step()
        print(
            f"  {name}: {time.perf_counter() - t0:.1f} s (load average {os.getloadavg()[0]:.2f})", flush=True
        )
        for t in targets:
            if t.server.process.poll() is not None:
                raise BenchError(f"{t.label} died during {name}:\n{t.server.log_tail()}")
    for t in targets:
        t.res.values["reconnects"] = t.client.reconnects
        if t.client.reconnects:
            t.res.notes.append(f"server closed the persistent connection {t.client.reconnects} times")


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    higher_better: bool
    fmt: str
    target: str = ""
    vs: tuple[tuple[str, float], ...] = ()  # met when ratio vs each of these servers ≥ this
    limit: float | None = None  # met when the davfs value ≤ this
    skipped: bool = False  # the workload was not run (e.g. --no-large)

    def met(self, results: dict[str, Result]) -> bool | None:
        """True/False when the row has a target and every figure it needs is there."""
        if not self.vs and self.limit is None:
            return None
        d = _value(results, "davfs", self.key)
        if d is None:
            return None
        checks: list[bool | None] = []
        for peer, minimum in self.vs:
            r = ratio(d, _value(results, peer, self.key), self.higher_better)
            checks.append(None if r is None else r >= minimum)
        if self.limit is not None:
            checks.append(d <= self.limit)
        if False in checks:
            return False
        return None if None in checks else True


def rows(args: argparse.Namespace) -> list[Row]:
    size = f"{args.size_mib} MiB"
    large = f"{args.large_mib} MiB"
    no_large = args.no_large
    rss_limit = args.rss_limit_mib
    rss_target = f"≤ {rss_limit:.0f} MiB"
    return [
        Row("get_mbps", f"a. GET {size} warm, MB/s", True, "{:.0f}", "≥ 1.0× rclone", (("rclone", 1.0),)),
        Row(
            "put_mbps",
            f"b. PUT {size}, MB/s ²",
            True,
            "{:.0f}",
            "≥ 1.0× rclone, ≥ 2× FS",
            (("rclone", 1.0), ("fs", 2.0)),
        ),
        Row(
            "range_rps",
            f"c. {args.ranges} random 64 KiB range GETs, req/s",
            True,
            "{:.0f}",
            "≥ 1.0× FS",
            (("fs", 1.0),),
        ),
        Row("range_median_ms", "   range GET median latency, ms", False, "{:.2f}", "≤ FS's", (("fs", 1.0),)),
        Row(
            "propfind_s",
            f"d. PROPFIND Depth 1 allprop, {args.folder_files:,} files, s",
            False,
            "{:.3f}",
            "≤ rclone's",
            (("rclone", 1.0),),
        ),
        Row("propfind_bytes", "   allprop response size, KB", False, "{:.0f}"),
        Row("propfind_named_s", f"   PROPFIND Depth 1, {len(NAMED_PROPS)} named props, s", False, "{:.3f}"),
        Row("propfind_named_bytes", "   named-props response size, KB", False, "{:.0f}"),
        Row("folder_put_fps", f"   {args.folder_files:,} folder PUTs, 8 threads, files/s ²", True, "{:.0f}"),
        Row(
            "small_put_fps",
            f"e. {args.small_files:,} sequential PUTs of 4 KiB, files/s ²",
            True,
            "{:.0f}",
            "≥ 1.0× rclone",
            (("rclone", 1.0),),
        ),
        Row(
            "small_get_fps",
            f"   then {args.small_files:,} sequential GETs of them, files/s",
            True,
            "{:.0f}",
            "≥ 1.0× rclone",
            (("rclone", 1.0),),
        ),
        Row(
            "explorer_s",
            f"h. Explorer copies {args.small_files:,} files of 4 KiB (7 requests each), s ²",
            False,
            "{:.1f}",
            "≤ rclone's",
            (("rclone", 1.0),),
        ),
        *(
            Row(f"explorer_{name.lower()}_ms", f"   median {label}, ms", False, "{:.2f}")
            for name, label in (
                ("LOCK", "LOCK"),
                ("UNLOCK", "UNLOCK"),
                ("PROPPATCH1", "PROPPATCH (Win32 times)"),
                ("PUT", "PUT of the content"),
            )
        ),
        Row(
            "explorer_vs_get",
            "   slowest of LOCK, UNLOCK, PROPPATCH ÷ a 4 KiB GET (e)",
            False,
            "{:.2f}",
            "≤ 1.5",
            limit=1.5,
        ),
        Row(
            "parallel_mbps",
            f"f. {args.parallel_clients} clients × {args.parallel_gets} GETs of "
            f"{args.parallel_size_mib} MiB, aggregate MB/s",
            True,
            "{:.0f}",
            "≥ 1.0× rclone",
            (("rclone", 1.0),),
        ),
        Row("rss_idle_mib", "   server RSS idle (after start-up), MiB", False, "{:.1f}"),
        Row(
            "rss_put_growth_mib",
            f"g. RSS peak above idle, {size} PUT, MiB ³",
            False,
            "{:.1f}",
            rss_target,
            limit=rss_limit,
        ),
        Row(
            "rss_get_growth_mib",
            f"g. RSS peak above idle, {size} GET, MiB ³",
            False,
            "{:.1f}",
            rss_target,
            limit=rss_limit,
        ),
        Row(
            "rss_large_put_growth_mib",
            f"g. RSS peak above idle, {large} PUT, MiB ³",
            False,
            "{:.1f}",
            rss_target,
            limit=rss_limit,
            skipped=no_large,
        ),
        Row(
            "rss_large_get_growth_mib",
            f"g. RSS peak above idle, {large} GET, MiB ³",
            False,
            "{:.1f}",
            rss_target,
            limit=rss_limit,
            skipped=no_large,
        ),
        Row("large_put_mbps", f"   PUT {large} (davfs only), MB/s ²", True, "{:.0f}", skipped=no_large),
        Row("large_get_mbps", f"   GET {large} (davfs only), MB/s", True, "{:.0f}", skipped=no_large),
        Row("rss_after_big_mib", f"   server RSS after the {size} transfers, MiB", False, "{:.1f}"),
    ]


def _value(results: dict[str, Result], server: str, key: str) -> float | None:
    res = results.get(server)
    if res is None or key not in res.values:
        return None
    value = res.values[key]
    return value / 1000 if key.endswith("_bytes") else value


def ratio(d: float | None, b: float | None, higher_better: bool) -> float | None:
    """>1 always means davfs is better."""
    if d is None or b is None or d == 0 or b == 0:
        return None
    return d / b if higher_better else b / d


def render(
    results: dict[str, Result], specs: list[ServerSpec], args: argparse.Namespace
) -> tuple[str, list[dict[str, Any]]]:
    peers = [s for s in specs if s.kind != "davfs"]
    has_davfs = any(s.kind == "davfs" for s in specs)
    header = ["workload"] + [s.label for s in specs]
    if has_davfs:
        header += [f"vs {s.short} ¹" for s in peers] + ["target", "met?"]
    table: list[list[str]] = []
    out_rows: list[dict[str, Any]] = []
    for row in rows(args):
        d = _value(results, "davfs", row.key)
        cells = [row.label]
        record: dict[str, Any] = {"key": row.key, "label": row.label.strip(" ²³"), "davfs": d}
        for s in specs:
            v = _value(results, s.key, row.key)
            cells.append("—" if v is None else row.fmt.format(v))
            record[s.key] = v
        if has_davfs:
            for s in peers:
                r = ratio(d, _value(results, s.key, row.key), row.higher_better)
                cells.append("—" if r is None else f"{r:.2f}×")
                record[f"ratio_vs_{s.key}"] = r
        met = row.met(results)
        status = ""
        if row.target:
            status = "skipped" if row.skipped else ("—" if met is None else ("MET" if met else "NOT MET"))
        if has_davfs:
            cells += [row.target, status]
        record.update(target=row.target or None, met=met, skipped=row.skipped)
        table.append(cells)
        out_rows.append(record)
    widths = [max(len(r[i]) for r in [header] + table) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for cells in table:
        lines.append(
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 or i >= len(cells) - 2 * has_davfs else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )
    lines += [
        "",
        "¹ ratio > 1 means davfs is better: davfs/peer for throughputs (MB/s, req/s, files/s), peer/davfs",
        "  for times, latencies, sizes and RSS. FS = wsgidav FilesystemProvider (default block_size 8192);",
        "  FS 1MiB = the same with block_size 1 MiB (informative); rclone = rclone serve webdav",
        "  --vfs-cache-mode off. Targets compare ratios measured in this run. Absolute numbers are noisy.",
        "  Throughputs include client-side SHA-256 checks of every body. Servers run side by side and",
        f"  alternate round by round; a, b, c, f: median of {args.rounds} rounds; d: median of "
        f"{args.propfind_rounds}.",
        "² davfs makes every upload durable (fsync of the chunk and its folder, SQLite commit with",
        "  synchronous=FULL); wsgidav FS and rclone make no fsync/fdatasync call at all (strace), so these",
        "  compare a durable write with a page-cache write.",
        "³ peak = max(VmRSS sampled every 20 ms, VmHWM); minus the server's idle RSS after start-up.",
        f"  The {args.large_mib} MiB PUT/GET runs on davfs only"
        + (" and was skipped in this run (--no-large/--quick)." if args.no_large else "."),
        "h. Telegram store on the fake Telegram: measured by bench/telegram_bench.py (not run here).",
    ]
    return "\n".join(lines), out_rows


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark davfs against wsgidav's FilesystemProvider and rclone serve webdav "
        "on loopback."
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="fast sanity run: 64 MiB file, 1,000-file folder, 200 small PUTs, 1 GET per parallel "
        "client, no 2 GiB part",
    )
    p.add_argument("--size-mib", type=int, help="big file size in MiB (default 512, quick 64)")
    p.add_argument("--folder-files", type=int, help="files in the PROPFIND folder (default 5000, quick 1000)")
    p.add_argument("--small-files", type=int, help="sequential 4 KiB PUTs/GETs (default 1000, quick 200)")
    p.add_argument("--ranges", type=int, default=200, help="random 64 KiB range GETs (default 200)")
    p.add_argument("--parallel-clients", type=int, default=16, help="f: parallel clients (default 16)")
    p.add_argument("--parallel-gets", type=int, help="f: GETs per parallel client (default 4, quick 1)")
    p.add_argument(
        "--parallel-size-mib", type=int, default=16, help="f: file each parallel client GETs (default 16)"
    )
    p.add_argument(
        "--large-mib", type=int, default=2048, help="g: size of the davfs-only RSS PUT/GET (default 2048)"
    )
    p.add_argument("--no-large", action="store_true", help="skip the 2 GiB part of g (--quick skips it)")
    p.add_argument(
        "--rss-limit-mib", type=float, default=64, help="g: target for peak RSS above idle (default 64)"
    )
    p.add_argument("--rclone", default=shutil.which("rclone"), help="rclone binary (default: from PATH)")
    p.add_argument("--no-rclone", action="store_true", help="leave out rclone serve webdav")
    p.add_argument(
        "--rounds", type=int, default=3, help="rounds of big PUT and GET, median reported (default 3)"
    )
    p.add_argument(
        "--propfind-rounds", type=int, default=5, help="PROPFIND rounds, median reported (default 5)"
    )
    p.add_argument(
        "--no-fs-1mib", action="store_true", help="skip the second baseline (wsgidav FS, block_size 1 MiB)"
    )
    p.add_argument(
        "--only",
        choices=["davfs", "fs", "rclone", "fs1m"],
        action="append",
        help="run only these servers (repeatable; targets need davfs, fs and rclone)",
    )
    p.add_argument("--seed", type=int, default=1234, help="seed for range offsets")
    p.add_argument(
        "--time-limit", type=float, default=1800, help="abort the whole run after this many seconds"
    )
    p.add_argument("--tmp", help="parent folder for the temporary work folder (default: system tmp)")
    p.add_argument(
        "--keep-tmp", action="store_true", help="keep the work folder (server logs, data) for inspection"
    )
    p.add_argument("--json", metavar="PATH", help="also write all figures as JSON")
    p.add_argument("--serve-wsgidav-fs", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_wsgidav_fs:
        return args
    args.size_mib = args.size_mib or (64 if args.quick else 512)
    args.folder_files = args.folder_files or (1000 if args.quick else 5000)
    args.small_files = args.small_files or (200 if args.quick else 1000)
    args.parallel_gets = args.parallel_gets or (1 if args.quick else 4)
    args.no_large = args.no_large or args.quick
    names: tuple[str, ...] = ("size_mib", "folder_files", "small_files", "ranges", "rounds")
    names += ("propfind_rounds", "parallel_clients", "parallel_gets", "parallel_size_mib", "large_mib")
    for name in names:
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.parallel_clients > 256 or args.parallel_gets > 1000:
        p.error("--parallel-clients is at most 256 and --parallel-gets at most 1000")
    if args.rounds > 10:
        p.error("--rounds is at most 10 (each round needs its own big file on disk)")
    if args.ranges > 100_000 or args.folder_files > 100_000 or args.small_files > 100_000:
        p.error("counts above 100,000 are not supported")
    return args


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_wsgidav_fs:
        root, port, *rest = args.serve_wsgidav_fs
        serve_wsgidav_fs(root, int(port), int(rest[0]) if rest else None)
        return 0

    specs = [ServerSpec("davfs", "davfs", "davfs"), ServerSpec("fs", "wsgidav FS", "fs", short="FS")]
    if not args.no_rclone:
        specs.append(ServerSpec("rclone", "rclone", "rclone", exe=args.rclone, short="rclone"))
    if not args.no_fs_1mib:
        specs.append(ServerSpec("fs1m", "wsgidav FS 1MiB", "fs", MiB, short="FS 1MiB"))
    if args.only:
        specs = [s for s in specs if s.key in args.only]
    if any(s.kind == "rclone" for s in specs) and not (args.rclone and os.access(args.rclone, os.X_OK)):
        print(
            "bench: rclone not found (apt-get install rclone, or --rclone PATH); "
            "leave it out with --no-rclone",
            file=sys.stderr,
        )
        return 1
    if not any(s.kind == "davfs" for s in specs):
        args.no_large = True
    versions = {"rclone": rclone_version(args.rclone) if any(s.kind == "rclone" for s in specs) else None}
    rclone_text = versions["rclone"] or "not run"
    budget = Budget(args.time_limit)
    work = Path(tempfile.mkdtemp(prefix="davfs-bench-", dir=args.tmp))
    results: dict[str, Result] = {}
    started = time.monotonic()
    import cheroot
    import wsgidav

    print(
        f"davfs bench: {args.size_mib} MiB file, {args.folder_files} folder files, "
        f"{args.small_files} small files, {args.ranges} ranges; Python {platform.python_version()}, "
        f"wsgidav {wsgidav.__version__}, cheroot {cheroot.__version__}, rclone {rclone_text}, "
        f"{os.cpu_count()} CPUs; "
        f"work dir {work}",
        flush=True,
    )
    servers: list[Server] = []
    targets: list[Target] = []
    load_start = os.getloadavg()[0]
    cpu_start = process_cpu()
    try:
        with terminate_on_sigterm():
            n_files = args.rounds  # one distinct file per PUT round: dedup must not help davfs
            free = shutil.disk_usage(work).free
            need = args.size_mib * MiB * n_files * (1 + len(specs))  # local copies + each server's
            need += args.parallel_size_mib * MiB * (1 + len(specs)) + 200 * MiB
            if not args.no_large:
                need += 2 * args.large_mib * MiB  # the local file and davfs's copy
            if free < need:
                raise BenchError(f"need about {need // MiB} MiB free in {work}, have {free // MiB} MiB")
            t0 = time.perf_counter()
            files = [make_big_file(work / f"big{i}.bin", args.size_mib) for i in range(n_files)]
            parallel_file = make_big_file(work / "parallel.bin", args.parallel_size_mib)
            large_file = None if args.no_large else make_big_file(work / "large.bin", args.large_mib)
            print(
                f"  generated {n_files} × {args.size_mib} MiB"
                + ("" if large_file is None else f" + {args.large_mib} MiB")
                + f" of random data in {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
            for spec in specs:
                server = start_server(spec, work, budget)
                servers.append(server)
                targets.append(Target(spec, server, Client(server.port)))
                print(f"  {spec.label}: pid {server.pid}, http://{HOST}:{server.port}/", flush=True)
            time.sleep(0.5)  # let start-up settle before the idle RSS sample
            run_suite(targets, files, parallel_file, large_file, args, budget)
            results = {t.spec.key: t.res for t in targets}
    except (Exception, KeyboardInterrupt) as exc:
        if not isinstance(exc, (BenchError, KeyboardInterrupt)):
            traceback.print_exc()
        print(f"\nbench FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        for server in servers:
            print(f"--- {server.spec.label} log tail:\n{server.log_tail()}", file=sys.stderr)
        return 1
    finally:
        for t in targets:
            t.client.close()
        for server in servers:
            server.stop()
        if args.keep_tmp:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    table, out_rows = render(results, specs, args)
    print()
    print(table)
    for spec in specs:
        for note in results[spec.key].notes:
            print(f"  note ({spec.label}): {note}")
    target_rows = [r for r in out_rows if r["target"] and not r["skipped"]]
    met = sum(1 for r in target_rows if r["met"])
    load_end = os.getloadavg()[0]
    wall = time.monotonic() - started
    cpu = os.times()  # the servers were stopped and reaped: their CPU time is in children_*
    ours = cpu.user + cpu.system + cpu.children_user + cpu.children_system
    others, kernel, busiest = other_cpu(cpu_start, process_cpu())
    print(
        f"\ntargets met: {met}/{len(target_rows)}; total bench time {time.monotonic() - started:.0f} s; "
        f"1-min load average {load_start:.2f} at start, {load_end:.2f} at end ({os.cpu_count()} CPUs)"
    )
    for r in target_rows:
        if not r["met"]:
            state = "NOT MET" if r["met"] is False else "not measured"
            print(f"  {state}: {r['label']} (target {r['target']})")
    print(
        f"  CPU time during the run: bench and its servers {ours:.0f} s, other processes {others:.0f} s "
        f"({100 * others / wall:.0f}% of one CPU), kernel threads {kernel:.0f} s (mostly writeback)"
    )
    if others > 0.10 * wall:
        top = ", ".join(f"{name} {used:.0f} s" for used, name in busiest)
        print(f"  warning: other processes were busy on this machine ({top}); figures are noisier than usual")
    if args.json:
        payload = {
            "args": {k: v for k, v in vars(args).items() if k != "serve_wsgidav_fs"},
            "targets_met": met,
            "targets": len(target_rows),
            "load_average": {"start": load_start, "end": load_end},
            "cpu_seconds": {
                "bench_and_servers": ours,
                "other_processes": others,
                "kernel_threads": kernel,
                "busiest_others": [{"process": name, "seconds": used} for used, name in busiest],
                "wall": wall,
            },
            "environment": {
                "python": platform.python_version(),
                "wsgidav": wsgidav.__version__,
                "cheroot": cheroot.__version__,
                "rclone": versions["rclone"],
                "rclone_command": (
                    " ".join(rclone_command("rclone", Path("ROOT"), 0)).replace(":0", ":PORT")
                    if versions["rclone"]
                    else None
                ),
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
            },
            "servers": {
                s.key: {"label": s.label, "values": results[s.key].values, "notes": results[s.key].notes}
                for s in specs
            },
            "rows": out_rows,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
