"""FaultyStore: transparent with an empty plan, and each fault does exactly what it says."""

from __future__ import annotations

import functools
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from davfs.chunk import ChunkMeta, ChunkRef
from davfs.errors import IntegrityError, StoreError, StoreTimeout, StoreUnavailable
from davfs.reader import ChunkReader
from davfs.snapshot import Extent, FileSnapshot
from davfs.stores.base import ChunkStore
from davfs.stores.faulty import FaultPlan, FaultyStore, Injection
from davfs.stores.local import LocalStore
from davfs.stores.memory import MemoryStore
from tests.stores.conformance import MiB, StoreConformance, chunk

EVERY_OP_DELAYED = FaultPlan(put="D", get="D", delete="D", exists="D", iter_chunks="D", cycle=True, delay=0)


class TestFaultyStoreWithoutFaults(StoreConformance):
    @pytest.fixture
    def store(self):
        return FaultyStore(MemoryStore(), FaultPlan())


class TestFaultyStoreDelayingEveryCall(StoreConformance):
    """Every call goes through the fault path (a zero delay) around a store that adopts
    spool files by rename."""

    @pytest.fixture
    def store(self, tmp_path):
        return FaultyStore(LocalStore(tmp_path / "store"), EVERY_OP_DELAYED)


class Sleeps(list[float]):
    """A ``sleep`` that records instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def spool(folder, data: bytes, name: str = "c.spool") -> str:
    path = os.path.join(folder, name)
    with open(path, "wb") as out:
        out.write(data)
    return path


# --- E, U, T, D: before the inner call -------------------------------------------------------

RAISED = {"E": StoreError, "U": StoreUnavailable, "T": StoreTimeout}


@pytest.mark.parametrize("fault", RAISED)
def test_errors_raise_without_touching_the_inner_store(fault):
    inner = MemoryStore()
    kept, kept_meta = chunk(100)
    inner.put(kept, kept_meta)
    plan = FaultPlan(put=fault, get=fault, delete=fault, exists=fault, iter_chunks=fault)
    store = FaultyStore(inner, plan, sleep=Sleeps())
    data, meta = chunk(200)
    calls = [
        lambda: store.put(data, meta),
        lambda: store.get(kept_meta.chunk_hash, 0, 10),
        lambda: store.delete(kept_meta.chunk_hash),
        lambda: store.exists(kept_meta.chunk_hash),
        lambda: store.iter_chunks(),
    ]
    for call in calls:
        with pytest.raises(StoreError) as raised:
            call()
        assert type(raised.value) is RAISED[fault]  # exactly that class, not a subclass
    assert not inner.exists(meta.chunk_hash)
    assert inner.get(kept_meta.chunk_hash, 0, 100) == kept
    ops = ["put", "get", "delete", "exists", "iter_chunks"]
    assert store.injected == Counter({(op, fault): 1 for op in ops})
    # schedules used up: everything passes now
    assert store.put(data, meta) == meta.chunk_hash
    assert store.get(meta.chunk_hash, 0, 200) == data


def test_unavailable_tells_the_client_when_to_retry():
    store = FaultyStore(MemoryStore(), FaultPlan(get="U"))
    with pytest.raises(StoreUnavailable) as raised:
        store.get("0" * 64, 0, 1)
    assert raised.value.http_status == 503 and raised.value.retry_after == 1


def test_timeout_waits_then_raises():
    sleeps = Sleeps()
    store = FaultyStore(MemoryStore(), FaultPlan(get="T", timeout_after=2.5), sleep=sleeps)
    with pytest.raises(StoreTimeout) as raised:
        store.get("0" * 64, 0, 1)
    assert sleeps == [2.5]
    assert raised.value.retry_after == 3


def test_delay_waits_then_does_the_call():
    sleeps = Sleeps()
    data, meta = chunk(300)
    store = FaultyStore(MemoryStore(), FaultPlan(put="D", get=".D", delay=0.2), sleep=sleeps)
    locator = store.put(data, meta)
    assert sleeps == [0.2]
    assert store.get(locator, 0, 300) == data
    assert store.get(locator, 5, 10) == data[5:15]
    assert sleeps == [0.2, 0.2]
    assert store.injections == [Injection("put", 1, "D"), Injection("get", 2, "D")]


def test_a_real_delay_really_waits():
    store = FaultyStore(MemoryStore(), FaultPlan(exists="D", delay=0.05))
    started = time.monotonic()
    assert not store.exists("0" * 64)
    assert time.monotonic() - started >= 0.05


# --- C: corrupt ------------------------------------------------------------------------------


def test_corrupt_get_returns_wrong_bytes_of_the_right_length():
    inner = MemoryStore()
    data, meta = chunk(5000)
    locator = inner.put(data, meta)
    store = FaultyStore(inner, FaultPlan(get="C"))
    damaged = store.get(locator, 100, 1000)
    assert len(damaged) == 1000
    assert all(a != b for a, b in zip(damaged, data[100:1100], strict=True))  # every byte
    assert store.get(locator, 100, 1000) == data[100:1100]  # transient: the stored copy is fine
    assert store.injected == Counter({("get", "C"): 1})


def test_corrupt_get_of_nothing_passes_uncounted():
    inner = MemoryStore()
    data, meta = chunk(10)
    store = FaultyStore(inner, FaultPlan(get="C"))
    assert store.get(inner.put(data, meta), 3, 0) == b""
    assert store.injected == Counter()


def test_corrupt_put_stores_damaged_bytes_under_the_same_meta():
    inner = MemoryStore()
    data, meta = chunk(3000)
    store = FaultyStore(inner, FaultPlan(put="C"))
    locator = store.put(data, meta)
    stored = inner.get(locator, 0, 3000)
    assert len(stored) == 3000 and stored != data
    assert ChunkMeta.of(stored).chunk_hash != meta.chunk_hash
    assert dict(inner.iter_chunks())[locator] == meta  # the store still claims the original
    assert store.injected == Counter({("put", "C"): 1})


def test_corrupt_put_file_damages_every_block_of_a_large_spooled_chunk(tmp_path):
    inner = LocalStore(tmp_path / "store")
    data, meta = chunk(2 * MiB + 1234)  # more than one piece of the in-place flip
    store = FaultyStore(inner, FaultPlan(put="C"))
    path = spool(inner.properties.spool_dir, data)
    locator = store.put_file(path, meta)
    assert not os.path.exists(path)
    stored = inner.get(locator, 0, len(data))
    assert bytes(b ^ 0xFF for b in stored[-1000:]) == data[-1000:]
    damaged = ChunkMeta.of(stored)
    blocks = len(meta.block_hashes) // 32
    assert all(
        damaged.block_hashes[i * 32 : i * 32 + 32] != meta.block_hashes[i * 32 : i * 32 + 32]
        for i in range(blocks)
    )
    assert store.injected == Counter({("put", "C"): 1})


# --- L: lost confirmation --------------------------------------------------------------------


def test_lost_put_raises_yet_the_chunk_is_stored():
    inner = MemoryStore()
    data, meta = chunk(700)
    store = FaultyStore(inner, FaultPlan(put="L"))
    with pytest.raises(StoreTimeout):
        store.put(data, meta)
    assert inner.get(meta.chunk_hash, 0, 700) == data
    assert store.injected == Counter({("put", "L"): 1})
    assert store.put(data, meta) == meta.chunk_hash  # the retry a caller would make is safe


def test_lost_put_file_raises_yet_the_chunk_is_stored(tmp_path):
    inner = LocalStore(tmp_path / "store")
    data, meta = chunk(MiB + 3)
    store = FaultyStore(inner, FaultPlan(put="L"))
    path = spool(inner.properties.spool_dir, data)
    with pytest.raises(StoreTimeout):
        store.put_file(path, meta)
    assert not os.path.exists(path)
    assert inner.get(meta.chunk_hash, 0, len(data)) == data


def test_lost_delete_raises_yet_the_chunk_is_gone():
    inner = MemoryStore()
    data, meta = chunk(50)
    locator = inner.put(data, meta)
    store = FaultyStore(inner, FaultPlan(delete="L"))
    with pytest.raises(StoreTimeout):
        store.delete(locator)
    assert not inner.exists(locator)
    store.delete(locator)  # deleting again is safe


# --- the schedule ----------------------------------------------------------------------------


def outcome(call) -> str:
    try:
        call()
    except StoreTimeout:
        return "T"
    except StoreUnavailable:
        return "U"
    except StoreError:
        return "E"
    return "."


def test_schedule_is_followed_in_order_then_calls_pass():
    inner = MemoryStore()
    store = FaultyStore(inner, FaultPlan(put=".E.LU"))
    chunks = [chunk(100 + i) for i in range(8)]
    results = [outcome(lambda c=c: store.put(*c)) for c in chunks]
    assert results == [".", "E", ".", "T", "U", ".", ".", "."]
    assert [inner.exists(meta.chunk_hash) for _, meta in chunks] == [True, False, True, True, False] + [
        True
    ] * 3
    assert store.injections == [Injection("put", 2, "E"), Injection("put", 4, "L"), Injection("put", 5, "U")]
    assert store.calls["put"] == 8


def test_put_and_put_file_share_one_schedule(tmp_path):
    store = FaultyStore(MemoryStore(), FaultPlan(put=".E"))
    store.put(*chunk(10))
    data, meta = chunk(20)
    with pytest.raises(StoreError):
        store.put_file(spool(tmp_path, data), meta)
    assert store.injections == [Injection("put", 2, "E")]


def test_schedules_are_counted_per_operation():
    inner = MemoryStore()
    data, meta = chunk(10)
    locator = inner.put(data, meta)
    store = FaultyStore(inner, FaultPlan(get=".E", exists="E"))
    assert outcome(lambda: store.exists(locator)) == "E"
    assert outcome(lambda: store.get(locator, 0, 1)) == "."
    assert outcome(lambda: store.exists(locator)) == "."
    assert outcome(lambda: store.get(locator, 0, 1)) == "E"


def test_cycle_repeats_the_schedule():
    store = FaultyStore(MemoryStore(), FaultPlan(exists=".E", cycle=True))
    assert [outcome(lambda: store.exists("x")) for _ in range(6)] == [".", "E"] * 3


def test_rates_take_over_when_the_schedule_is_used_up():
    store = FaultyStore(MemoryStore(), FaultPlan(exists="E.", rates={"exists": {"U": 1.0}}))
    assert [outcome(lambda: store.exists("x")) for _ in range(4)] == ["E", ".", "U", "U"]


def test_arm_starts_over():
    store = FaultyStore(MemoryStore(), FaultPlan(exists="E"))
    assert outcome(lambda: store.exists("x")) == "E"
    assert outcome(lambda: store.exists("x")) == "."
    store.arm(FaultPlan(exists=".U"))
    assert store.injected == Counter() and store.calls == Counter()
    assert [outcome(lambda: store.exists("x")) for _ in range(3)] == [".", "U", "."]


@pytest.mark.parametrize(
    "plan",
    [
        {"get": "L"},  # a get has no confirmation to lose
        {"delete": "C"},
        {"exists": "C"},
        {"put": "x"},
        {"rates": {"close": {"E": 0.1}}},
        {"rates": {"get": {"L": 0.1}}},
        {"rates": {"put": {"E": 0.6, "L": 0.6}}},
        {"rates": {"put": {"E": -0.1}}},
        {"delay": -1},
    ],
)
def test_impossible_plans_are_refused(plan):
    with pytest.raises(ValueError):
        FaultPlan(**plan)


def test_a_plan_does_not_change_with_the_dict_it_was_built_from():
    rates = {"exists": {"E": 0.0}}
    plan = FaultPlan.random(seed=1, rates=rates)
    rates["exists"]["E"] = 1.0
    store = FaultyStore(MemoryStore(), plan)
    assert outcome(lambda: store.exists("x")) == "."
    assert plan.rates == {"exists": {"E": 0.0}}


def test_concurrent_calls_take_each_slot_once():
    store = FaultyStore(MemoryStore(), FaultPlan(exists="E" * 300 + "." * 100))
    results: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(50):
            result = outcome(lambda: store.exists("x"))
            with lock:
                results.append(result)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert Counter(results) == Counter({"E": 300, ".": 100})
    assert store.injected == Counter({("exists", "E"): 300})
    assert sorted(i.call for i in store.injections) == list(range(1, 301))


# --- random mode -----------------------------------------------------------------------------

RATES = {"put": {"E": 0.1, "L": 0.05, "C": 0.05}, "get": {"C": 0.1, "U": 0.05}, "delete": {"L": 0.2}}
CHUNKS = [chunk(64 + i, seed=i + 1) for i in range(150)]


def exercise(store: ChunkStore, interleave: bool) -> None:
    """Puts, gets and deletes in a fixed order per operation; ``interleave`` changes
    only how the operations mix."""
    ops: list[Callable[[], object]] = []
    for data, meta in CHUNKS:
        ops.append(functools.partial(store.put, data, meta))
    for data, meta in CHUNKS:
        ops.append(functools.partial(store.get, meta.chunk_hash, 0, len(data)))
    for _, meta in CHUNKS:
        ops.append(functools.partial(store.delete, meta.chunk_hash))
    n = len(CHUNKS)
    if interleave:
        ops = [op for triple in zip(ops[:n], ops[n : 2 * n], ops[2 * n :], strict=True) for op in triple]
    for op in ops:
        try:
            op()
        except StoreError:  # includes ChunkMissing of gets interleaved with deletes
            pass


def test_random_faults_are_reproducible_with_the_seed():
    runs = []
    for _ in range(2):
        store = FaultyStore(MemoryStore(), FaultPlan.random(seed=42, rates=RATES))
        exercise(store, interleave=False)
        runs.append(store.injections)
    assert runs[0] == runs[1]
    kinds = Counter((i.op, i.fault) for i in runs[0])
    assert kinds.keys() == {
        ("put", "E"),
        ("put", "L"),
        ("put", "C"),
        ("get", "C"),
        ("get", "U"),
        ("delete", "L"),
    }

    other = FaultyStore(MemoryStore(), FaultPlan.random(seed=43, rates=RATES))
    exercise(other, interleave=False)
    assert other.injections != runs[0]


def test_random_faults_per_operation_do_not_depend_on_how_operations_mix():
    apart = FaultyStore(MemoryStore(), FaultPlan.random(seed=7, rates=RATES))
    exercise(apart, interleave=False)
    mixed = FaultyStore(MemoryStore(), FaultPlan.random(seed=7, rates=RATES))
    exercise(mixed, interleave=True)
    assert set(apart.injections) == set(mixed.injections)  # the same faults, listed in another order
    assert apart.calls == mixed.calls


def test_random_faults_do_not_depend_on_the_order_rates_were_written_in():
    runs = []
    for rates in ({"exists": {"E": 0.2, "U": 0.2, "T": 0.2}}, {"exists": {"T": 0.2, "U": 0.2, "E": 0.2}}):
        store = FaultyStore(MemoryStore(), FaultPlan.random(seed=11, rates=rates))
        runs.append([outcome(lambda store=store: store.exists("x")) for _ in range(100)])
    assert runs[0] == runs[1]


def test_random_rates_are_roughly_kept():
    store = FaultyStore(MemoryStore(), FaultPlan.random(seed=3, rates={"exists": {"E": 0.1}}))
    errors = sum(outcome(lambda: store.exists("x")) == "E" for _ in range(5000))
    assert 400 < errors < 600


# --- put_file takes the file over, whatever happens --------------------------------------------


@pytest.mark.parametrize("inner_kind", ["memory", "local"])
@pytest.mark.parametrize("fault", list(".EUTDCL"))
def test_put_file_never_leaves_the_spooled_file_behind(tmp_path, inner_kind, fault):
    inner = MemoryStore() if inner_kind == "memory" else LocalStore(tmp_path / "store")
    store = FaultyStore(inner, FaultPlan(put=fault, delay=0))
    data, meta = chunk(4096)
    path = spool(inner.properties.spool_dir or tmp_path, data)
    outcome(lambda: store.put_file(path, meta))
    assert not os.path.exists(path)
    if fault != ".":
        assert sum(store.injected.values()) == 1


def test_put_file_of_a_vanished_file_still_fails_cleanly(tmp_path):
    store = FaultyStore(MemoryStore(), FaultPlan(put="C"))
    with pytest.raises(StoreError):
        store.put_file(str(tmp_path / "gone.spool"), chunk(10)[1])


# --- end to end: the reader catches every corruption -------------------------------------------

EXECUTOR = ThreadPoolExecutor(max_workers=4)


def build(store: ChunkStore, data: bytes, chunk_size: int, block_size: int) -> FileSnapshot:
    extents = []
    for start in range(0, len(data), chunk_size):
        piece = data[start : start + chunk_size]
        meta = ChunkMeta.of(piece, block_size)
        try:
            locator = store.put(piece, meta)
        except StoreTimeout:  # a lost confirmation: the chunk is there under its hash
            locator = meta.chunk_hash
        info = ChunkRef(locator, meta)
        extents.append(Extent(info, 0, len(piece)))
    return FileSnapshot("/f", 1, len(data), 0.0, "etag", tuple(extents))


def read_all(snapshot: FileSnapshot, store: ChunkStore, window: int = 0) -> bytes:
    with ChunkReader(snapshot, store, EXECUTOR, window=window) as reader:
        return reader.read()


def test_a_corrupt_get_is_an_integrity_error_and_only_once():
    data = os.urandom(8192)
    store = FaultyStore(MemoryStore())
    snapshot = build(store, data, 4096, 1024)
    store.arm(FaultPlan(get=".C"))  # the second read: the second chunk (one window of 4 blocks)
    with ChunkReader(snapshot, store, EXECUTOR, window=0) as reader:
        assert reader.read(4096) == data[:4096]
        with pytest.raises(IntegrityError):
            reader.read(4096)
    assert read_all(snapshot, store) == data  # the stored bytes were fine all along
    assert store.injected == Counter({("get", "C"): 1})


def test_a_corrupt_put_is_an_integrity_error_on_every_read():
    data = os.urandom(3 * 4096)
    store = FaultyStore(MemoryStore(), FaultPlan(put=".C"))  # the second chunk is damaged at rest
    snapshot = build(store, data, 4096, 1024)
    for _ in range(2):
        with ChunkReader(snapshot, store, EXECUTOR, window=2) as reader:
            assert reader.read(4096) == data[:4096]
            with pytest.raises(IntegrityError):
                reader.read(1)
            reader.seek(8192)
            assert reader.read() == data[8192:]


@pytest.mark.parametrize("window", [0, 3])
def test_random_corruption_never_reaches_the_caller(window):
    data = os.urandom(3 * 1024 + 100)
    store = FaultyStore(MemoryStore())
    snapshot = build(store, data, 2048, 1024)
    store.arm(FaultPlan.random(seed=5, rates={"get": {"C": 0.2}}))
    results: Counter[str] = Counter()
    for _ in range(60):
        try:
            got = read_all(snapshot, store, window)
        except IntegrityError:
            results["caught"] += 1
        else:
            assert got == data
            results["ok"] += 1
    assert results["caught"] and results["ok"]
    assert store.injected[("get", "C")] >= results["caught"]


def test_the_faulty_url_scheme_wraps_another_store_for_the_benchmarks(tmp_path) -> None:
    from davfs.errors import ConfigError
    from davfs.stores import open_store

    store = open_store(f"faulty:7:put.U=0.5,get.C=0.25:local:{tmp_path / 'inner'}")
    assert isinstance(store, FaultyStore) and isinstance(store.inner, LocalStore)
    assert store.plan.seed == 7 and store.plan.rates == {"put": {"U": 0.5}, "get": {"C": 0.25}}
    for bad in (
        "faulty:x:put.U=1:memory:",
        "faulty:1:put:memory:",
        "faulty:1:put.Q=0.1:memory:",
        "faulty:1:put.U=2:memory:",
    ):
        with pytest.raises(ConfigError, match="faulty:SEED:RATES:INNER"):
            open_store(bad)
