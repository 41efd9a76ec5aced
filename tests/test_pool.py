"""Slot accounting of the evaluation pool (what utilisation in the progress display and the store is made of)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pike.evaluate.evaluator import EvalConfig
from pike.evaluate.timing import TimingConfig
from pike.evaluate.pool import CANDIDATE, STARTUP, EvalPool, SlotQueue, SlotStats
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
        envs = [ev.child_env for ev in pool._slots]
    builds = ",".join(map(str, range(4, 16)))
    assert envs[0]["PIKE_TIMING_CPUS"] == "0,1" and envs[0]["PIKE_CPU_AFFINITY"] == f"0,1,{builds}"
    assert envs[1]["PIKE_TIMING_CPUS"] == "2,3" and envs[1]["PIKE_CPU_AFFINITY"] == f"2,3,{builds}"
    # Never another slot's timing cores, not even while compiling.
    assert not {"2", "3"} & set(envs[0]["PIKE_CPU_AFFINITY"].split(","))


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
        assert pool._slots[0].child_env["PIKE_TIMING_CPUS"] == "32,33"


PIN_SCRIPT = """
import os, threading, time, torch
from pike.evaluate.harness import pin_for_timing
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
    env = {**os.environ, "PIKE_TIMING_CPUS": "1"}
    p = subprocess.run([sys.executable, "-c", PIN_SCRIPT], capture_output=True, text=True, env=env, timeout=120)
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
