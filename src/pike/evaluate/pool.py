"""The evaluation pool for one machine: one worker per device slot, builds on a CPU pool.

Each slot is an :class:`Evaluator` bound to one device (a GPU, or a CPU worker); one candidate at a
time holds a slot for its checks and timing, while extension builds for other candidates run on the
build pool at the same time. Callers ``await pool.evaluate(...)`` concurrently; results come back as
they finish. The pool is a placement of the pipeline's stages (``pipeline.Placement``): the order of
stages is the pipeline's, the pool only says where each runs. A slot whose evaluator fails (not a
candidate failing: the harness itself) is replaced by a fresh one and the call is answered with a
runtime error, so the queue never stalls.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, nullcontext
from dataclasses import replace

from pike.evaluate import baselines, pipeline
from pike.evaluate.build import Builder
from pike.evaluate.devices import usable_cpus
from pike.evaluate.evaluator import EvalConfig, Evaluator
from pike.evaluate.result import EvalResult, Timing
from pike.evaluate.slots import CANDIDATE, STARTUP, DeviceGate, PoolStats, SlotQueue, SlotStats
from pike.task import Task, TaskError


def split_cores(devices: list[str]) -> tuple[list[tuple[int, ...]] | None, tuple[int, ...] | None]:
    """GPU slots get two cores each for their timing loops; builds get the rest, so that a compiler
    never competes with a process being timed. CPU workers and small machines: no pinning."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None, None
    if not all(d.startswith("cuda") for d in devices) or len(cores) < 2 * len(devices) + 2:
        return None, None
    timing = [tuple(cores[2 * i: 2 * i + 2]) for i in range(len(devices))]
    return timing, tuple(cores[2 * len(devices):])


def default_devices(config: EvalConfig, gpus: list[int] | None = None, cpu_workers: int = 1) -> list[str]:
    if config.device_type == "cuda":
        if gpus:
            return [f"cuda:{g}" for g in gpus]
        if config.device not in ("cuda",):
            return [config.device]
        from pike.evaluate.devices import visible_gpu_count

        return [f"cuda:{i}" for i in range(max(1, visible_gpu_count()))]
    return ["cpu"] * max(1, cpu_workers)


class EvalPool:
    def __init__(self, config: EvalConfig, devices: list[str] | None = None, build_workers: int | None = None,
                 lanes: int = 1, share_checks: bool = False):
        self.config = config
        self.on_progress = None  # (task, text): where a reference job is, from a slot's thread
        devices = devices or [config.device]
        timing_cores, build_cores = split_cores(devices)
        self._build_cores = build_cores
        # ``lanes`` evaluation processes per device: with more than one, the next candidates import and
        # build their models while one holds the device (DeviceGate); only the holder's child may use it.
        self.lanes = max(1, int(lanes))
        # With lanes, candidates' compiles and checks may overlap on a device; their timings never do.
        self.share_checks = share_checks
        self._lane_device = [d for d in range(len(devices)) for _ in range(self.lanes)]
        # Each slot times on its own cores; before that (import, compile, checks) it may also use the
        # build cores, never another slot's timing cores. Lanes share their device's timing cores (one
        # times at a time) and prepare on the build cores only, off the timing cores.
        self._slot_configs = [replace(config, device=devices[d], cpu_affinity=timing_cores[d] if timing_cores else None,
                                      prep_affinity=(build_cores if self.lanes > 1 else timing_cores[d] + build_cores) if timing_cores else None)
                              for d in self._lane_device]
        self.stats = PoolStats(slots=[SlotStats(d) for d in devices])
        self._gates = [DeviceGate(st) for st in self.stats.slots] if self.lanes > 1 else None
        self._slots: list[Evaluator] = [self._new_lane(i) for i in range(len(self._slot_configs))]
        self._probed: asyncio.Lock | None = None
        # Sized from the cores builds may use (the build cores, else this process's affinity), never
        # the machine's count: under taskset or a container's cpuset that would oversubscribe.
        n_build = build_workers or max(1, min(8, (len(build_cores) if build_cores else usable_cpus()) // 2))
        self._n_build = n_build
        self._builders: queue.Queue[Builder] | None = None  # made at the first build (needs the device's arch)
        self._executor = ThreadPoolExecutor(max_workers=len(self._slots) + n_build + 2, thread_name_prefix="pike-eval")
        self._free: SlotQueue | None = None
        self._ref_lock: dict[str, asyncio.Lock] = {}
        self._refs_ready: set[str] = set()
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """Evaluations that can be under way at once (devices times lanes)."""
        return len(self._slots)

    def physical_gpus(self) -> list[str | None]:
        """Each device's GPU as its children see it in CUDA_VISIBLE_DEVICES (what nvidia-smi's ``-i``
        takes: see ``gpu_activity``), None for a CPU device."""
        first = [self._slots[d * self.lanes] for d in range(len(self.stats.slots))]
        return [ev.child_env.get("CUDA_VISIBLE_DEVICES") if ev.config.device_type == "cuda" else None for ev in first]

    def _held(self, i: int):
        """For lane ``i``'s work that uses its device from start to end: its device's gate (lanes > 1)."""
        return self._gates[self._lane_device[i]] if self._gates is not None else nullcontext()

    def _probe_devices(self) -> None:
        """Lanes share their device's facts: probing (a bandwidth test) from every lane would use the
        device outside its gate."""
        for d, gate in enumerate(self._gates):
            lanes = [ev for i, ev in enumerate(self._slots) if self._lane_device[i] == d]
            with gate:
                info = lanes[0].device_info()
            for ev in lanes[1:]:
                ev._info = info

    async def _thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @asynccontextmanager
    async def _slot(self, priority: int = STARTUP):
        if self._free is None:
            self._free = SlotQueue(len(self._slots))
        if self._gates is not None:
            if self._probed is None:
                self._probed = asyncio.Lock()
            async with self._probed:
                if self._slots[0]._info is None:
                    await self._thread(self._probe_devices)
        self.stats.waiting += 1
        try:
            i = await self._free.get(priority)
        finally:
            self.stats.waiting -= 1
        lone = self._gates is None  # one lane per device: the slot is the device (else the gate counts)
        if lone:
            self.stats.slots[i].take()
        try:
            yield i
        finally:
            if lone:
                self.stats.slots[i].give_back()
            self._free.put(i)

    def _with(self, i: int, fn, *args, **kwargs):
        with self._held(i):
            return fn(*args, **kwargs)

    def _new_lane(self, i: int, info: dict | None = None) -> Evaluator:
        """Slot ``i``'s evaluator; with lanes, bound to its device's gate (and its probed facts)."""
        ev = Evaluator(self._slot_configs[i])
        ev.on_progress = self._progress
        if self._gates is not None:
            ev.gate, ev._info = self._gates[self._lane_device[i]], info
            ev.share_checks = self.share_checks
        return ev

    def _progress(self, task: Task, text: str) -> None:
        """Where a slot's reference job is (from its thread), for ``on_progress(task, text)``."""
        if self.on_progress is not None:
            self.on_progress(task, text)

    def _replace(self, i: int) -> None:
        """A fresh evaluator for slot ``i`` (its fork server and work dir go with the old one)."""
        old = self._slots[i]
        self._slots[i] = self._new_lane(i, old._info)
        self.stats.slots[self._lane_device[i]].replaced += 1
        try:
            old.close()
        except Exception:  # noqa: BLE001
            pass

    # -------------------------------------------------------------- placement of the pipeline's stages

    async def references(self, task: Task) -> None:
        """References are computed once per task (on a device slot) and then read from disk."""
        key = task.key
        if key in self._refs_ready:
            return
        lock = self._ref_lock.setdefault(key, asyncio.Lock())
        async with lock:
            if key in self._refs_ready:
                return
            async with self._slot() as i:
                await self._thread(lambda: self._with(i, self._slots[i].references, task))
            self._refs_ready.add(key)

    async def build(self, prep: pipeline.Prepared) -> EvalResult | None:
        """On the build pool (CPU cores only), beside the device slots' work."""
        if not prep.needs_build:
            return None
        self.stats.building += 1
        try:
            if self._builders is None:
                arch = await self._thread(self._slots[0].arch_list)
                self._builders = queue.Queue()
                for _ in range(self._n_build):
                    self._builders.put(Builder(self._slots[0].cache, arch_list=arch, cpu_affinity=self._build_cores,
                                               sandbox=self._slots[0].confinement, limits=self.config.limits))
            builder = await self._thread(self._builders.get)
            try:
                t0 = time.monotonic()
                failed = await self._thread(pipeline.build, self.config, prep, builder, self._slots[0].job_dir("build"))
                self.stats.builds += 1
                self.stats.build_s += time.monotonic() - t0
            finally:
                self._builders.put(builder)
        finally:
            self.stats.building -= 1
        return failed

    async def on_device(self, work, priority: int) -> EvalResult:
        """``work`` on a free slot's evaluator, in a thread; a slot whose evaluator fails (the harness,
        not the candidate) is replaced, and the evaluation is answered with a runtime error."""
        async with self._slot(priority) as i:
            ev = self._slots[i]
            try:
                result = await self._thread(work, ev, lambda: self._held(i))
            except TaskError:
                raise
            except Exception as e:  # noqa: BLE001 - the harness failed, not the candidate
                self._replace(i)
                return EvalResult("runtime_error", f"evaluator failure ({type(e).__name__}: {e}); the worker was replaced", stage="harness", device=ev.config.device)
        self.stats.slots[self._lane_device[i]].timed_s += result.durations_s.get("timing_s", 0.0)
        return result

    # -------------------------------------------------------------- the pool's interface

    async def evaluate(
        self, task: Task, source: str, *, trusted: bool = False, eager_ms: float | None = None,
        time_it: bool | None = None, timeout_s: float | None = None,
    ) -> EvalResult:
        return await pipeline.evaluate(self, task, source, trusted=trusted, eager_ms=eager_ms, time_it=time_it, timeout_s=timeout_s)

    async def baseline(self, task: Task, mode: str, *, fresh: bool = False) -> EvalResult:
        info = self._slots[0]._info or await self.device_info()
        return await baselines.baseline(self, self._slots[0].cache, info, task, mode, fresh=fresh)

    async def retime(self, task: Task, entries: dict[str, str], max_time_s: float = 3.0, timeout_s: float | None = None) -> dict[str, Timing]:
        await self.references(task)
        async with self._slot() as i:
            return await self._thread(lambda: self._with(i, self._slots[i].retime, task, entries, max_time_s=max_time_s, timeout_s=timeout_s))

    async def profile(self, task: Task, source: str) -> str:
        await self.references(task)
        async with self._slot(CANDIDATE) as i:
            return await self._thread(lambda: self._with(i, self._slots[i].profile, task, source))

    async def reference_meta(self, task: Task) -> dict:
        await self.references(task)
        return await self._thread(lambda: self._slots[0].reference(task).meta)

    async def reference_policy(self, task: Task) -> str:
        await self.references(task)
        return await self._thread(lambda: self._slots[0].reference(task).policy())

    async def device_info(self, toolchain: bool = False) -> dict:
        async with self._slot() as i:
            return await self._thread(self._slots[i].device_info, toolchain)

    def close(self) -> None:
        for ev in self._slots:
            ev.close()
        while self._builders is not None and not self._builders.empty():
            self._builders.get_nowait().close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
