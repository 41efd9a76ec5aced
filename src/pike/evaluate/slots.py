"""Device slots and who holds them: each slot's accounting (what the progress display and the store
report as held, timed and kernels active), the queue that hands free slots out by priority, and the
gate that lanes of one device share. Used by the local pool and the Ray pool alike."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class SlotStats:
    device: str
    jobs: int = 0
    held_s: float = 0.0  # slot held by a candidate (checks + timing)
    timed_s: float = 0.0  # of which spent in the timing loop
    replaced: int = 0
    busy_since: float | None = None  # monotonic time the candidate now on it took it

    def take(self) -> None:
        self.busy_since = time.monotonic()

    def give_back(self) -> None:
        if self.busy_since is not None:
            self.jobs += 1
            self.held_s += time.monotonic() - self.busy_since
            self.busy_since = None

    def held(self) -> float:
        """Seconds held so far, the job now on it included (a long job would otherwise show as idle)."""
        return self.held_s + (time.monotonic() - self.busy_since if self.busy_since is not None else 0.0)


@dataclass
class PoolStats:
    slots: list[SlotStats] = field(default_factory=list)
    builds: int = 0
    build_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    waiting: int = 0  # candidates waiting for a slot now
    building: int = 0
    activity: object = None  # a gpu_activity.KernelActivity while a search runs (kernels active per GPU)

    def utilisation(self) -> list[float]:
        wall = max(time.monotonic() - self.started, 1e-9)
        return [s.held() / wall for s in self.slots]


# Who gets a free slot first: a task's start-up and final table (references, baselines, the final
# re-timing) before candidates. With several tasks on one GPU, candidates of the tasks already
# searching would otherwise queue ahead of the start-up of the others (FIFO): on an H200, four tasks
# took 278 s before all were searching, and a slow task held up the others.
STARTUP, CANDIDATE = 0, 1


class SlotQueue:
    """Free slot indices, handed to waiters by priority, then in arrival order."""

    def __init__(self, n: int):
        self._free = list(range(n))
        self._waiters: list[tuple[int, int, asyncio.Future]] = []
        self._order = itertools.count()

    async def get(self, priority: int) -> int:
        if self._free and not self._waiters:
            return self._free.pop(0)
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), fut))
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.put(fut.result())  # handed over just as the waiter was cancelled: pass it on
            raise

    def put(self, i: int) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():  # a cancelled waiter is skipped
                fut.set_result(i)
                return
        self._free.append(i)


class DeviceGate:
    """One device's use, when it has several lanes (``EvalPool(lanes=N)``): a lane's child prepares
    (import, construction on the CPU) without it and asks for it at its first CUDA use.

    Two ways to hold it. Exclusive: the reference job, re-timing, profiling, baselines and a
    candidate's timing; nothing else runs on the device meanwhile. Shared (``share_checks``): a
    candidate's compile and correctness checks, which may run beside other lanes' checks, since a
    check's verdict does not depend on the device being idle. A lane that wants it exclusively
    waits for the shared holders to finish and keeps new ones out meanwhile (a timing never waits
    behind a stream of checks). Re-entrant for the exclusive holder: its own nested evaluation (the
    extra check's trials) passes. The time anyone holds it is the device's "held" figure; ``history``
    keeps the last holds (mode, start, end) for tests and diagnosis."""

    def __init__(self, stats: SlotStats):
        self._cond = threading.Condition()
        self._stats = stats
        self._owner: int | None = None  # the thread holding it exclusively
        self._depth = 0  # the owner's nested holds
        self._shared: dict[int, float] = {}  # thread -> since when it holds it shared
        self._waiting = 0  # threads waiting to hold it exclusively
        self._since = 0.0
        self.history: deque[tuple[str, float, float]] = deque(maxlen=1000)

    def acquire(self, shared: bool = False) -> None:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return
            if me in self._shared:
                raise RuntimeError("DeviceGate: a shared holder must release before holding it again (see upgrade)")
            if shared:
                self._cond.wait_for(lambda: self._owner is None and not self._waiting)
            else:
                self._waiting += 1
                try:
                    self._cond.wait_for(lambda: self._owner is None and not self._shared)
                finally:
                    self._waiting -= 1
            if self._owner is None and not self._shared:
                self._stats.take()
            if shared:
                self._shared[me] = time.monotonic()
            else:
                self._owner, self._depth, self._since = me, 1, time.monotonic()

    def release(self) -> None:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth -= 1
                if self._depth:
                    return
                self._owner = None
                self.history.append(("exclusive", self._since, time.monotonic()))
            else:
                self.history.append(("shared", self._shared.pop(me), time.monotonic()))
            if self._owner is None and not self._shared:
                self._stats.give_back()
            self._cond.notify_all()

    def upgrade(self) -> None:
        """From shared to exclusive (before a timing): the others' checks finish first."""
        if threading.get_ident() in self._shared:
            self.release()
            self.acquire()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
