"""Slot accounting of the evaluation pool (what utilisation in the progress display and the store is made of)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pike.evaluate.evaluator import EvalConfig
from pike.evaluate.timing import TimingConfig
from pike.evaluate.pool import EvalPool
from pike.evaluate.slots import CANDIDATE, STARTUP, DeviceGate, SlotQueue, SlotStats
from pike.search.engine import pool_record
from scripted import FUSED, TASK
from pike.task import load_task


def test_a_job_in_progress_counts_as_held():
    st = SlotStats("cuda:0")
    st.take()
    time.sleep(0.05)
    assert st.held() >= 0.05 and st.held_s == 0 and st.jobs == 0  # not yet released, already held
    st.give_back()
    held = st.held()
    assert held >= 0.05 and st.jobs == 1 and st.busy_since is None
    time.sleep(0.02)
    assert st.held() == held  # idle time is not held
    st.give_back()  # a second release without a take changes nothing
    assert st.jobs == 1 and st.held() == held


@pytest.mark.slow
def test_pool_stats_and_record_follow_the_evaluations(tmp_path):
    task = load_task(TASK)

    async def run():
        with EvalPool(EvalConfig(device="cpu", cache_dir=tmp_path), devices=["cpu", "cpu"]) as pool:
            t0 = time.monotonic()
            history: list = []
            rs = await asyncio.gather(*(pool.evaluate(task, FUSED) for _ in range(3)))
            first = pool_record(pool, ["cpu", "cpu"], time.monotonic() - t0, history)
            await pool.evaluate(task, FUSED)
            second = pool_record(pool, ["cpu", "cpu"], time.monotonic() - t0, history)
            return rs, first, second, pool.stats

    rs, first, second, stats = asyncio.run(run())
    assert all(r.status == "ok" for r in rs)
    # References once, then one job per evaluation, spread over both slots.
    assert sum(first["jobs"]) >= 4 and all(j >= 1 for j in first["jobs"])
    assert sum(second["jobs"]) == sum(first["jobs"]) + 1
    assert all(0 < f <= 1 for f in second["held_fraction"])
    assert all(t <= h for t, h in zip(second["timing_fraction"], second["held_fraction"]))
    # The history is shared by the records: cumulative seconds never go down.
    assert second["history"] is first["history"] and len(second["history"]) == 2
    (w0, held0, _, _, _), (w1, held1, _, jobs1, searching) = second["history"]
    assert w1 >= w0 and all(b >= a for a, b in zip(held0, held1)) and jobs1 == second["jobs"] and searching == 0
    assert stats.waiting == 0 and stats.building == 0


def test_gpu_slots_compile_wide_and_time_on_their_own_cores(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    with EvalPool(EvalConfig(device="cuda", cache_dir=tmp_path), devices=["cuda:0", "cuda:1"]) as pool:
        boxes = [ev.sandbox for ev in pool._slots]
    builds = tuple(range(4, 16))
    assert boxes[0].timing_cpus == (0, 1) and boxes[0].cpus == (0, 1, *builds)
    assert boxes[1].timing_cpus == (2, 3) and boxes[1].cpus == (2, 3, *builds)
    # Never another slot's timing cores, not even while compiling.
    assert not {2, 3} & set(boxes[0].cpus)


def test_pools_are_sized_by_the_cpu_affinity_not_the_machine(tmp_path, monkeypatch):
    # Under taskset or a container's cpuset the machine's count would oversubscribe the cores we have.
    from pike.evaluate.build import Builder

    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {32, 33, 34, 35})
    with EvalPool(EvalConfig(device="cpu", cache_dir=tmp_path), devices=["cpu"]) as pool:
        assert pool._n_build == 2
    assert Builder(tmp_path).sandbox.env["MAX_JOBS"] == "2"
    assert Builder(tmp_path, cpu_affinity=(34, 35)).sandbox.env["MAX_JOBS"] == "1"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32, 48)))
    with EvalPool(EvalConfig(device="cuda", cache_dir=tmp_path), devices=["cuda:0", "cuda:1"]) as pool:
        # Builds get the 12 cores left after two slots' timing cores; nothing outside the affinity.
        assert pool._n_build == 6 and pool._build_cores == tuple(range(36, 48))
        assert pool._slots[0].sandbox.timing_cpus == (32, 33)


PIN_SCRIPT = """
import os, threading, time, torch
from pike.evaluate.harness import configure, pin_for_timing
configure(timing_cpus=[1])
os.sched_setaffinity(0, {0, 1})
stop = threading.Event()
t = threading.Thread(target=stop.wait)
t.start()
pin_for_timing()
tids = [int(x) for x in os.listdir("/proc/self/task")]
print(sorted({tuple(sorted(os.sched_getaffinity(tid))) for tid in tids}), torch.get_num_threads(), len(tids) > 1)
stop.set()
"""


def test_pin_for_timing_moves_every_thread(tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores")
    p = subprocess.run([sys.executable, "-c", PIN_SCRIPT], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    # A thread started before the call was moved too (sched_setaffinity(0) alone would move one).
    assert p.stdout.split() == ["[(1,)]", "1", "True"]


def test_free_slots_go_to_start_up_work_before_queued_candidates():
    """With every slot busy, a task's start-up (references, baselines) is served before candidates that
    queued earlier; among equals, first come first served; a cancelled waiter never swallows a slot."""

    async def scenario():
        q = SlotQueue(1)
        held = await q.get(CANDIDATE)
        order = []

        async def waiter(name, priority):
            i = await q.get(priority)
            order.append(name)
            q.put(i)

        tasks = [asyncio.create_task(waiter("cand1", CANDIDATE)), asyncio.create_task(waiter("cand2", CANDIDATE))]
        await asyncio.sleep(0)
        gone = asyncio.create_task(waiter("cancelled", STARTUP))
        tasks.append(asyncio.create_task(waiter("startup", STARTUP)))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        q.put(held)
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert order == ["startup", "cand1", "cand2"]
        assert await asyncio.wait_for(q.get(CANDIDATE), 1) == 0  # the slot came back

    asyncio.run(scenario())


SLOW_INIT = """
import time


class ModelNew(Model):
    def __init__(self, *args):
        time.sleep(2.0)  # {tag}: construction that needs no device
        super().__init__(*args)
"""


@pytest.mark.slow
def test_lanes_prepare_the_next_candidates_outside_the_device(tmp_path):
    """With two lanes, a candidate's import and construction run while another holds the device, and the
    device's held time is only what the gated part took; with one lane the slot is held throughout."""
    from pike.task import load_task

    task = load_task(Path(__file__).parent / "tasks" / "ln_mlp.py", size="small")
    sources = [task.source + SLOW_INIT.replace("{tag}", f"candidate {i}") for i in range(3)]

    async def run(lanes: int):
        cfg = EvalConfig(cache_dir=tmp_path / "cache", timeout_s=60, timing=TimingConfig(warmup_ms=5, max_time_s=0.1))
        with EvalPool(cfg, devices=["cpu"], lanes=lanes) as pool:
            await pool.reference_meta(task)
            held0 = pool.stats.slots[0].held()
            results = await asyncio.gather(*(pool.evaluate(task, s, trusted=True) for s in sources))
            return [r.status for r in results], pool.stats.slots[0].held() - held0, pool.size

    statuses, held_two, size = asyncio.run(run(2))
    assert statuses == ["ok"] * 3 and size == 2
    statuses, held_one, size = asyncio.run(run(1))
    assert statuses == ["ok"] * 3 and size == 1
    # One lane holds the device through the three 2 s sleeps in __init__; two lanes sleep outside it.
    assert held_one >= 3 * 2.0
    assert held_two < held_one - 3.0, (held_one, held_two)


def _overlap(a, b) -> bool:
    return a[1] < b[2] and b[1] < a[2]


def test_device_gate_shares_checks_and_keeps_timing_alone():
    """Shared holders run together; an exclusive holder waits for them and keeps new shared holders
    out meanwhile; the exclusive holder's nested holds pass; held time is the union of all holds."""
    st = SlotStats("cuda:0")
    gate = DeviceGate(st)
    events, lock = [], threading.Lock()

    def note(what):
        with lock:
            events.append(what)

    def checker(name, hold_s):
        gate.acquire(shared=True)
        note(f"{name} in")
        time.sleep(hold_s)
        note(f"{name} out")
        gate.release()

    a = threading.Thread(target=checker, args=("a", 0.4))
    a.start()
    time.sleep(0.05)
    b = threading.Thread(target=checker, args=("b", 0.4))
    b.start()
    time.sleep(0.05)
    assert events == ["a in", "b in"]  # both share it

    def timer():
        with gate:
            note("timer in")
            gate.acquire(shared=True)  # its own nested evaluation passes
            gate.acquire()
            gate.release()
            gate.release()
            time.sleep(0.1)
            note("timer out")

    t = threading.Thread(target=timer)
    t.start()
    time.sleep(0.05)
    late = threading.Thread(target=checker, args=("late", 0.05))
    late.start()  # arrives while the timer waits: goes after it
    for th in (a, b, t, late):
        th.join(5)
    assert events.index("timer in") > max(events.index("a out"), events.index("b out"))
    assert events.index("late in") > events.index("timer out")
    modes = [h[0] for h in gate.history]
    assert sorted(modes) == ["exclusive", "shared", "shared", "shared"]
    excl = [h for h in gate.history if h[0] == "exclusive"]
    assert not any(_overlap(excl[0], h) for h in gate.history if h is not excl[0])
    # Three holds (a and b together, the timer, late), each counted once: b's 0.35 s inside a's 0.4 s
    # is not added again.
    assert st.jobs == 3 and st.busy_since is None and 0.5 < st.held_s < 0.8, st


def test_device_gate_upgrade_waits_for_the_other_shared_holders():
    gate = DeviceGate(SlotStats("cuda:0"))
    order = []

    def other():
        gate.acquire(shared=True)
        time.sleep(0.3)
        order.append("other done")
        gate.release()

    gate.acquire(shared=True)
    th = threading.Thread(target=other)
    th.start()
    time.sleep(0.05)
    gate.upgrade()
    order.append("timing")
    gate.upgrade()  # already exclusive: nothing
    gate.release()
    th.join(5)
    assert order == ["other done", "timing"]
    with pytest.raises(RuntimeError, match="release"):
        gate.acquire(shared=True)
        try:
            gate.acquire(shared=True)
        finally:
            gate.release()


def _on_two_lanes(tmp_path, share: bool, task, sources: list[str]):
    """Evaluate ``sources`` at once on one CPU device with two lanes; their results and the device
    gate's holds (mode, start, end) while they ran."""

    async def run():
        cfg = EvalConfig(cache_dir=tmp_path / "cache", timeout_s=60, timing=TimingConfig(warmup_ms=5, max_time_s=0.1))
        with EvalPool(cfg, devices=["cpu"], lanes=2, share_checks=share) as pool:
            await pool.reference_meta(task)
            gate = pool._gates[0]
            gate.history.clear()
            results = await asyncio.gather(*(pool.evaluate(task, s, trusted=True) for s in sources))
            return results, list(gate.history)

    return asyncio.run(run())


SLOW_CHECKS = """
import time

_calls = [0]


class ModelNew(Model):
    def forward(self, *args):
        _calls[0] += 1
        if _calls[0] <= 6:
            time.sleep(0.4)  # {tag}: the checks' calls are slow (as a compile would be), the timing's are not
        return super().forward(*args)
"""


@pytest.mark.slow
@pytest.mark.parametrize("share", [True, False])
def test_lanes_share_the_checks_and_time_alone(tmp_path, share):
    """With two lanes and shared checks, two candidates' checks overlap on the device while every
    timing holds it alone; with share_checks off, every hold is exclusive."""
    task = load_task(Path(__file__).parent / "tasks" / "ln_mlp.py", size="small")
    sources = [task.source + SLOW_CHECKS.replace("{tag}", f"candidate {i}") for i in range(3)]

    results, history = _on_two_lanes(tmp_path, share, task, sources)
    assert [r.status for r in results] == ["ok"] * 3
    excl = [h for h in history if h[0] == "exclusive"]
    shared = [h for h in history if h[0] == "shared"]
    for e in excl:
        assert not any(_overlap(e, h) for h in history if h is not e), history
    if share:
        assert len(shared) == 3 and len(excl) == 3  # each candidate: checks shared, then its timing alone
        assert any(_overlap(x, y) for i, x in enumerate(shared) for y in shared[i + 1:]), history
    else:
        assert not shared and len(excl) == 3


OOM_ONCE = """
import os


class ModelNew(Model):
    def forward(self, *args):
        if not os.path.exists({marker!r}):
            open({marker!r}, "w").close()
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (a stand-in for a neighbour's memory)")
        return super().forward(*args)
"""


@pytest.mark.slow
@pytest.mark.parametrize("share", [True, False])
def test_a_candidate_out_of_memory_while_sharing_is_evaluated_again_alone(tmp_path, share):
    task = load_task(Path(__file__).parent / "tasks" / "ln_mlp.py", size="small")
    source = task.source + OOM_ONCE.format(marker=str(tmp_path / "oom-once"))

    (r,), history = _on_two_lanes(tmp_path, share, task, [source])
    modes = [h[0] for h in history]
    if share:
        assert r.status == "ok", r.message
        assert modes == ["shared", "exclusive"]  # the failed try shared it; the second held it alone throughout
    else:
        assert r.status == "runtime_error" and "out of memory" in r.message
        assert modes == ["exclusive"]


def test_the_ray_pool_offers_every_call_the_search_makes_on_a_pool():
    """The engine talks to either pool through one interface; a call missing on Ray fails only on a cluster."""
    import inspect
    import re

    from pike.evaluate.ray_pool import RayPool, _Worker

    src = Path(__file__).resolve().parents[1] / "src" / "pike"
    calls = {m for f in src.rglob("*.py") if f.parent.name != "evaluate"
             for m in re.findall(r"\bpool\.([a-z_]+)\(", f.read_text())}
    calls.discard("physical_gpus")  # asked only where a pool has it (local GPUs)
    assert {"evaluate", "baseline", "reference_policy"} <= calls
    assert calls <= {n for n, _ in inspect.getmembers(RayPool, inspect.iscoroutinefunction)}
    assert calls <= {n for n, _ in inspect.getmembers(_Worker, inspect.isfunction)}
