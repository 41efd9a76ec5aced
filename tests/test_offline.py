"""`pike optimize` with no LLM: the offline strategy end to end through the real CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from llm_server import FakeLLMServer, Reply, last_user_message

from pike.knobs import VariantKnobs
from pike.search.variants import promising, variants
from pike.task import load_task

HERE = Path(__file__).parent
TASK = HERE / "tasks" / "ln_mlp.py"


def run(tmp_path, *args, env=None):
    env = {**os.environ, "PIKE_CACHE_DIR": str(tmp_path / "cache"), "NO_PROXY": "127.0.0.1,localhost", **(env or {})}
    p = subprocess.run([sys.executable, "-m", "pike", "optimize", *args], capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    return p


@pytest.mark.slow
def test_offline_optimize_writes_best_and_table(tmp_path):
    out = tmp_path / "run"
    p = run(tmp_path, str(TASK), "--out", str(out), "--json")
    doc = json.loads(p.stdout)
    row = doc["rows"][0]
    # Eager is one of the candidates and a slower winner falls back to it: never below 1.0.
    assert row["speedup_eager"] >= 1.0 and row["eager_ms"] > 0 and row["compile_ms"] > 0
    assert row["queries"] == 0 and row["usd"] == 0
    best = (out / "best" / "ln_mlp.py").read_text()
    assert "class Model" in best or "class ModelNew" in best
    # What confined candidate code: in the header, the summary, the store and a solution's file.
    assert "sandbox: bwrap" in p.stderr and doc["sandbox"]["backend"] == "bwrap"
    assert "Sandbox: bwrap" in best or "this is eager PyTorch" in best
    con = sqlite3.connect(out / "run.db")
    assert json.loads(con.execute("SELECT value FROM meta WHERE key = 'sandbox'").fetchone()[0])["confined"]
    names = {r[0] for r in con.execute("SELECT idea FROM solutions WHERE origin = 'offline'")}
    assert {"eager", "compile:default", "bf16_autocast"} <= names
    state = json.loads(con.execute("SELECT state FROM tasks").fetchone()[0])
    # The final table's own duration (its compiles and re-timing), for whoever schedules runs.
    assert 0 < state["final"]["duration_s"] < 900
    # Variants that do not apply on the CPU are skipped with the reason recorded.
    assert "cuda_graph" in state["skipped"] and "CUDA" in state["skipped"]["cuda_graph"]
    # Combinations come after their knobs alone, and only those whose knobs each helped on their own
    # are evaluated.
    rows = {r[0]: (r[1] == "ok", r[2]) for r in con.execute("SELECT idea, status, runtime_ms FROM solutions WHERE origin = 'offline'")}
    alone = {k: v for k, v in rows.items() if "+" not in k}
    combos = [v for v in variants(load_task(TASK), "cpu") if len(v.knobs) > 1 and v.applies]
    assert combos
    for v in combos:
        why = promising(v.knobs, alone, alone["eager"][1])
        assert (v.name in rows) == (why == ""), (v.name, why)
        if why:
            assert state["skipped"][v.name] == f"not tried: {why}"
    assert (out / "config.toml").read_text().count('strategy = "offline"') == 1
    # The final table took compile:default's result from the portfolio's own evaluation of it
    # instead of compiling it again, and no compile baseline ran before the search either (the
    # prompts' "vs compile" figure; a recurrent task's compile took its whole time limit there):
    # eager is the only baseline this run measured.
    assert len(list((tmp_path / "cache" / "baselines").glob("*.json"))) == 1
    baselines = json.loads(con.execute("SELECT baselines FROM tasks").fetchone()[0])
    status, ms = con.execute("SELECT status, runtime_ms FROM solutions WHERE idea = 'compile:default'").fetchone()
    assert baselines["compile:default"]["status"] == status == "ok"
    assert baselines["compile:default"]["runtime_ms"] == ms


@pytest.mark.slow
def test_offline_winner_seeds_the_llm_search(tmp_path):
    fused = (HERE / "candidates" / "ln_fused.py").read_text()
    seen_parents = []

    def responder(req):
        text = last_user_message(req)
        if text.startswith("Brainstorm"):
            return Reply("1. Fuse the bias into addmm.")
        seen_parents.append(text)
        return Reply(f"```python\n{fused}\n```")

    with FakeLLMServer(responder) as server:
        out = tmp_path / "run"
        p = run(tmp_path, str(TASK), "--out", str(out), "--llm", server.model_string("m"), "--strategy", "pike-b",
                "--budget", "2", "--set", "search.pike_b.num_branches=2", "--set", "search.pike_b.top_k=1", "--seed-offline", "--json")
    con = sqlite3.connect(out / "run.db")
    origins = [r[0] for r in con.execute("SELECT origin FROM solutions ORDER BY id")]
    assert origins[0] == "offline" and "coa" in origins
    coa_parents = {r[0] for r in con.execute("SELECT parent_id FROM solutions WHERE origin = 'coa' AND phase = 0")}
    offline = con.execute("SELECT id, code, runtime_ms FROM solutions WHERE origin = 'offline' AND status = 'ok' ORDER BY runtime_ms, id").fetchall()
    task_source = TASK.read_text()
    # Phase 0 started from the offline winner (the reference when eager itself won).
    expected = None if offline[0][1] == task_source else offline[0][0]
    assert coa_parents == {expected}
    assert json.loads(p.stdout)["queries"] == 2


@pytest.mark.slow
def test_time_limit_stops_the_portfolio_and_a_resume_finishes_it(tmp_path):
    out = tmp_path / "run"
    # The limit is over before the portfolio starts (the eager baseline comes first): nothing is
    # tried, yet the run ends properly, with its table and a valid best file. The final table's
    # compile:default baseline joins the portfolio as its only evaluation (and wins if faster).
    p = run(tmp_path, str(TASK), "--out", str(out), "--time-limit", "0.0001", "--json")
    row = json.loads(p.stdout)["rows"][0]
    assert row["status"] == "stopped" and row["evaluated"] == 1
    con = sqlite3.connect(out / "run.db")
    assert [r[0] for r in con.execute("SELECT idea FROM solutions")] == ["compile:default"]
    best = (out / "best" / "ln_mlp.py").read_text()
    if row["fallback"]:
        assert "this is eager PyTorch" in best and "class Model(" in best
    else:
        assert "compile:default" in best and row["speedup_compile"] == 1.0
    state = json.loads(con.execute("SELECT state FROM tasks").fetchone()[0])
    assert state["stopped"] == "time limit" and state["skipped"]["eager"] == "not tried: time limit"
    con.close()
    # The task was stopped, not done: a resume (with a longer limit) tries what the limit left out.
    p = run(tmp_path, "--resume", str(out), "--time-limit", "30", "--json")
    row = json.loads(p.stdout)["rows"][0]
    assert row["status"] == "done" and row["evaluated"] >= 2 and row["valid"] >= 1
    con = sqlite3.connect(out / "run.db")
    state = json.loads(con.execute("SELECT state FROM tasks").fetchone()[0])
    assert "not tried: time limit" not in state["skipped"].values() and state["stopped"] is None


def test_final_table_reuses_the_portfolios_compile_results_and_respects_the_time_limit():
    from types import SimpleNamespace

    from pike.evaluate.result import EvalResult
    from pike.search.output import compile_plan

    results = {1: EvalResult(status="ok"), 2: EvalResult(status="timeout"), 3: EvalResult(status="ok")}
    sols = [SimpleNamespace(id=1, origin="offline", knobs=VariantKnobs("default")),
            SimpleNamespace(id=2, origin="offline", knobs=VariantKnobs("max-autotune-no-cudagraphs")),
            SimpleNamespace(id=3, origin="offline", knobs=VariantKnobs("reduce-overhead", tf32=True)),  # a combination: not the baseline
            SimpleNamespace(id=4, origin="coa", idea="compile:reduce-overhead", knobs=None)]  # an LLM's: not PIKE's own code
    modes = ("default", "max-autotune-no-cudagraphs", "reduce-overhead")

    def fake_run(stopped):
        return SimpleNamespace(solutions=sols, store=SimpleNamespace(evaluation=results.get),
                               state=lambda: {"stopped": stopped})

    known, measure, skipped = compile_plan(fake_run(None), modes)
    # The mode that timed out in the search is not compiled again (it would time out again).
    assert {m: r.status for m, r in known.items()} == {"default": "ok", "max-autotune-no-cudagraphs": "timeout"}
    assert measure == ["reduce-overhead"] and skipped == []
    known, measure, skipped = compile_plan(fake_run("time limit"), modes)
    assert measure == [] and skipped == ["reduce-overhead"]
    # An LLM strategy's run has no portfolio: every mode is measured, or only default after a time limit.
    empty = SimpleNamespace(solutions=[], store=None, state=lambda: {"stopped": "time limit"})
    assert compile_plan(empty, modes) == ({}, ["default"], ["max-autotune-no-cudagraphs", "reduce-overhead"])


def test_final_retiming_gets_the_time_its_compiles_took():
    from types import SimpleNamespace

    from pike.evaluate.result import EvalResult
    from pike.search.output import retime_timeout

    def res(status, total_s):
        return EvalResult(status=status, durations_s={"total_s": total_s})

    compiles = {"default": res("ok", 30.0), "reduce-overhead": res("ok", 142.0), "max-autotune-no-cudagraphs": res("timeout", 300.0)}
    store = SimpleNamespace(evaluation={7: res("ok", 150.0)}.get)
    run = SimpleNamespace(store=store, cfg=SimpleNamespace(eval=SimpleNamespace(timeout_s=300.0)))
    # Twice what the compiled entries took (a timed-out mode is not re-timed), plus a minute.
    assert retime_timeout(run, compiles, [SimpleNamespace(id=7)]) == 60 + 2 * (30 + 142 + 150)
    # Never below the evaluator's own timeout; nothing known: the evaluator's default.
    assert retime_timeout(run, {"default": res("ok", 5.0)}, []) == 300.0
    assert retime_timeout(run, {}, []) is None


def test_a_compile_variant_is_timed_once_as_its_baseline(monkeypatch):
    """The offline compile:MODE variant and the compile:MODE baseline are one program: the final table
    re-times it once, and the winner's figure is the baseline's (not 0.99x against itself)."""
    import asyncio
    from types import SimpleNamespace

    from pike.evaluate.result import EvalResult, Timing
    from pike.search import output

    def ok(ms):
        return EvalResult(status="ok", timing=Timing(median_ms=ms, iqr_ms=0.0, runs=5), durations_s={"total_s": 1.0})

    sols = [SimpleNamespace(id=1, origin="offline", idea="compile:default", knobs=VariantKnobs("default"), code="variant",
                            runtime_ms=9.0, tags=[]),
            SimpleNamespace(id=2, origin="offline", idea="tf32", knobs=VariantKnobs(tf32=True), code="tf32 variant",
                            runtime_ms=9.5, tags=[])]
    evals = {1: ok(9.0), 2: ok(9.5)}
    asked = {}

    async def retime(task, entries, max_time_s=3.0, timeout_s=None):
        asked.update(entries)
        ms = {"eager": 20.0, "compile:default": 10.0, "solution:2": 10.4}
        return {k: SimpleNamespace(samples_ms=_rounds(ms[k])) for k in entries}

    async def baseline(task, mode):
        raise AssertionError("default's result is the variant's")

    async def reference_meta(task):
        return {}

    state, windows = {}, []
    run = SimpleNamespace(
        task=SimpleNamespace(source="eager source", name="t"), task_id=1, eager_ms=20.0, solutions=sols,
        store=SimpleNamespace(evaluation=evals.get, task_json=lambda *a: {}, set_task=lambda *a, **k: None,
                              add_retiming=lambda tid, purpose, rows: windows.append((purpose, rows))),
        pool=SimpleNamespace(retime=retime, baseline=baseline, reference_meta=reference_meta),
        contenders=lambda n: sols, ok_solutions=lambda: sols, state=lambda: state,
        save_state=lambda **v: state.update(v), notify=lambda *a, **k: None,
        cfg=SimpleNamespace(eval=SimpleNamespace(timeout_s=300.0, noisy_spread=0.1, final_retime_s=3.0, objective="latency"), search=SimpleNamespace(strategy="offline")))
    monkeypatch.setattr(output, "write_best", lambda *a: None)
    final = asyncio.run(output.finalize_task(run, Path("."), modes=("default",)))
    assert "solution:1" not in asked and {"eager", "compile:default", "solution:2"} <= set(asked)
    assert final["best_solution"] == 1 and final["best_ms"] == final["compile_ms"]["default"] == 10.0
    assert final["best_is_compile"] == "default" and final["finalists_ms"] == {"1": 10.0, "2": 10.4}
    assert final["delivered"] == "compile:default" and final["intervals"]["eager"]["lo"] > 1.9
    # The final re-timing is kept in the store: each entry's samples, the speedup vs eager of all but eager.
    [(purpose, rows)] = windows
    by = {r.get("baseline") or f"solution:{r['solution_id']}": r for r in rows}
    assert purpose == "final" and set(by) == set(asked) and by["eager"]["speedup"] is None
    assert by["compile:default"]["speedup"].lo > 1.9 and all(len(r["samples"]) > 1 for r in rows)


def _rounds(ms: float, n: int = 20) -> list[float]:
    """A re-timing's rounds of one entry: every round the same load (+-1%), median ``ms``."""
    return [ms * (1 + 0.01 * (i % 3 - 1)) for i in range(n)]


def test_a_stopped_offline_run_adopts_the_compile_baseline_it_measured(tmp_path, monkeypatch):
    """The time limit came before the portfolio's compile:default; the final table measured it as a
    baseline (checked and timed by the same evaluator): it joins the portfolio and wins, so the
    offline result is not slower than the torch.compile it reports. An LLM strategy keeps its own."""
    import asyncio
    from types import SimpleNamespace

    from pike.config import RunConfig
    from pike.evaluate.result import EvalResult, Timing
    from pike.search import output
    from pike.search.taskrun import TaskRun
    from pike.store import Store

    def ok(ms):
        return EvalResult(status="ok", timing=Timing(median_ms=ms, iqr_ms=0.0, runs=5), durations_s={"total_s": 1.0})

    async def baseline(task, mode):
        return ok(10.0)

    async def retime(task, entries, max_time_s=3.0, timeout_s=None):
        ms = {"eager": 20.0, "compile:default": 10.0}
        return {k: SimpleNamespace(samples_ms=_rounds(ms.get(k, 15.0))) for k in entries}

    async def reference_meta(task):
        return {}

    monkeypatch.setattr(output, "write_best", lambda *a: None)
    task = load_task(TASK)
    for strategy, adopted in [("offline", True), ("pike-b-plus", False)]:
        store = Store(tmp_path / f"{strategy}.db")
        tid = store.add_task(task.name, str(task.path), task.size, task.source, task.key)
        for idea, ms in [("eager", 20.0), ("tf32", 15.0)]:
            knobs = VariantKnobs.of(() if idea == "eager" else (idea,))
            store.record_evaluation(store.add_solution(tid, task.source if idea == "eager" else f"# {idea}", "offline",
                                                       idea=idea, knobs=knobs), ok(ms))
        cfg = RunConfig()
        cfg.search.strategy = strategy
        pool = SimpleNamespace(baseline=baseline, retime=retime, reference_meta=reference_meta)
        run = TaskRun(task, tid, cfg, store, pool, eager_ms=20.0)
        run.save_state(stopped="time limit")
        final = asyncio.run(output.finalize_task(run, tmp_path, modes=("default",)))
        adoptee = [s for s in store.solutions(tid) if s.idea == "compile:default"]
        assert bool(adoptee) is adopted
        if adopted:
            assert adoptee[0].status == "ok" and adoptee[0].runtime_ms == 10.0
            assert final["best_solution"] == adoptee[0].id and final["best_ms"] == 10.0 and final["best_is_compile"] == "default"
        else:  # its own candidate is slower than the compile it measured: the baseline is delivered
            assert final["best_ms"] == 10.0 and final["delivered"] == "compile:default" and final["best_solution"] is None
        store.close()


def _variant_name(code: str) -> str:
    """The offline variant a solution file is (its generated header names it); eager has none."""
    head = code.split("# ==== PIKE offline variant: ", 1)
    return head[1].split(" ", 1)[0] if len(head) > 1 else "eager"


def _offline_run(tmp_path, name, pool, deadline=None):
    from pike.config import RunConfig
    from pike.search.taskrun import TaskRun
    from pike.store import Store

    task = load_task(TASK)
    store = Store(tmp_path / f"{name}.db")
    tid = store.add_task(task.name, str(task.path), task.size, task.source, task.key)
    cfg = RunConfig()
    cfg.search.strategy = "offline"
    cfg.eval.device = "cuda"  # the CUDA portfolio (rendered only: the pool below evaluates nothing)
    run = TaskRun(task, tid, cfg, store, pool, eager_ms=10.0)
    run.deadline = deadline
    return cfg, store, tid, run


def test_the_portfolio_runs_its_cheap_combinations_before_any_compile(tmp_path):
    """A GPU portfolio's order, through the strategy itself: eager and the knobs that need no compile,
    their combinations, then the compile modes, then combinations with the fastest of them. A time
    limit thus cuts compiles (minutes each on recurrent tasks), not seconds-long winners such as an
    fp16 CUDA graph. The limit's cut shows as "not tried: time limit", which a resume tries again."""
    import asyncio
    import time
    from types import SimpleNamespace

    from pike.evaluate.result import EvalResult, Timing
    from pike.search.offline import Offline

    ms = {"eager": 10.0, "cuda_graph": 6.0, "tf32": 9.0, "fp16_autocast": 9.5, "bf16_autocast": 12.0,
          "compile:default": 8.0, "compile:reduce-overhead": 7.0, "compile:max-autotune-no-cudagraphs": 7.5}
    order, clock = [], {"deadline_after": None}

    async def evaluate(task, code, trusted=False, eager_ms=None, timeout_s=None):
        name = _variant_name(code)
        order.append(name)
        if clock["deadline_after"] == name:
            run.deadline = time.monotonic() - 1  # the time limit passes during this evaluation
        return EvalResult(status="ok", timing=Timing(median_ms=ms.get(name, 5.0), iqr_ms=0.0, runs=5))

    pool = SimpleNamespace(evaluate=evaluate, size=1)
    cfg, store, tid, run = _offline_run(tmp_path, "order", pool)
    asyncio.run(Offline(cfg).run(run))
    first_compile = next(i for i, n in enumerate(order) if "compile:" in n)
    assert order[0] == "eager" and not any("compile:" in n for n in order[:first_compile])
    assert {"fp16_autocast+cuda_graph", "tf32+cuda_graph"} <= set(order[:first_compile])
    assert "bf16_autocast+cuda_graph" not in order  # bf16 was slower than eager alone
    # The compile combinations use the fastest single mode (reduce-overhead) and come last.
    singles_done = order.index("compile:max-autotune-no-cudagraphs")
    assert all("+" in n and "compile:reduce-overhead" in n for n in order[singles_done + 1:] if "compile:" in n)
    assert "tf32+compile:reduce-overhead" in order[singles_done + 1:]
    store.close()

    # The limit passes during the first compile: the rest is recorded as left by the limit (not as
    # "not worth trying"), and a resume evaluates exactly what was left.
    order.clear()
    clock["deadline_after"] = "compile:default"
    cfg, store, tid, run = _offline_run(tmp_path, "cut", pool)
    asyncio.run(Offline(cfg).run(run))
    cut = list(order)
    assert cut[-1] == "compile:default" and "fp16_autocast+cuda_graph" in cut
    skipped = run.state()["skipped"]
    assert skipped["compile:reduce-overhead"] == "not tried: time limit"
    assert skipped["tf32+compile:reduce-overhead"] == "not tried: time limit"
    order.clear()
    clock["deadline_after"] = None
    run.deadline = None
    asyncio.run(Offline(cfg).run(run))
    assert not set(order) & set(cut) and "compile:reduce-overhead" in order and "tf32+compile:reduce-overhead" in order
    assert "not tried: time limit" not in run.state()["skipped"].values()
    assert run.state()["skipped"]["bf16_autocast+cuda_graph"].startswith("not tried: bf16_autocast was 1.20x")
    # Resumed with every combination asked for: the one left out is tried, and its old reason goes.
    order.clear()
    cfg.search.offline.combos = "all"
    asyncio.run(Offline(cfg).run(run))
    assert "bf16_autocast+cuda_graph" in order and "bf16_autocast+cuda_graph" not in run.state()["skipped"]
    store.close()


def test_a_variant_in_flight_at_the_time_limit_is_stopped_there_and_resumed_later(tmp_path):
    """The evaluation under way at the limit gets only the time left (not the evaluator's 300 s: a
    max-autotune compile started just before a 1.5-minute limit held an H200 run for 5 minutes); it
    is not recorded, and a resume evaluates it in full."""
    import asyncio
    import time
    from types import SimpleNamespace

    from pike.evaluate.result import EvalResult, Timing
    from pike.search.offline import Offline

    given = {}

    async def evaluate(task, code, trusted=False, eager_ms=None, timeout_s=None):
        name = _variant_name(code)
        given[name] = timeout_s
        if name == "compile:default" and timeout_s is not None:
            run.deadline = time.monotonic() - 1  # the evaluator killed it at timeout_s: the limit is over
            return EvalResult(status="timeout", message=f"ran longer than {timeout_s} s")
        return EvalResult(status="ok", timing=Timing(median_ms=5.0, iqr_ms=0.0, runs=5))

    cfg, store, tid, run = _offline_run(tmp_path, "inflight", SimpleNamespace(evaluate=evaluate, size=1),
                                        deadline=time.monotonic() + 3600)
    cfg.eval.timeout_s = 300.0
    asyncio.run(Offline(cfg).run(run))
    assert set(given.values()) == {None}  # an hour left: the evaluator's own timeout applies
    given.clear()
    cfg, store, tid, run = _offline_run(tmp_path, "cut", SimpleNamespace(evaluate=evaluate, size=1),
                                        deadline=time.monotonic() + 120)
    asyncio.run(Offline(cfg).run(run))
    assert 1.0 <= given["compile:default"] <= 120 and given["eager"] <= 120
    status = {s.idea: s.status for s in store.solutions(tid)}
    assert status["compile:default"] == "pending" and store.evaluation(
        next(s.id for s in store.solutions(tid) if s.idea == "compile:default")) is None
    assert run.state()["skipped"]["compile:default"] == "not tried: time limit"
    # A resume with no limit evaluates it in full, in the same solution.
    given.clear()
    run.deadline = None
    asyncio.run(Offline(cfg).run(run))
    assert given["compile:default"] is None
    assert {s.idea: s.status for s in store.solutions(tid)}["compile:default"] == "ok"
    assert sum(s.idea == "compile:default" for s in store.solutions(tid)) == 1
    store.close()
