"""A ChunkStore wrapper that fails on purpose, for tests and the bench (borg's
``chunkers/failing.py``, grown to cover the ways a remote store really fails).

``FaultyStore(inner, FaultPlan(put="..E", get="C."))`` delegates every call to ``inner``
and, per operation, takes the next slot of that operation's schedule: one letter per
call, in call order. ``put`` and ``put_file`` share the ``put`` schedule: callers choose
between them by where the bytes are (memory or a spool file), not by what the call
means, so "the third upload fails" must not depend on which one the writer used.

==  ==============================================================================
.   pass the call through
E   raise :class:`~davfs.errors.StoreError` (502), inner untouched: a hard failure
    that retrying will not cure (a refused request, a broken account)
U   raise :class:`~davfs.errors.StoreUnavailable` (503, ``Retry-After``), inner
    untouched: a transient outage
T   wait ``timeout_after`` seconds, then raise :class:`~davfs.errors.StoreTimeout`,
    inner untouched: a request that never got an answer
D   wait ``delay`` seconds, then pass the call through: a slow store
W   wait until :attr:`FaultyStore.gate` is set, then pass the call through: a store
    held still while a test changes something (bounded by ``gate_timeout``; a gate
    never opened raises StoreError, so a forgotten gate fails the test, not hangs it)
C   corrupt (``put``, ``get`` only). ``get`` returns the right number of bytes, every
    one flipped; ``put`` stores the flipped bytes under the unchanged meta, which is
    what a store that garbles data at rest does. Either way the reader must catch it
    by BlockHash (invariant 2); a corrupt ``get`` of zero bytes has nothing to flip
    and is passed through uncounted.
L   lost confirmation (``put``, ``delete`` only): the call is done on the inner
    store, then :class:`~davfs.errors.StoreTimeout` is raised as if the answer never
    arrived. The chunk IS stored (or deleted) but the caller does not know.
==  ==============================================================================

Schedules exist for ``put``, ``get``, ``delete``, ``exists`` and ``iter_chunks``
(whose fault strikes when it is called, before anything is yielded); ``close`` never
fails. A letter an operation cannot take is refused when the plan is built, so a typo
fails the test that made it. Once a schedule is used up, calls follow ``rates`` if the
plan has any for that operation, and pass otherwise; ``cycle=True`` repeats the
schedule instead. :meth:`FaultPlan.random` gives a plan of rates only.

Random draws come from one generator per operation, seeded from the plan's seed and the
operation's name: the faults that hit the n-th get do not depend on how many puts ran
before it, so a run is reproducible per operation even when operations interleave
differently across threads. Slots are taken under a lock; the faults themselves (sleeps,
inner calls) run outside it, so a delayed call does not hold up the others.

A plan is immutable and a store keeps the counts, so one plan can drive several stores
the same way. :attr:`FaultyStore.injected` counts what really was injected, keyed by
(schedule, letter), and :attr:`FaultyStore.injections` lists each one in order, so a
test can assert that the fault it planned actually happened.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from davfs.chunk import ChunkMeta
from davfs.errors import StoreError, StoreTimeout, StoreUnavailable
from davfs.stores.base import ChunkStore, store_error

_COMMON = frozenset(".EUTDW")
FAULTS: Mapping[str, frozenset[str]] = {
    "put": _COMMON | {"C", "L"},
    "get": _COMMON | {"C"},
    "delete": _COMMON | {"L"},
    "exists": _COMMON,
    "iter_chunks": _COMMON,
}
"""Each schedule's name and the letters it accepts."""

_FLIP = bytes(255 - i for i in range(256))  # XOR 0xFF, as a bytes.translate table
_PIECE = 1024 * 1024


@dataclass(frozen=True)
class FaultPlan:
    """Which call of which operation fails, and how (see the module docstring)."""

    put: str = ""
    get: str = ""
    delete: str = ""
    exists: str = ""
    iter_chunks: str = ""
    cycle: bool = False
    """Repeat each non-empty schedule forever instead of passing once it is used up."""
    rates: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Per schedule, the chance of each letter on a call past its schedule."""
    seed: int = 0
    delay: float = 0.05
    """Seconds a ``D`` call waits before it runs."""
    timeout_after: float = 0.0
    """Seconds a ``T`` call waits before it raises (a real timeout takes a while)."""
    gate_timeout: float = 20.0
    """Longest a ``W`` call waits for the gate."""

    def __post_init__(self) -> None:
        # A copy, so a caller changing its dict later cannot change a plan in use.
        object.__setattr__(self, "rates", {op: dict(rates) for op, rates in self.rates.items()})
        for op, allowed in FAULTS.items():
            bad = set(self.schedule(op)) - allowed
            if bad:
                raise ValueError(
                    f"{op} schedule: {''.join(sorted(bad))!r} not among {''.join(sorted(allowed))!r}"
                )
        for op, letters in self.rates.items():
            if op not in FAULTS:
                raise ValueError(f"rates for unknown operation {op!r} (known: {', '.join(FAULTS)})")
            bad = set(letters) - FAULTS[op]
            if bad:
                raise ValueError(f"{op} rates: {sorted(bad)} not among {''.join(sorted(FAULTS[op]))!r}")
            if any(rate < 0 for rate in letters.values()) or sum(letters.values()) > 1:
                raise ValueError(f"{op} rates must be >= 0 and add up to at most 1: {dict(letters)}")
        if self.delay < 0 or self.timeout_after < 0:
            raise ValueError("delay and timeout_after must be >= 0")

    @classmethod
    def random(
        cls,
        seed: int,
        rates: Mapping[str, Mapping[str, float]],
        *,
        delay: float = 0.05,
        timeout_after: float = 0.0,
    ) -> FaultPlan:
        """Faults at random with the given per-call ``rates``, e.g.
        ``{"put": {"E": 0.1, "L": 0.05}, "get": {"C": 0.05}}``; the same seed gives the
        same faults on the same sequence of calls of each operation."""
        return cls(rates=rates, seed=seed, delay=delay, timeout_after=timeout_after)

    @classmethod
    def parse(cls, seed: str, rates: str) -> FaultPlan:
        """A random plan from text, for the ``faulty:`` store URL the benchmarks use:
        ``parse("7", "put.U=0.02,get.C=0.01")``. Raises ValueError on bad text."""
        table: dict[str, dict[str, float]] = {}
        for item in filter(None, (part.strip() for part in rates.split(","))):
            name, _, value = item.partition("=")
            op, _, letter = name.partition(".")
            if not (op and letter and value):
                raise ValueError(f"{item!r} is not op.LETTER=rate, e.g. put.U=0.02")
            table.setdefault(op, {})[letter] = float(value)
        return cls.random(int(seed), table)

    def schedule(self, op: str) -> str:
        """The schedule string of ``op``."""
        value: str = getattr(self, op)
        return value


class Injection(NamedTuple):
    """One injected fault: the schedule it came from, which call (from 1), the letter."""

    op: str
    call: int
    fault: str


class FaultyStore:
    """A ChunkStore around another ChunkStore, failing as ``plan`` says."""

    def __init__(
        self,
        inner: ChunkStore,
        plan: FaultPlan | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``sleep`` is what ``D`` and ``T`` wait with; a test can pass a recorder to
        check the waits without spending them."""
        self.inner = inner
        self.properties = inner.properties
        self._sleep = sleep
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        """Calls per schedule so far (including those that passed)."""
        self.injected: Counter[tuple[str, str]] = Counter()
        self.injections: list[Injection] = []
        self.touched: dict[str, list[str]] = {op: [] for op in FAULTS}
        """Per schedule, what each call was about, in order: the ChunkHash of a put,
        the locator of any other call (empty for ``iter_chunks``)."""
        self.gate = threading.Event()
        self.arm(plan or FaultPlan())

    def arm(self, plan: FaultPlan) -> None:
        """Install ``plan`` and start over: counts, random generators and the record of
        injections. Lets a test set up content first, then fail exactly the calls it means."""
        with self._lock:
            self.plan = plan
            self._rngs = {op: random.Random(f"{plan.seed}/{op}") for op in FAULTS}
            self.calls.clear()
            self.injected.clear()
            self.injections.clear()
            for record in self.touched.values():
                record.clear()
            self.gate.clear()

    # --- the schedule ---------------------------------------------------------------

    def _next(self, op: str, target: str) -> tuple[int, str]:
        """Take the next slot of ``op``: its call number and letter."""
        with self._lock:
            self.touched[op].append(target)
            self.calls[op] += 1
            call = self.calls[op]
            schedule = self.plan.schedule(op)
            if call <= len(schedule):
                return call, schedule[call - 1]
            if schedule and self.plan.cycle:
                return call, schedule[(call - 1) % len(schedule)]
            rates = self.plan.rates.get(op)
            if not rates:
                return call, "."
            draw = self._rngs[op].random()
            for letter in sorted(rates):  # a fixed order, whatever order the dict was built in
                draw -= rates[letter]
                if draw < 0:
                    return call, letter
            return call, "."

    def _record(self, op: str, call: int, fault: str) -> None:
        with self._lock:
            self.injected[op, fault] += 1
            self.injections.append(Injection(op, call, fault))

    def _before(self, op: str, target: str = "") -> tuple[int, str]:
        """Take a slot and inject what happens before the inner call (E, U, T, D, W);
        return the slot, for what happens after it (C, L)."""
        call, fault = self._next(op, target)
        name = self.properties.name
        if fault == "E":
            self._record(op, call, fault)
            raise StoreError(name, f"injected failure of {op} call {call}")
        if fault == "U":
            self._record(op, call, fault)
            raise StoreUnavailable(name, 1)
        if fault == "T":
            self._record(op, call, fault)
            self._sleep(self.plan.timeout_after)
            raise self._timeout()
        if fault == "D":
            self._record(op, call, fault)
            self._sleep(self.plan.delay)
        if fault == "W":
            self._record(op, call, fault)
            if not self.gate.wait(self.plan.gate_timeout):
                raise StoreError(
                    name, f"gate not opened within {self.plan.gate_timeout} s ({op} call {call})"
                )
        return call, fault

    def _timeout(self) -> StoreTimeout:
        return StoreTimeout(self.properties.name, max(1, math.ceil(self.plan.timeout_after)))

    # --- ChunkStore -----------------------------------------------------------------

    def put(self, data: bytes | memoryview, meta: ChunkMeta) -> str:
        call, fault = self._before("put", meta.chunk_hash)
        if fault == "C":
            locator = self.inner.put(bytes(data).translate(_FLIP), meta)
            self._record("put", call, fault)
            return locator
        locator = self.inner.put(data, meta)
        if fault == "L":
            self._record("put", call, fault)
            raise self._timeout()
        return locator

    def put_file(self, path: str, meta: ChunkMeta) -> str:
        try:
            call, fault = self._before("put", meta.chunk_hash)
            if fault == "C":
                _flip_file(path, self.properties.name)
        except BaseException:
            # The contract: the spool file is taken over whether the put succeeds or not.
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            raise
        locator = self.inner.put_file(path, meta)
        if fault in ("C", "L"):
            self._record("put", call, fault)
        if fault == "L":
            raise self._timeout()
        return locator

    def get(self, locator: str, offset: int, length: int) -> bytes:
        call, fault = self._before("get", locator)
        data = self.inner.get(locator, offset, length)
        if fault == "C" and data:
            self._record("get", call, fault)
            return data.translate(_FLIP)
        return data

    def delete(self, locator: str) -> None:
        call, fault = self._before("delete", locator)
        self.inner.delete(locator)
        if fault == "L":
            self._record("delete", call, fault)
            raise self._timeout()

    def exists(self, locator: str) -> bool:
        self._before("exists", locator)
        return self.inner.exists(locator)

    def iter_chunks(self) -> Iterator[tuple[str, ChunkMeta]]:
        self._before("iter_chunks")
        return self.inner.iter_chunks()

    def close(self) -> None:
        self.gate.set()  # release anything still waiting
        self.inner.close()


def _flip_file(path: str, store: str) -> None:
    """Flip every byte of a spooled chunk in place, a piece at a time (the chunk never
    sits in memory whole, invariant 5)."""
    try:
        with open(path, "r+b") as spooled:
            position = 0
            while piece := spooled.read(_PIECE):
                spooled.seek(position)
                spooled.write(piece.translate(_FLIP))
                position += len(piece)
    except OSError as exc:
        raise store_error(store, exc) from exc


_check: type[ChunkStore] = FaultyStore
