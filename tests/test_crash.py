"""Crash tests: SIGKILL the server at random moments during a stream of writes.

Why: a drive that holds people's files must survive its process dying at the worst
moment (OOM killer, power button, ``kill -9``), not only at the convenient moments
``test_invariants`` picks. Each round starts the server on the same data folder, lets
a few clients write for a random short time (PUTs of new files and overwrites, 0 bytes
to a few MiB over 1 MiB chunks, MKCOL, MOVE, COPY, DELETE, PROPPATCH) and SIGKILLs the
server while requests are in flight. Then:

- ``davfs fsck --verify`` on what the dead server left behind must be clean;
- after a restart, every path holds what some explanation allows: a request that was
  answered is committed, so only its result is acceptable; a request the kill cut off
  may or may not have happened, so the state before it and the state after it both are
  (and, for requests that are one transaction, all of its paths on the same side);
- PROPFIND and GET agree on every path.

The observed state is the "before" of the next round. At the end, ``davfs gc --grace 0``
must leave fsck clean and no data chunk in the store that the catalog does not reference.

Each client owns one folder (``/t0``, ``/t1`` …) and sends one request at a time, so at a
kill each client has at most one request whose fate is unknown, and the acceptable
states are exact. Contents are often shared between files and clients, so chunk
deduplication and reference counts are exercised by concurrent writers.

``DAVFS_CRASH_SEED`` and ``DAVFS_CRASH_ROUNDS`` override the seed and the number of rounds.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest
import requests

from davfs.catalog import Catalog
from davfs.stores.local import LocalStore
from tests.conftest import ServerProcess, free_port

MiB = 1024 * 1024
SEED = int(os.environ.get("DAVFS_CRASH_SEED", "20240611"))
ROUNDS = int(os.environ.get("DAVFS_CRASH_ROUNDS", "12"))
CLIENTS = 3
DEADLINE = 45.0
"""Seconds after which no new round starts (the final gc and checks follow), so the
whole test stays around a minute even on a slow machine."""
TIMEOUT = (5, 30)  # (connect, read) seconds for every HTTP request
CLI_TIMEOUT = 120  # seconds for a `davfs fsck` / `davfs gc` subprocess
ENV = {"DAVFS_CHUNK_SIZE": "1MiB"}
TAG = "{urn:x-davfs-crash}tag"
PROPFIND_BODY = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:propfind xmlns:D="DAV:" xmlns:T="urn:x-davfs-crash"><D:prop>'
    "<D:resourcetype/><D:getcontentlength/><D:getetag/><T:tag/>"
    "</D:prop></D:propfind>"
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the model: what each path holds ---------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A folder, or a file by its content's SHA-256; with the value of the test's dead
    property (None: not set)."""

    is_dir: bool
    sha: str | None = None
    size: int = 0
    tag: str | None = None

    def __str__(self) -> str:
        tag = f", tag={self.tag}" if self.tag is not None else ""
        if self.is_dir:
            return f"folder{tag}"
        assert self.sha is not None
        return f"file {self.size} B sha {self.sha[:12]}{tag}"


Tree = dict[str, Entry]
"""path ("/t0/d3/f7.bin", no trailing slash) → entry, for the paths that exist."""


def show(entry: Entry | None) -> str:
    return "absent" if entry is None else str(entry)


def below(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


@dataclass
class Op:
    """One request and what it does to its client's folder if it happens."""

    method: str
    path: str
    expect: int
    before: Tree
    after: Tree
    atomic: bool = True
    """One catalog transaction: all its paths change together or none does."""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Callable[[], Iterator[bytes]] = b""
    note: str = ""

    def touched(self) -> set[str]:
        return {p for p in self.before.keys() | self.after.keys() if self.before.get(p) != self.after.get(p)}

    def __str__(self) -> str:
        return f"{self.method} {self.path}{' ' + self.note if self.note else ''}"


@dataclass
class Contents:
    """Bodies to upload: half of them from a shared pool, so the same chunks end up in
    many files of several clients at once."""

    pool: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def size(rng: random.Random) -> int:
        kind = rng.random()
        if kind < 0.06:
            return 0
        if kind < 0.3:
            return rng.randint(1, 4096)
        if kind < 0.55:
            return rng.randint(4097, MiB)
        if kind < 0.65:
            return rng.choice([MiB - 1, MiB, MiB + 1, 2 * MiB])
        return rng.randint(MiB + 2, 4 * MiB)

    def pick(self, rng: random.Random) -> bytes:
        with self.lock:
            if self.pool and rng.random() < 0.5:
                return rng.choice(self.pool)
        data = rng.randbytes(self.size(rng))
        with self.lock:
            if len(self.pool) < 16:
                self.pool.append(data)
        return data


def slowly(data: bytes, piece: int = 256 * 1024) -> Callable[[], Iterator[bytes]]:
    """A chunked body that trickles in, so kills land between stored chunks and the
    commit more often."""

    def pieces() -> Iterator[bytes]:
        for offset in range(0, len(data), piece):
            time.sleep(0.003)
            yield data[offset : offset + piece]

    return pieces


class Client:
    """One client's folder, its committed state, and the request stream it sends."""

    def __init__(self, index: int, seed: int, contents: Contents) -> None:
        self.root = f"/t{index}"
        self.rng = random.Random(seed)
        self.contents = contents
        self.tree: Tree = {self.root: Entry(True)}
        self.names = 0
        # per round:
        self.in_flight: Op | None = None
        self.cut_by: str = ""
        self.problem: str = ""
        self.done = 0

    def fresh(self, prefix: str, suffix: str = "") -> str:
        self.names += 1
        return f"{prefix}{self.names}{suffix}"

    def plan(self, url: str) -> Op:
        """The next request, chosen from what the folder holds now."""
        rng, tree = self.rng, self.tree
        files = sorted(p for p, e in tree.items() if not e.is_dir)
        dirs = sorted(p for p, e in tree.items() if e.is_dir)
        movable = sorted(p for p in tree if p != self.root)
        crowded = len(tree) > 30
        weights = {
            "put_new": 3 if crowded else 7,
            "put_over": 4 if files else 0,
            "mkcol": 0 if crowded else 2,
            "move": 3 if movable else 0,
            "move_over": 1 if len(files) >= 2 else 0,
            "copy": (1 if crowded else 2) if movable else 0,
            "copy_over": 1 if len(files) >= 2 else 0,
            "delete": (8 if crowded else 2) if movable else 0,
            "proppatch": 2,
        }
        kind = rng.choices(list(weights), list(weights.values()))[0]
        after = dict(tree)

        if kind in ("put_new", "put_over"):
            if kind == "put_new":
                path = f"{rng.choice(dirs)}/{self.fresh('f', '.bin')}"
                tag = None
            else:
                path = rng.choice(files)
                tag = tree[path].tag  # an overwrite keeps the file's dead properties
            data = self.contents.pick(rng)
            after[path] = Entry(False, sha(data), len(data), tag)
            trickle = len(data) > MiB and rng.random() < 0.3
            return Op(
                "PUT",
                path,
                201 if kind == "put_new" else 204,
                tree,
                after,
                body=slowly(data) if trickle else data,
                note=f"({len(data)} B{', chunked, slow' if trickle else ''})",
            )
        if kind == "mkcol":
            shallow = [d for d in dirs if d.count("/") < 4] or [self.root]
            path = f"{rng.choice(shallow)}/{self.fresh('d')}"
            after[path] = Entry(True)
            return Op("MKCOL", path, 201, tree, after)
        if kind == "delete":
            path = rng.choice(movable)
            for p in list(after):
                if below(p, path):
                    del after[p]
            return Op("DELETE", path, 204, tree, after)
        if kind == "proppatch":
            path = rng.choice(sorted(tree))
            value = f"v{rng.randrange(10**6)}"
            after[path] = Entry(tree[path].is_dir, tree[path].sha, tree[path].size, value)
            body = (
                '<?xml version="1.0" encoding="utf-8"?>'
                '<D:propertyupdate xmlns:D="DAV:" xmlns:T="urn:x-davfs-crash">'
                f"<D:set><D:prop><T:tag>{value}</T:tag></D:prop></D:set></D:propertyupdate>"
            )
            return Op(
                "PROPPATCH",
                path,
                207,
                tree,
                after,
                headers={"Content-Type": "application/xml"},
                body=body.encode(),
                note=f"(tag={value})",
            )

        # MOVE / COPY
        overwrite = kind.endswith("_over")
        is_move = kind.startswith("move")
        if overwrite:
            source, dest = rng.sample(files, 2)
        else:
            source = rng.choice(movable)
            targets = [d for d in dirs if not below(d, source)]
            dest = f"{rng.choice(targets)}/{self.fresh('m' if is_move else 'c', '' if tree[source].is_dir else '.bin')}"
        if overwrite:
            del after[dest]
        for p in sorted(tree):
            if below(p, source):
                after[dest + p[len(source) :]] = tree[p]
                if is_move:
                    del after[p]
        headers = {"Destination": url.rstrip("/") + quote(dest), "Overwrite": "T" if overwrite else "F"}
        if not is_move and tree[source].is_dir:
            headers["Depth"] = "infinity"
        return Op(
            "MOVE" if is_move else "COPY",
            source,
            204 if overwrite else 201,
            tree,
            after,
            # wsgidav copies a folder member by member: each copy is whole, the tree may be partial.
            atomic=is_move or not tree[source].is_dir,
            headers=headers,
            note=f"→ {dest}{' (Overwrite: T)' if overwrite else ''}",
        )

    def run(self, url: str, stop: threading.Event) -> None:
        """Send requests until ``stop`` or until the server is gone; a request whose
        answer never came stays in ``in_flight``."""
        try:
            with requests.Session() as session:
                while not stop.is_set():
                    op = self.plan(url)
                    self.in_flight = op
                    body = op.body() if callable(op.body) else op.body
                    try:
                        response = session.request(
                            op.method,
                            url.rstrip("/") + quote(op.path),
                            headers=op.headers,
                            data=body,
                            timeout=TIMEOUT,
                        )
                    except requests.RequestException as exc:
                        self.cut_by = type(exc).__name__
                        return
                    if response.status_code != op.expect or (
                        op.method == "PROPPATCH" and not proppatch_succeeded(response.content)
                    ):
                        self.problem = f"{op} answered {response.status_code}, expected {op.expect}: {response.text[:300]}"
                        return
                    self.tree, self.in_flight = op.after, None
                    self.done += 1
        except BaseException as exc:  # a bug in the test itself; reported by the round
            self.problem = f"client {self.root} crashed: {exc!r}"


def proppatch_succeeded(body: bytes) -> bool:
    statuses = [s.text or "" for s in ET.fromstring(body).iter("{DAV:}status")]
    return bool(statuses) and all(" 200 " in s for s in statuses)


# --- observing the drive ----------------------------------------------------------------


@dataclass
class Listed:
    is_dir: bool
    size: int | None
    etag: str | None
    tag: str | None


def propfind(session: requests.Session, url: str, path: str, depth: str) -> dict[str, Listed]:
    """path → what PROPFIND says about it (the folder itself included)."""
    response = session.request(
        "PROPFIND",
        url.rstrip("/") + quote(path if path == "/" else path + "/"),
        headers={"Depth": depth, "Content-Type": "application/xml"},
        data=PROPFIND_BODY.encode(),
        timeout=TIMEOUT,
    )
    assert response.status_code == 207, f"PROPFIND {path}: {response.status_code} {response.text[:300]}"
    found: dict[str, Listed] = {}
    for item in ET.fromstring(response.content).iter("{DAV:}response"):
        href = unquote(urlsplit(item.findtext("{DAV:}href") or "").path)
        member = href.rstrip("/") or "/"
        props: dict[str, ET.Element] = {}
        for propstat in item.iter("{DAV:}propstat"):
            if " 200 " in (propstat.findtext("{DAV:}status") or ""):
                for prop in propstat.iter("{DAV:}prop"):
                    props.update((child.tag, child) for child in prop)
        kind = props.get("{DAV:}resourcetype")
        length = props.get("{DAV:}getcontentlength")
        etag = props.get("{DAV:}getetag")
        tag = props.get(TAG)
        found[member] = Listed(
            is_dir=kind is not None and kind.find("{DAV:}collection") is not None,
            size=None if length is None else int(length.text or "0"),
            etag=None if etag is None else etag.text,
            tag=None if tag is None else (tag.text or ""),
        )
    return found


def observe(url: str, expected_paths: set[str]) -> tuple[Tree, list[str]]:
    """The whole drive as PROPFIND Depth 1 folder by folder and GET of every file show
    it, and where they disagree (size, ETag, a listed file GET cannot find, a path GET
    finds that no listing shows)."""
    tree: Tree = {}
    problems: list[str] = []
    with requests.Session() as session:
        folders = ["/"]
        while folders:
            folder = folders.pop()
            for path, listed in propfind(session, url, folder, "1").items():
                if path == folder:
                    continue
                if listed.is_dir:
                    tree[path] = Entry(True, tag=listed.tag)
                    folders.append(path)
                    continue
                got = session.get(url.rstrip("/") + quote(path), timeout=TIMEOUT)
                if got.status_code != 200:
                    problems.append(
                        f"{path}: listed as a file of {listed.size} B, GET answers {got.status_code}"
                    )
                    continue
                if listed.size != len(got.content):
                    problems.append(
                        f"{path}: PROPFIND says {listed.size} B, GET returned {len(got.content)} B"
                    )
                if listed.etag != got.headers.get("ETag"):
                    problems.append(
                        f"{path}: PROPFIND etag {listed.etag}, GET ETag {got.headers.get('ETag')}"
                    )
                tree[path] = Entry(False, sha(got.content), len(got.content), listed.tag)
        for path in sorted(expected_paths - tree.keys()):
            got = session.get(url.rstrip("/") + quote(path), timeout=TIMEOUT)
            if got.status_code != 404:
                problems.append(f"{path}: not in any listing, GET answers {got.status_code}")
    return tree, problems


def judge(clients: list[Client], observed: Tree) -> list[str]:
    """Every path holds an acceptable state; a cut-off request that is one transaction
    happened wholly or not at all."""
    problems: list[str] = []
    owned = [p for p in observed if not any(below(p, c.root) for c in clients)]
    problems += [f"{p}: {show(observed[p])} appeared outside every client's folder" for p in owned]
    for client in clients:
        op = client.in_flight
        paths = {p for p in observed if below(p, client.root)} | client.tree.keys()
        if op is not None:
            paths |= op.after.keys()
        for path in sorted(paths):
            got = observed.get(path)
            acceptable = {client.tree.get(path)}
            if op is not None:
                acceptable.add(op.after.get(path))
            if got not in acceptable:
                why = (
                    f"(cut off: {op})"
                    if op is not None and path in op.touched()
                    else "(no request in flight changes it)"
                )
                if op is not None and path in op.touched() and "Overwrite: T" in op.note and got is None:
                    why += "; see test_sigkill_inside_an_overwriting_move_or_copy"
                problems.append(
                    f"{path}: got {show(got)}, expected {' or '.join(sorted(map(show, acceptable)))} {why}"
                )
        if op is not None and op.atomic:
            sides = {
                p: ("old" if observed.get(p) == op.before.get(p) else "new")
                for p in op.touched()
                if observed.get(p) in (op.before.get(p), op.after.get(p))
            }
            if len(set(sides.values())) > 1:
                problems.append(f"{op} half happened: {sides}")
    return problems


# --- the data folder, as the CLI sees it ---------------------------------------------------


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``davfs -d DATA ARGS`` in a fresh process, as an operator would run it after a crash."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAVFS_")}
    return subprocess.run(
        [sys.executable, "-m", "davfs.cli", "-c", os.devnull, "-d", str(data_dir), *args],
        cwd=data_dir.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


def fsck_problems(data_dir: Path) -> str:
    """'' if ``davfs fsck --verify`` is clean, else its output."""
    result = cli(data_dir, "fsck", "--verify")
    if result.returncode == 0:
        return ""
    return f"davfs fsck --verify exited {result.returncode}:\n{result.stdout}{result.stderr}"


def unreferenced_data_chunks(data_dir: Path) -> set[str]:
    """Data chunks in the store that no catalog row references (leaks gc should have
    collected)."""
    stored = {loc for loc, meta in LocalStore(data_dir / "store").iter_chunks() if meta.kind == "data"}
    catalog = Catalog(f"sqlite:///{data_dir}/catalog.sqlite")
    try:
        referenced = {chunk.locator for chunk, _ in catalog.fsck.referenced_chunks()}
    finally:
        catalog.close()
    return stored - referenced


# --- the test ------------------------------------------------------------------------------


@dataclass
class RoundLog:
    number: int
    seconds: float
    completed: int
    in_flight: list[str]
    outcomes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        results = self.outcomes or ["not checked"] * len(self.in_flight)
        cut = "; ".join(f"{op} → {result}" for op, result in zip(self.in_flight, results, strict=True))
        cut = cut or "nothing"
        return f"round {self.number}: {self.completed} requests answered in {self.seconds:.2f} s, cut: {cut}"


def outcome(op: Op, observed: Tree) -> str:
    """Whether a cut-off request turned out to have happened."""
    sides = {observed.get(p) == op.after.get(p) for p in op.touched()}
    if not sides:
        return "changes nothing"
    return {frozenset({True}): "happened", frozenset({False}): "did not happen"}.get(
        frozenset(sides), "partly happened"
    )


def check_drive(url: str, clients: list[Client], context: str) -> list[str]:
    """Compare the restarted drive with the model, then make what it holds the model.
    Returns the outcome of each request the kill cut off."""
    expected = set().union(*(c.tree.keys() for c in clients))
    for client in clients:
        if client.in_flight is not None:
            expected |= client.in_flight.after.keys()
    observed, problems = observe(url, expected)
    problems += judge(clients, observed)
    assert not problems, f"{context}\n" + "\n".join(problems)
    outcomes = [outcome(c.in_flight, observed) for c in clients if c.in_flight is not None]
    for client in clients:
        client.tree = {p: e for p, e in observed.items() if below(p, client.root)}
        client.in_flight, client.cut_by, client.problem, client.done = None, "", "", 0
    return outcomes


@pytest.mark.slow
def test_sigkill_during_a_stream_of_writes(server_process, tmp_path: Path) -> None:
    started = time.monotonic()
    rng = random.Random(SEED)
    data_dir = tmp_path / "data"
    contents = Contents()
    clients = [Client(i, rng.randrange(2**32), contents) for i in range(CLIENTS)]
    history: list[RoundLog] = []

    proc = server_process(data_dir, env=ENV)
    for client in clients:
        response = requests.request("MKCOL", proc.url + client.root.lstrip("/"), timeout=TIMEOUT)
        assert response.status_code == 201, response.status_code

    for number in range(1, ROUNDS + 1):
        if number > 1 and time.monotonic() - started > DEADLINE:
            break
        context = f"seed {SEED}, round {number}"
        stop = threading.Event()
        threads = [
            threading.Thread(target=c.run, args=(proc.url, stop), name=f"crash-{c.root}", daemon=True)
            for c in clients
        ]
        round_started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.05, 1.5))
        # Kill while something is in flight (nearly always already true).
        deadline = time.monotonic() + 1
        while not any(c.in_flight for c in clients) and time.monotonic() < deadline:
            time.sleep(0.001)
        stop.set()
        proc.kill()
        seconds = time.monotonic() - round_started
        for thread in threads:
            thread.join(timeout=40)
        hung = [t.name for t in threads if t.is_alive()]
        assert not hung, f"{context}: client threads did not stop after the kill: {hung}"
        assert proc.process.returncode == -9
        problems = [c.problem for c in clients if c.problem]
        assert not problems, (
            f"{context}: before the kill:\n" + "\n".join(problems) + "\n" + proc.log()[-3000:]
        )
        log = RoundLog(
            number,
            seconds,
            sum(c.done for c in clients),
            [f"{c.in_flight} [{c.cut_by}]" for c in clients if c.in_flight is not None],
        )
        history.append(log)
        context = f"seed {SEED}, {log}"

        report = fsck_problems(data_dir)
        assert not report, f"{context}\nafter the kill: {report}"

        proc = server_process(data_dir, env=ENV)
        log.outcomes = check_drive(proc.url, clients, f"{context}\nafter the restart:")

    proc.stop()
    # What the last server left staged goes to the store first: a chunk a killed shipper
    # stored but never recorded is the store's copy once shipped again, not a leak.
    result = cli(data_dir, "ship")
    assert result.returncode == 0, f"davfs ship exited {result.returncode}: {result.stdout}{result.stderr}"
    result = cli(data_dir, "gc", "--grace", "0")
    assert result.returncode == 0, (
        f"davfs gc --grace 0 exited {result.returncode}: {result.stdout}{result.stderr}"
    )
    report = fsck_problems(data_dir)
    assert not report, f"seed {SEED}, after gc: {report}"
    leaked = unreferenced_data_chunks(data_dir)
    assert not leaked, (
        f"seed {SEED}: after gc --grace 0 the store still holds {len(leaked)} unreferenced chunks"
    )

    # The drive still serves what the last check saw, after gc.
    proc = server_process(data_dir, env=ENV)
    check_drive(proc.url, clients, f"seed {SEED}, after gc:")

    cut = sum(len(r.in_flight) for r in history)
    assert cut > 0, "no kill ever cut a request: the test tested nothing"
    happened = sum(r.outcomes.count("happened") for r in history)
    print(
        f"\ncrash test, seed {SEED}: {len(history)} rounds, {len(history)} kills, "
        f"{sum(r.completed for r in history)} requests answered, {cut} cut off "
        f"({happened} of them happened), {time.monotonic() - started:.1f} s"
    )
    for entry in history:
        print(f"  {entry}")


# --- a kill between the two steps of an overwriting MOVE / COPY ---------------------------

PAUSED_SERVER = """
import os, sys, time
from pathlib import Path
from davfs.catalog.tree import Tree
from davfs.cli import main

marker = Path(os.environ["CRASH_MARKER"])
name = os.environ["CRASH_PAUSE_AFTER_DELETING"]
delete = Tree.delete

def delete_then_pause(self, node, *, recursive):
    delete(self, node, recursive=recursive)
    if node.name == name:  # committed: a SIGKILL now keeps the deletion
        marker.write_text(name)
        time.sleep(120)

Tree.delete = delete_then_pause
sys.exit(main(["serve"]))
"""


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


def spawn_paused_server(data_dir: Path, name: str, marker: Path) -> ServerProcess:
    """Like ``conftest.spawn_server``, but once a catalog transaction has deleted a node
    called ``name`` the request writes ``marker`` and waits, so a SIGKILL lands exactly
    after that transaction and before whatever the request would do next."""
    port = free_port()
    log_path = data_dir.parent / f"paused-server-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAVFS_")}
    env.update(
        ENV,
        DAVFS_PORT=str(port),
        DAVFS_DATA_DIR=str(data_dir),
        DAVFS_CONFIG=os.devnull,
        DAVFS_ANONYMOUS="true",
        CRASH_PAUSE_AFTER_DELETING=name,
        CRASH_MARKER=str(marker),
    )
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", PAUSED_SERVER],
            cwd=data_dir.parent,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    proc = ServerProcess(process, f"http://127.0.0.1:{port}/", data_dir, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"paused server exited: {proc.log()}")
        try:
            requests.request("OPTIONS", proc.url, timeout=2)
            return proc
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("paused server did not start within 30 s")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["MOVE", "COPY"])
def test_sigkill_inside_an_overwriting_move_or_copy(server_process, tmp_path: Path, method: str) -> None:
    """The "safe save" of editors and davfs2 (PUT a temporary file, MOVE it over the
    original) cut by a kill: the original must hold its old or its new content.

    The random rounds rarely hit this window, so it is forced: the server pauses right
    after a catalog transaction deleted the destination ``doc.bin`` and is SIGKILLed
    there. If the request never deletes the destination on its own (it replaces it in
    the same transaction as the move or copy), it is simply answered and the kill comes
    after. (Found: wsgidav's ``_copy_or_move`` deletes an existing destination through
    ``DavfsFile.delete`` and only then calls ``move_recursive`` / ``copy_move_single``,
    although ``Tree.move`` and ``Tree.copy_node`` can replace it themselves.)"""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    marker = tmp_path / "paused"
    old, new = random.Random(1).randbytes(MiB + 5), random.Random(2).randbytes(2 * MiB + 7)
    proc = spawn_paused_server(data_dir, "doc.bin", marker)
    answer = b""
    try:
        for path, data in (("doc.bin", old), ("doc.bin.tmp", new)):
            assert requests.put(proc.url + path, data=data, timeout=TIMEOUT).status_code == 201
        request = (
            f"{method} /doc.bin.tmp HTTP/1.1\r\nHost: {urlsplit(proc.url).netloc}\r\n"
            f"Destination: {proc.url}doc.bin\r\nOverwrite: T\r\nContent-Length: 0\r\n\r\n"
        )
        with socket.create_connection(address(proc.url), timeout=0.05) as sock:
            sock.sendall(request.encode())
            deadline = time.monotonic() + TIMEOUT[1]
            while not marker.exists() and b"\r\n\r\n" not in answer:
                assert time.monotonic() < deadline, (
                    f"{method} neither paused nor answered: {proc.log()[-2000:]}"
                )
                try:
                    answer += sock.recv(4096)
                except TimeoutError:
                    pass
            proc.kill()
    finally:
        proc.kill()
    where = (
        "right after the transaction that deleted the destination"
        if marker.exists()
        else f"after the answer {answer.splitlines()[0]!r}"
    )

    report = fsck_problems(data_dir)
    assert not report, f"after a kill inside {method} ({where}): {report}"
    proc = server_process(data_dir, env=ENV)
    doc = requests.get(proc.url + "doc.bin", timeout=TIMEOUT)
    tmp = requests.get(proc.url + "doc.bin.tmp", timeout=TIMEOUT)
    got = "absent" if doc.status_code == 404 else f"{len(doc.content)} B sha {sha(doc.content)[:12]}"
    assert doc.status_code == 200 and doc.content in (old, new), (
        f"{method} /doc.bin.tmp → /doc.bin (Overwrite: T) SIGKILLed {where}: /doc.bin is {got} "
        f"(GET {doc.status_code}), expected its old version ({len(old)} B sha {sha(old)[:12]}) or its new one "
        f"({len(new)} B sha {sha(new)[:12]}); /doc.bin.tmp answers GET {tmp.status_code}. wsgidav deletes an "
        f"existing destination in one transaction and {'moves' if method == 'MOVE' else 'copies'} in another."
    )
    if method == "MOVE":
        assert tmp.status_code == (404 if doc.content == new else 200), "MOVE half happened"
    else:
        assert tmp.status_code == 200 and tmp.content == new
