"""Fault matrix: every store operation × fault, during every client operation, with gc
running concurrently.

The promise under test (README, "Invariants" and "Checking and cleaning up"): whatever
the chunk store does wrong, no committed file ever has a missing or wrong chunk, no
client ever receives a wrong byte, and after ``davfs gc`` no orphan remains.

Each cell sets up a known drive with no faults, arms one fault on one store operation
(``FaultyStore``), runs one client request over HTTP while a gc thread collects with no
grace period, disarms, and then checks the same invariants:

1. every file a PROPFIND walk lists is exactly its old or its new content (all old if
   the request failed, all new if it succeeded), read back over HTTP and compared by
   SHA-256, and no file is missing or extra;
2. what the client received during the fault is right: a 200/206 body is a correct
   prefix of the content, whole unless the connection was cut; errors are clean
   statuses without tracebacks;
3. ``fsck --verify`` is clean, except for damage at rest a corrupting ``put`` caused,
   which it must report by path (and which a reader must refuse to serve);
4. after one more gc, the store's data chunks are exactly the chunks the catalog
   references: no orphan, nothing referenced missing;
5. the contents gc deleted during the cell, and the cell's own upload, can be uploaded
   again (201, and they read back): no chunk stays blocked for uploads, and a re-upload
   of content damaged at rest repairs it.

Which store operations a request reaches decides the cells: PUT stores chunks (``put``;
``exists`` when the store is not content-addressed and the content is known, as on
Telegram), GET reads them (``get``), COPY, MOVE and DELETE touch only the catalog, and gc
lists (``iter_chunks``) and deletes (``delete``). gc runs in every cell, so its faults
are crossed with every client operation; a cell whose fault could not happen is left
out, and every cell asserts that its fault really was injected. ``put`` faults hit a
3-chunk upload's first or last chunk, ``get`` faults a download's first block (a clean
error status) or a later one (a cut response): 67 cells in all
(:func:`test_the_matrix_covers_every_fault_and_operation` checks the count).

The matrix runs without write-back (``write_back: false``), where a client request meets
the store itself; with write-back, store faults meet the shipper instead, which
``tests/test_write_back.py`` covers.

The starting drive (:data:`DRIVE`) has a 3-chunk file, small files in two folders,
garbage for gc to delete during the cell (:data:`GARBAGE`), and a file that was deleted
and collected before (:data:`COLLECTED`: its chunks' tombstones are still in the
catalog), which PUT new uploads again. It is built once over HTTP and copied per cell.

:func:`test_random_faults_under_concurrent_load` adds ~5% random faults on every store
operation (no ``C``) under four concurrent clients and a gc loop, with a fixed seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import random
import shutil
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import cheroot.wsgi
import pytest
import requests
from sqlalchemy import select

from davfs.catalog.schema import chunks
from davfs.errors import DavfsError
from davfs.fsck import fsck
from davfs.gc import collect_garbage
from davfs.stores.faulty import FAULTS, FaultPlan, FaultyStore
from davfs.stores.local import LocalStore
from tests.conftest import MiB, RunningServer, davfs_config, launch

TIMEOUT = 20.0
"""Seconds any one request may take; a server that neither answers nor cuts fails."""
KiB = 1024
BIG = 2 * MiB + MiB // 2
"""3 chunks of 1 MiB (the last half full), one block each."""
FAULT_TIMEOUT = 0.05
"""How long an injected timeout takes: short, but long enough to overlap other work."""

MATRIX_FAULTS = ("E", "T", "C", "L")
"""The faults of the requirement: error, timeout, corrupt, lost confirmation."""
CLIENT_OPS = ("PUT_new", "PUT_overwrite", "GET_full", "GET_range", "COPY", "MOVE", "DELETE")
WHAT_REACHES: dict[str, tuple[str, ...]] = {
    "put": ("PUT_new", "PUT_overwrite"),
    "exists": ("PUT_new", "PUT_overwrite"),
    "get": ("GET_full", "GET_range"),
    "delete": CLIENT_OPS,  # gc's, and gc runs during every request
    "iter_chunks": CLIENT_OPS,
}
"""Store operation → the client operations during which it is called."""
POSITIONS: dict[str, tuple[int, ...]] = {"put": (1, 3), "get": (1, 2)}
"""Which call of the operation fails: a 3-chunk PUT's first or last chunk; a GET's
first block (before the response starts) or a later one (mid-body). Others: the first."""


@dataclass(frozen=True)
class Cell:
    """One matrix cell: the ``call``-th call of ``op`` fails with ``fault`` during ``client``."""

    op: str
    fault: str
    call: int
    client: str

    @property
    def schedule(self) -> str:
        return "." * (self.call - 1) + self.fault

    def plan(self) -> FaultPlan:
        """The plan that fails exactly this call (an injected timeout takes FAULT_TIMEOUT)."""

        def on(op: str) -> str:
            return self.schedule if op == self.op else ""

        return FaultPlan(
            put=on("put"),
            get=on("get"),
            delete=on("delete"),
            exists=on("exists"),
            iter_chunks=on("iter_chunks"),
            timeout_after=FAULT_TIMEOUT,
        )

    @property
    def id(self) -> str:
        return f"{self.op}:{self.schedule}-{self.client}"


def build_matrix() -> list[Cell]:
    """Every fault FaultyStore accepts on every operation, during every client operation
    that reaches that operation."""
    return [
        Cell(op, fault, call, client)
        for op, accepted in FAULTS.items()
        for fault in MATRIX_FAULTS
        if fault in accepted
        for call in POSITIONS.get(op, (1,))
        for client in WHAT_REACHES[op]
    ]


MATRIX = build_matrix()


# --- helpers ------------------------------------------------------------------------


def payload(size: int, seed: int) -> bytes:
    """Deterministic and distinct per seed, so no two contents share a chunk by accident."""
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass
class Fetched:
    """A GET as the client saw it, including a body cut short."""

    status: int
    body: bytes
    complete: bool
    """The whole announced body arrived (False: the connection was cut)."""


def fetch(server: RunningServer, path: str, byte_range: tuple[int, int] | None = None) -> Fetched:
    """GET with http.client, keeping whatever arrived before a cut (status 0: the
    connection closed before a response head). A server that stalls raises TimeoutError."""
    parts = urlsplit(server.url)
    assert parts.hostname is not None and parts.port is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
    try:
        headers = {"Range": f"bytes={byte_range[0]}-{byte_range[1] - 1}"} if byte_range else {}
        try:
            connection.request("GET", quote(path), headers=headers)
            response = connection.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            return Fetched(0, b"", False)
        announced = response.getheader("Content-Length")
        try:
            body = response.read()
        except http.client.IncompleteRead as cut:
            return Fetched(response.status, cut.partial, False)
        except ConnectionResetError:
            return Fetched(response.status, b"", False)
        complete = announced is None or len(body) == int(announced)
        return Fetched(response.status, body, complete)
    finally:
        connection.close()


def delivery_problems(got: Fetched, expected: bytes, what: str) -> list[str]:
    """Invariant 2 for one GET: never a wrong byte, never a traceback."""
    if got.status in (200, 206):
        if not expected.startswith(got.body):
            return [f"{what}: WRONG BYTES delivered ({len(got.body)} bytes, sha {sha(got.body)})"]
        if got.complete and got.body != expected:
            return [f"{what}: complete {got.status} body of {len(got.body)} bytes, expected {len(expected)}"]
        return []
    if b"Traceback" in got.body:
        return [f"{what}: {got.status} with a traceback in the body: {got.body[:300]!r}"]
    return []


def response_problems(response: requests.Response, what: str) -> list[str]:
    if b"Traceback" in response.content:
        return [f"{what}: {response.status_code} with a traceback: {response.content[:300]!r}"]
    return []


def propfind_files(server: RunningServer, folder: str = "/") -> dict[str, int]:
    """{path: size} of every file below ``folder``, walking folders with PROPFIND Depth 1
    (Depth infinity is off by default) — the tree as a client sees it."""
    response = requests.request(
        "PROPFIND", server.url.rstrip("/") + quote(folder), headers={"Depth": "1"}, timeout=TIMEOUT
    )
    assert response.status_code == 207, (folder, response.status_code, response.text[:300])
    files: dict[str, int] = {}
    for entry in ET.fromstring(response.content).findall("{DAV:}response"):
        href = entry.findtext("{DAV:}href") or ""
        path = unquote(urlsplit(href).path)
        if path.rstrip("/") == folder.rstrip("/"):
            continue
        if entry.find(".//{DAV:}resourcetype/{DAV:}collection") is not None:
            files.update(propfind_files(server, path.rstrip("/") + "/"))
        else:
            files[path] = int(entry.findtext(".//{DAV:}getcontentlength") or -1)
    return files


def url(server: RunningServer, path: str) -> str:
    return server.url.rstrip("/") + quote(path)


def put(server: RunningServer, path: str, data: bytes) -> requests.Response:
    return requests.put(url(server, path), data=data, timeout=TIMEOUT)


def chunk_problems(server: RunningServer) -> list[str]:
    """Invariant 4: the store's data chunks are exactly those the catalog references
    (manifests, which the catalog also references, are not gc's)."""
    store = server.app.drive.store
    assert isinstance(store, FaultyStore)
    kinds = {locator: meta.kind for locator, meta in store.inner.iter_chunks()}
    data = {locator for locator, kind in kinds.items() if kind == "data"}
    referenced = {chunk.locator for chunk, _ in server.app.drive.catalog.fsck.referenced_chunks()}
    problems = []
    if data - referenced:
        problems.append(f"orphans left after gc: {catalog_rows(server, data - referenced)}")
    if referenced - kinds.keys():
        problems.append(f"referenced chunks missing: {sorted(h[:16] for h in referenced - kinds.keys())}")
    return problems


def catalog_rows(server: RunningServer, locators: set[str]) -> list[str]:
    """What the catalog says about chunks it should not have left in the store."""
    described = []
    with server.app.drive.catalog.db.engine.connect() as conn:
        for locator in sorted(locators):
            row = conn.execute(select(chunks).where(chunks.c.locator == locator)).first()
            if row is None:
                state = "no catalog row"
            elif row.deleted_epoch is not None:
                state = f"catalog row is a tombstone (deleted in gc epoch {row.deleted_epoch})"
            elif row.deleting is not None:
                state = f"catalog row still marked for deletion {time.time() - row.deleting:.1f} s ago"
            else:
                state = f"catalog row refcount {row.refcount}, unreferenced_since {row.unreferenced_since}"
            described.append(f"{locator[:16]} ({state})")
    return described


class GcLoop:
    """gc with no grace period, again and again on a thread of its own, as a server
    under load would run it (a failing run is what a store fault may cause; the next
    one tries again)."""

    def __init__(self, server: RunningServer, *, pause: float = 0.0) -> None:
        self._server = server
        self._pause = pause
        self._stop = threading.Event()
        self.runs = 0
        self.store_errors: list[str] = []
        self.crashes: list[str] = []
        self._thread = threading.Thread(target=self._run, name="fault-matrix-gc", daemon=True)

    def __enter__(self) -> GcLoop:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                collect_garbage(self._server.app.drive.catalog, self._server.app.drive.store, grace=0)
            except DavfsError as exc:  # a store fault gc could not ride out; next run
                self.store_errors.append(str(exc))
            except Exception as exc:  # noqa: BLE001 - anything else is a bug to report
                self.crashes.append(f"{type(exc).__name__}: {exc}")
            self.runs += 1
            self._stop.wait(self._pause)

    def stop(self, *, min_runs: int = 2) -> None:
        """Stop once at least ``min_runs`` runs finished (the first may have met the fault)."""
        deadline = time.monotonic() + TIMEOUT
        while self.runs < min_runs and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.005)
        self._stop.set()
        self._thread.join(timeout=TIMEOUT)
        assert not self._thread.is_alive(), "gc is stuck"

    def __exit__(self, *exc_info: object) -> None:
        if self._thread.is_alive():
            self.stop(min_runs=0)


# --- the drive every cell starts from -----------------------------------------------

DRIVE: dict[str, bytes] = {
    "/small.txt": payload(4 * KiB, 1),
    "/big.bin": payload(BIG, 2),
    "/dir/nested.txt": payload(3 * KiB, 3),
    "/junk.txt": payload(3 * KiB + 5, 4),
}
"""The files every cell starts with."""
GARBAGE = (payload(3 * KiB + 1, 5), payload(3 * KiB + 2, 6))
"""Contents the drive held and gc is about to delete: /junk.txt's replaced version and
the deleted /gone.txt. They give gc's ``delete`` work in every cell."""
COLLECTED = payload(BIG, 7)
"""A file the drive held, deleted and collected before the cell (gc keeps tombstones of
its chunks for a week). PUT new uploads it again, as users do with files they deleted;
PUT overwrite uploads content the drive never saw."""
FRESH = payload(BIG, 8)


def populate(server: RunningServer) -> None:
    """Build the starting drive over HTTP, with no faults."""
    assert requests.request("MKCOL", url(server, "/dir/"), timeout=TIMEOUT).status_code == 201
    assert put(server, "/collected.bin", COLLECTED).status_code == 201
    assert requests.delete(url(server, "/collected.bin"), timeout=TIMEOUT).status_code == 204
    assert len(collect_garbage(server.app.drive.catalog, server.app.drive.store, grace=0).deleted) == 3
    assert put(server, "/junk.txt", GARBAGE[0]).status_code == 201
    assert put(server, "/gone.txt", GARBAGE[1]).status_code == 201
    for path, data in DRIVE.items():
        assert put(server, path, data).status_code in (201, 204), path
    assert requests.delete(url(server, "/gone.txt"), timeout=TIMEOUT).status_code == 204


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The starting drive's data folder (catalog, store, locks), built once; each cell
    serves a copy, which is much faster than uploading it again (fsyncs) 67 times."""
    data_dir = tmp_path_factory.mktemp("fault-matrix-template") / "data"
    running = launch(davfs_config(data_dir, chunk_size="1MiB", gc_interval=0, write_back=False, trash_days=0))
    try:
        populate(running)
    finally:
        running.stop()
    return data_dir


@dataclass
class Outcome:
    """What a client request did: its response (or GET as seen), and the drive it leaves
    if it succeeded."""

    status: int
    after: dict[str, bytes]
    problems: list[str] = field(default_factory=list)
    put_path: str | None = None
    put_body: bytes | None = None
    fetched: Fetched | None = None


GET_RANGE = (MiB, BIG)
"""The last two chunks, from a block boundary: the first block is fetched before the
response starts, the second while its body is sent. (A range whose first read spans two
blocks fetches both before the first byte goes out; the random test has those.)"""


def run_client(server: RunningServer, cell: Cell) -> Outcome:
    """The cell's one request, over HTTP."""
    before = DRIVE
    after = dict(before)
    if cell.client.startswith("PUT"):
        # Content the drive holds when the cell tests the store's `exists` (an upload
        # reuses a stored chunk), otherwise collected or never seen content.
        path = "/new.bin" if cell.client == "PUT_new" else "/small.txt"
        if cell.op == "exists":
            body = before["/big.bin"]
        else:
            body = COLLECTED if cell.client == "PUT_new" else FRESH
        response = put(server, path, body)
        after[path] = body
        outcome = Outcome(response.status_code, after, put_path=path, put_body=body)
        outcome.problems += response_problems(response, f"PUT {path}")
        return outcome
    if cell.client.startswith("GET"):
        whole = before["/big.bin"]
        byte_range = GET_RANGE if cell.client == "GET_range" else None
        got = fetch(server, "/big.bin", byte_range)
        expected = whole[GET_RANGE[0] : GET_RANGE[1]] if byte_range else whole
        outcome = Outcome(got.status, after, fetched=got)
        outcome.problems += delivery_problems(got, expected, f"GET /big.bin {byte_range or ''}")
        return outcome
    if cell.client == "COPY":
        response = requests.request(
            "COPY",
            url(server, "/big.bin"),
            headers={"Destination": url(server, "/copy.bin")},
            timeout=TIMEOUT,
        )
        after["/copy.bin"] = before["/big.bin"]
    elif cell.client == "MOVE":
        response = requests.request(
            "MOVE",
            url(server, "/small.txt"),
            headers={"Destination": url(server, "/dir/nested.txt"), "Overwrite": "T"},
            timeout=TIMEOUT,
        )
        after["/dir/nested.txt"] = after.pop("/small.txt")
    else:
        response = requests.delete(url(server, "/big.bin"), timeout=TIMEOUT)
        del after["/big.bin"]
    outcome = Outcome(response.status_code, after)
    outcome.problems += response_problems(response, cell.client)
    return outcome


EXPECTED_ERROR = {"E": 502, "T": 503, "L": 503, "C": 500}
"""The clean status a request the fault makes fail must answer (C: a damaged first block)."""
SUCCESS = {
    "PUT_new": 201,
    "PUT_overwrite": 204,
    "GET_full": 200,
    "GET_range": 206,
    "COPY": 201,
    "MOVE": 204,
    "DELETE": 204,
}


def status_problems(cell: Cell, outcome: Outcome) -> list[str]:
    """Invariant 2: the answer is one the fault explains, and clean."""
    ok = SUCCESS[cell.client]
    allowed: set[int]
    if cell.op in ("delete", "iter_chunks"):
        # gc's faults never reach the request; a PUT may still lose the race gc is
        # allowed to win (it collected a chunk the upload had just stored: 503).
        allowed = {ok, 503} if cell.client.startswith("PUT") else {ok}
    elif cell.op == "get":
        allowed = {EXPECTED_ERROR[cell.fault]} if cell.call == 1 else {ok}
    elif cell.fault == "C":
        allowed = {ok, 503}  # the damage is at rest: the upload commits (or loses to gc)
    else:
        allowed = {EXPECTED_ERROR[cell.fault]}
    problems = []
    if outcome.status not in allowed:
        problems.append(f"{cell.client} answered {outcome.status}, expected one of {sorted(allowed)}")
    if cell.op == "get" and cell.call > 1 and outcome.fetched is not None and outcome.fetched.complete:
        problems.append("a GET whose later block failed was not cut short")
    return problems


# --- the matrix ------------------------------------------------------------------------


@pytest.fixture
def faulty_server(
    start_server: Callable[..., RunningServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., RunningServer]:
    """A server on FaultyStore(LocalStore) with 1 MiB chunks and no gc schedule of its
    own; ``content_addressed=False`` presents the store as Telegram's are (an upload
    asks ``exists`` before reusing a chunk the catalog knows instead of storing it).
    cheroot notices a stop on its next select timeout (0.5 s); with a server per cell
    that is half a minute of waiting, so its loop ticks faster here."""
    monkeypatch.setattr(cheroot.wsgi.Server, "expiration_interval", 0.02)

    def start(*, content_addressed: bool = True, copy_of: Path | None = None) -> RunningServer:
        data_dir = tmp_path / "data"
        if copy_of is not None:
            shutil.copytree(copy_of, data_dir)
        store = FaultyStore(LocalStore(data_dir / "store"))
        if not content_addressed:
            store.properties = dataclasses.replace(store.properties, content_addressed=False)
        # Deletions go straight to gc here (no trash): every cell gives gc work to fail.
        return start_server(
            store=store, data_dir=data_dir, chunk_size="1MiB", gc_interval=0, write_back=False, trash_days=0
        )

    return start


def test_the_matrix_covers_every_fault_and_operation() -> None:
    """The matrix is what the requirement asks for; its size is reported here."""
    pairs = {(c.op, c.fault) for c in MATRIX}
    assert pairs == {(op, f) for op, accepted in FAULTS.items() for f in MATRIX_FAULTS if f in accepted}
    assert {c.client for c in MATRIX} == set(CLIENT_OPS)
    assert len({c.id for c in MATRIX}) == len(MATRIX)
    print(f"fault matrix: {len(MATRIX)} cells over {len(pairs)} store operation × fault pairs")
    assert len(MATRIX) == 67


@pytest.mark.parametrize("cell", MATRIX, ids=[c.id for c in MATRIX])
def test_fault_matrix_cell(cell: Cell, faulty_server: Callable[..., RunningServer], template: Path) -> None:
    """One fault during one request while gc runs: the five invariants hold after it."""
    server = faulty_server(content_addressed=cell.op != "exists", copy_of=template)
    store = server.app.drive.store
    assert isinstance(store, FaultyStore)
    assert propfind_files(server) == {path: len(data) for path, data in DRIVE.items()}

    store.arm(cell.plan())
    with GcLoop(server) as gc:
        outcome = run_client(server, cell)
        gc.stop()
    injected = store.injected[cell.op, cell.fault]
    store.arm(FaultPlan())

    assert injected == 1, f"the {cell.fault} fault on {cell.op} call {cell.call} never happened"
    problems = list(outcome.problems) + status_problems(cell, outcome)
    problems += [f"gc crashed: {crash}" for crash in gc.crashes]
    succeeded = 200 <= outcome.status < 300 and not cell.client.startswith("GET")
    expected = outcome.after if succeeded else DRIVE
    damaged_at_rest = cell.op == "put" and cell.fault == "C" and succeeded

    # 1. Every file is its old or new content, all of one or the other.
    listed = propfind_files(server)
    if listed.keys() != expected.keys():
        problems.append(
            f"files after a {outcome.status}: listed {sorted(listed)}, expected {sorted(expected)}"
        )
    for path, data in expected.items():
        if listed.get(path, len(data)) != len(data):
            problems.append(f"{path}: listed with {listed[path]} bytes, expected {len(data)}")
        got = fetch(server, path)
        problems += delivery_problems(got, data, f"GET {path} after the fault")
        if damaged_at_rest and path == outcome.put_path:
            if got.status == 200 and got.complete:
                problems.append(f"{path}: damaged at rest, yet served whole")
        elif not (got.status == 200 and got.complete and got.body == data):
            problems.append(
                f"{path}: GET gave {got.status} with {len(got.body)} bytes (sha {sha(got.body)}), "
                f"expected {len(data)} bytes (sha {sha(data)})"
            )

    # 3. fsck --verify: clean, or exactly the damage a corrupting put left, by path.
    report = fsck(server.app.drive.catalog, store.inner, verify=True)
    if damaged_at_rest:
        named = {path for paths in report.damaged.values() for path in paths}
        if report.catalog or report.missing or named != {outcome.put_path}:
            problems.append(f"fsck should name only {outcome.put_path} damaged: {report.lines()}")
    elif not report.clean:
        problems.append(f"fsck --verify: {report.lines()}")

    # 4. After one more gc, the store holds exactly what the catalog references.
    collect_garbage(server.app.drive.catalog, store, grace=0)
    problems += chunk_problems(server)

    # 5. What gc deleted, and the cell's upload, can be stored again (and a re-upload of
    # content damaged at rest replaces the damaged copy: the store keeps one per hash).
    contents = list(GARBAGE)
    if outcome.put_body is not None:
        contents.append(outcome.put_body)
    for index, data in enumerate(contents):
        response = put(server, f"/again-{index}.bin", data)
        if response.status_code != 201:
            problems.append(
                f"re-upload of content {sha(data)} ({len(data)} bytes) refused: "
                f"{response.status_code} {response.text[:200]!r}"
            )
        elif (got := fetch(server, f"/again-{index}.bin")).body != data:
            problems.append(
                f"re-upload of content {sha(data)} reads back {got.status}, {len(got.body)} bytes"
            )
    if damaged_at_rest:
        healed = fsck(server.app.drive.catalog, store.inner, verify=True)
        if not healed.clean:
            problems.append(f"the re-upload did not repair the damage: {healed.lines()}")

    assert not problems, f"cell {cell.id} ({cell.client} → {outcome.status}):\n  " + "\n  ".join(problems)


# --- randomized faults under concurrent load ---------------------------------------------

SEED = 20240611
RATE = 0.05
RANDOM_RATES: dict[str, dict[str, float]] = {
    op: {letter: RATE / len(letters) for letter in letters}
    for op, accepted in FAULTS.items()
    if (letters := sorted(accepted - {".", "C", "W"}))
}
"""About 5% faults on every operation, every letter but C (no damage at rest here) and W
(a gate a test opens, not a fault)."""
CLIENTS = 4
ROUNDS = 150
DEADLINE = 40.0
ANSWERS = {
    "PUT": {201, 204, 502, 503},
    "GET": {0, 200, 500, 502, 503},
    "GET_range": {0, 206, 500, 502, 503},
    "COPY": {201, 204, 403},
    "MOVE": {201, 204, 403},
    "DELETE": {204},
}
"""What each request may answer under store faults: a store error (502) or outage (503);
a GET also 500 when a block fails before its first byte is sent (wsgidav's generic
answer), or a cut (0: no response head). COPY and MOVE onto themselves are 403; they
and DELETE never touch the store."""


@dataclass
class Tally:
    """What the random run saw, for its messages."""

    statuses: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saw(self, what: str, status: int, path: str) -> None:
        with self.lock:
            self.statuses[f"{what} {status}"] += 1
            if status not in ANSWERS[what]:
                self.problems.append(f"{what} {path} answered {status}")

    def fail(self, problem: str) -> None:
        with self.lock:
            self.problems.append(problem)


def random_client(
    server: RunningServer, index: int, rounds: int, pool: list[bytes], deadline: float, tally: Tally
) -> dict[str, bytes]:
    """Random requests on this client's own folder (so the outcome of each is known),
    with contents from a pool every client shares (so uploads store chunks gc is
    collecting). Returns the folder's expected contents."""
    rng = random.Random(f"{SEED}/{index}")
    names = [f"/c{index}/f{n}.bin" for n in range(4)]
    model: dict[str, bytes] = {}
    for _ in range(rounds):
        if time.monotonic() > deadline:
            break
        present = sorted(model)
        op = rng.choice(["PUT", "PUT", "GET", "GET_range", "COPY", "MOVE", "DELETE"]) if present else "PUT"
        if op == "PUT":
            path, data = rng.choice(names), rng.choice(pool)
            response = put(server, path, data)
            tally.saw(op, response.status_code, path)
            for problem in response_problems(response, f"PUT {path}"):
                tally.fail(problem)
            if response.status_code in (201, 204):
                model[path] = data
        elif op in ("GET", "GET_range"):
            path = rng.choice(present)
            data = model[path]
            start = rng.randrange(len(data))
            byte_range = (start, rng.randrange(start, len(data)) + 1) if op == "GET_range" else None
            got = fetch(server, path, byte_range)
            tally.saw(op, got.status, path)
            expected = data[byte_range[0] : byte_range[1]] if byte_range else data
            for problem in delivery_problems(got, expected, f"GET {path} {byte_range or ''}"):
                tally.fail(problem)
        else:
            source, target = rng.choice(present), rng.choice(names)
            if op == "DELETE":
                response = requests.delete(url(server, source), timeout=TIMEOUT)
            else:
                response = requests.request(
                    op,
                    url(server, source),
                    headers={"Destination": url(server, target), "Overwrite": "T"},
                    timeout=TIMEOUT,
                )
            tally.saw(op, response.status_code, source)
            for problem in response_problems(response, f"{op} {source}"):
                tally.fail(problem)
            if response.status_code in (201, 204):
                if op == "COPY":
                    model[target] = model[source]
                elif op == "MOVE" and source != target:
                    model[target] = model.pop(source)
                elif op == "DELETE":
                    del model[source]
    return model


@pytest.mark.parametrize("content_addressed", [True, False], ids=["local", "telegram-like"])
def test_random_faults_under_concurrent_load(
    faulty_server: Callable[..., RunningServer], content_addressed: bool
) -> None:
    """~5% faults on every store operation while four clients and gc work at once; the
    store either keeps one copy per hash (local) or is asked whether a known chunk
    still exists before an upload reuses it (Telegram), so every operation is used."""
    server = faulty_server(content_addressed=content_addressed)
    store = server.app.drive.store
    assert isinstance(store, FaultyStore)
    pool = [payload(3 * KiB + 611 * n, 1000 + n) for n in range(5)] + [payload(BIG, 1005)]
    for index in range(CLIENTS):
        assert requests.request("MKCOL", url(server, f"/c{index}/"), timeout=TIMEOUT).status_code == 201

    store.arm(FaultPlan.random(SEED, RANDOM_RATES, delay=0.01, timeout_after=0.01))
    tally = Tally()
    models: list[dict[str, bytes]] = [{} for _ in range(CLIENTS)]
    crashes: list[str] = []
    deadline = time.monotonic() + DEADLINE

    def client(index: int) -> None:
        rounds = ROUNDS // CLIENTS + (index < ROUNDS % CLIENTS)
        try:
            models[index] = random_client(server, index, rounds, pool, deadline, tally)
        except Exception as exc:  # noqa: BLE001 - reported below with the seed
            crashes.append(f"client {index}: {type(exc).__name__}: {exc}")

    with GcLoop(server, pause=0.01) as gc:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=DEADLINE + 2 * TIMEOUT)
        gc.stop(min_runs=1)
    injected, calls = Counter(store.injected), Counter(store.calls)
    store.arm(FaultPlan())

    context = (
        f"seed {SEED}; statuses {dict(tally.statuses)}; store calls {dict(calls)}; injected {dict(injected)}"
    )
    assert not any(t.is_alive() for t in threads), f"a client is stuck ({context})"
    assert not crashes and not gc.crashes, f"{crashes + gc.crashes} ({context})"
    assert len({op for op, _ in injected}) >= 2, f"too few faults to mean anything ({context})"
    problems = list(tally.problems)

    expected = {path: data for model in models for path, data in model.items()}
    listed = propfind_files(server)
    if listed.keys() != expected.keys():
        problems.append(f"listed {sorted(listed)}, expected {sorted(expected)}")
    for path, data in expected.items():
        got = fetch(server, path)
        if not (got.status == 200 and got.complete and got.body == data):
            problems.append(f"{path}: GET gave {got.status} {len(got.body)} bytes, expected {len(data)}")
    report = fsck(server.app.drive.catalog, store.inner, verify=True)
    if not report.clean:
        problems.append(f"fsck --verify: {report.lines()}")
    collect_garbage(server.app.drive.catalog, store, grace=0)
    problems += chunk_problems(server)
    for index, data in enumerate(pool):
        response = put(server, f"/again-{index}.bin", data)
        if response.status_code != 201:
            problems.append(f"re-upload of pool content {index} refused: {response.status_code}")
    print(context)
    assert not problems, f"{context}:\n  " + "\n  ".join(problems)
