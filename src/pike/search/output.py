"""A task's final numbers and its ``best/<task>.py``; the per-task table of a run.

Final numbers come from an interleaved re-timing (eager, each correct torch.compile mode and the top
few solutions, A B A B ... in one process): the best of hundreds of noisy search timings is
inflated, so the finalists are ranked again by that re-timing.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from pike.evaluate.baselines import baseline_source
from pike.evaluate.devices import driver_version
from pike.evaluate.static import lowered_precision
from pike.store import Store


FINALISTS = 3  # top candidates by search timing re-timed side by side; the fastest of them wins


def compile_plan(run, modes: tuple[str, ...]) -> tuple[dict, list[str], list[str]]:
    """(results this run already has, modes still to measure, modes skipped) for the final table.

    The offline portfolio's single ``compile:MODE`` variant is the same torch.compile(mode) of the
    task's Model as that baseline, so its result stands for it: on the GPU a second compile cost
    minutes per task, and a mode that timed out in the search (max-autotune on a recurrent task,
    > 300 s) timed out again in the final table. A run stopped by its time limit starts no new
    compile but default (the table's "vs compile" column)."""
    known: dict = {}
    for s in run.solutions:
        mode = (s.idea or "").removeprefix("compile:")
        if s.origin == "offline" and s.idea == f"compile:{mode}" and mode in modes and mode not in known:
            result = run.store.evaluation(s.id)
            if result is not None:
                known[mode] = result
    rest = [m for m in modes if m not in known]
    if run.state().get("stopped") == "time limit":
        return known, [m for m in rest if m == "default"], [m for m in rest if m != "default"]
    return known, rest, []


def adopt_compile_baselines(run, compiles: dict) -> list[int]:
    """An offline run's compile:MODE variants that its time limit left out, but that the final table
    measured as baselines: the same program, checked and timed by the same evaluator, so they join
    the portfolio as its own evaluations and can win. Without this a stopped run could end slower
    than the torch.compile it measured (rwkv_time_mix: eager kept at 0.58x of compile default)."""
    have = {s.idea for s in run.solutions if s.origin == "offline"}
    added = []
    for mode, result in compiles.items():
        if result.ok and f"compile:{mode}" not in have:
            sid = run.store.add_solution(run.task_id, baseline_source(run.task, mode), "offline", idea=f"compile:{mode}")
            run.store.record_evaluation(sid, result)
            added.append(sid)
    return added


def same_program_mode(best, measured) -> str | None:
    """The compile mode whose baseline is the same program as ``best`` (the offline ``compile:MODE``
    variant), when that baseline was measured (``measured``: the modes, or a dict keyed by them)."""
    if best is None or best.origin != "offline" or not (best.idea or "").startswith("compile:"):
        return None
    mode = best.idea.removeprefix("compile:")
    return mode if mode in measured else None


def retime_timeout(run, compiles: dict, finalists) -> float | None:
    """The re-timing process compiles every compiled entry again: give it what their evaluations took
    in this run (twice, plus a minute), or the evaluator's default when that is longer. A recurrent
    task's compile modes alone took over 5 minutes on an H200, past the default."""
    spent = [r.durations_s.get("total_s") or 0.0 for r in compiles.values() if r.ok]
    for s in finalists:
        r = run.store.evaluation(s.id)
        spent.append((r.durations_s.get("total_s") or 0.0) if r is not None else 0.0)
    need = 60 + 2 * sum(spent)
    return max(need, run.cfg.eval.timeout_s) if spent else None


async def finalize_task(run, run_dir: Path, *, modes: tuple[str, ...], retime: bool = True) -> dict:
    task, store = run.task, run.store
    t0 = time.monotonic()
    known, _, skipped = compile_plan(run, modes)
    compiles = {m: known[m] if m in known else await run.pool.baseline(task, m) for m in modes if m not in skipped}
    if run.cfg.search.strategy == "offline":
        adopt_compile_baselines(run, compiles)
    # Finalists: the best few by search timing, minus the eager model itself (it is timed anyway).
    finalists = [s for s in run.best(FINALISTS + 1) if s.code != task.source][:FINALISTS]
    ok_modes = [m for m, r in compiles.items() if r.ok]
    entries = {"eager": task.source}
    entries.update({f"compile:{m}": baseline_source(task, m) for m in ok_modes})
    # An offline compile:MODE variant is the compile:MODE baseline (one program): timed once, as that.
    entries.update({f"solution:{s.id}": s.code for s in finalists if not same_program_mode(s, ok_modes)})
    timings = {}
    if retime and len(entries) > 1:
        timeout = retime_timeout(run, compiles, finalists)
        timings = {k: t.median_ms for k, t in (await run.pool.retime(task, entries, timeout_s=timeout)).items()}
    eager_ms = timings.get("eager") or run.eager_ms
    compile_ms = {m: timings.get(f"compile:{m}") or compiles[m].runtime_ms for m in ok_modes}
    # The best search timing of hundreds is inflated: the finalists are ranked by their re-timing.
    def retimed(s):
        mode = same_program_mode(s, compile_ms)
        return timings.get(f"compile:{mode}" if mode else f"solution:{s.id}")

    def ms_of(s):
        mode = same_program_mode(s, compile_ms)
        return compile_ms[mode] if mode else (retimed(s) or s.runtime_ms)

    ranked = sorted(finalists, key=lambda s: (ms_of(s), s.id))
    best = ranked[0] if ranked else None
    best_ms = ms_of(best) if best else None
    same_as = same_program_mode(best, compile_ms)
    best_is_eager = best is None and any(s.code == task.source for s in run.ok_solutions())  # offline's eager
    retimed_slower = False
    if best is not None and eager_ms and best_ms >= eager_ms:
        # Faster in the search's timing, not when re-timed side by side with eager: eager stays.
        best, best_ms, retimed_slower = None, eager_ms, True
    if best is None:
        best_ms = eager_ms
    final = {
        "eager_ms": eager_ms,
        "compile_ms": compile_ms,
        "compile_status": {**{m: r.status for m, r in compiles.items()}, **{m: "not measured: time limit" for m in skipped}},
        "best_ms": best_ms,
        "best_solution": best.id if best else None,
        "finalists_ms": {str(s.id): retimed(s) for s in finalists},
        "retimed": bool(timings),
        "fallback": best is None,
        "retimed_slower": retimed_slower,
        "best_is_eager": best_is_eager and not retimed_slower,
        "best_is_compile": same_as if best is not None else None,
        # Compiles and the re-timing process: minutes on recurrent tasks; what a caller that fits a
        # run into a window (offline_suite.py --reserve) has to leave for it.
        "duration_s": time.monotonic() - t0,
    }
    store.set_task(run.task_id, baselines={**(store.task_json(run.task_id, "baselines") or {}),
                                           **{f"compile:{m}": r.to_json() for m, r in compiles.items()}})
    run.save_state(final=final)
    meta = await run.pool.reference_meta(task)
    write_best(run, best, final, run_dir, meta)
    return final


def write_best(run, best, final: dict, run_dir: Path, ref_meta: dict) -> Path:
    """``best/<task>.py``; when nothing beat eager, the task's own model (so the file is always a
    valid drop-in) and a header that says so."""
    info = run.store.get_meta("device") or {}
    out = run_dir / "best" / f"{run.task.name}.py"
    out.parent.mkdir(parents=True, exist_ok=True)
    if best is None:
        if final.get("retimed_slower"):
            why = "the best correct candidate was not faster than eager when re-timed side by side"
        elif run.state().get("stopped") == "time limit" and not run.ok_solutions():
            why = "the time limit came before any candidate passed the evaluator"
        else:
            why = "no candidate passed the evaluator"
        out.write_text(f'"""PIKE: no solution beat eager PyTorch for task {run.task.name!r} on {info.get("device_name")} ({why}).\n'
                       f'This is the task itself (Model); eager {final["eager_ms"]:.4f} ms."""\n\n' + run.task.source)
        return out
    result = run.store.evaluation(best.id)
    row = summary_row(run.store, run.task_id)
    lines = [
        f"PIKE solution for task {run.task.name!r} ({run.task.path.name}); drop-in: ModelNew replaces Model.",
        f"Device: {info.get('device_name')}; driver {driver_version() or 'n/a'}; torch {info.get('torch')}; "
        f"Triton {info.get('triton')}; CUDA {info.get('cuda')}.",
        f"Runtime {final['best_ms']:.4f} ms vs eager {final['eager_ms']:.4f} ms: {row['speedup_eager']:.2f}x"
        + (f"; vs torch.compile (default) {row['speedup_compile']:.2f}x" if row.get("speedup_compile") else "")
        + (f"; vs best compile mode ({row['best_compile_mode']}) {row['speedup_best_compile']:.2f}x" if row.get("speedup_best_compile") else "")
        + (" (re-timed interleaved)." if final["retimed"] else "."),
        f"Verified: {result.trials if result else '?'} trials on held-out inputs {ref_meta['input_shapes']}"
        + (f" and the alternate size set {run.task.alt_size!r}" if run.task.alt_size else "")
        + f"; tolerance {'strict (1e-4)' if run.cfg.eval.strict else 'atol=rtol=1e-2 (fp32)'}; size set: {run.task.size or 'as written'}.",
        f"Precision: {', '.join(t for t in best.tags if t in ('tf32', 'bf16', 'fp16', 'fp8', 'autocast')) or 'fp32 (same as the reference)'}; "
        f"other tags: {', '.join(t for t in best.tags if t not in ('tf32', 'bf16', 'fp16', 'fp8', 'autocast')) or 'none'}.",
        f"State-dict compatible: {'yes: trained weights of Model load into ModelNew' if result and result.state_dict_compatible else 'no (seeded weights only)'}.",
        f"Found by {best.origin}{' (' + best.idea + ')' if best.idea else ''}, solution {best.id} of {run.store.path}.",
        f"Sandbox: {(run.store.get_meta('sandbox') or {}).get('text', 'not recorded')}.",
    ]
    header = '"""' + "\n".join(lines).replace('"""', "'''") + '\n"""\n\n'
    out.write_text(header + best.code)
    return out


def _geo(values: list[float]) -> float | None:
    vals = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else None


def summary_row(store: Store, task_id: int) -> dict:
    """One task's line of the final table, from the store alone (the report and replay use it too)."""
    t = store.task(task_id)
    state = store.task_json(task_id, "state") or {}
    final = state.get("final", {})
    sols = store.solutions(task_id)
    evaluated = [s for s in sols if s.status not in ("pending",)]
    ok = [s for s in evaluated if s.status == "ok"]
    efa = [s for s in sols if s.origin == "efa"]
    chains_fixed = {s.fix_of for s in efa if s.status == "ok"}
    queries, usd = store.spent(task_id, roles=("coa", "efa"))
    unusable = store.unusable(task_id)  # replies that gave no candidate: an invalid answer each
    _, usd_all = store.spent(task_id)
    eager = final.get("eager_ms")
    best = final.get("best_ms") or eager
    compile_ms = final.get("compile_ms", {})
    default = compile_ms.get("default")
    best_mode = min(compile_ms, key=compile_ms.get) if compile_ms else None
    row = {
        "task": t["name"], "size": t["size"], "status": t["status"], "error": t["error"],
        "eager_ms": eager, "compile_ms": default, "best_compile_mode": best_mode,
        "best_compile_ms": compile_ms.get(best_mode) if best_mode else None,
        "best_ms": best, "fallback": final.get("fallback", True),
        "speedup_eager": (eager / best) if eager and best else None,
        "speedup_compile": (default / best) if default and best else None,
        "speedup_best_compile": (compile_ms[best_mode] / best) if best_mode and best else None,
        "queries": queries, "usd": usd_all, "evaluated": len(evaluated), "valid": len(ok),
        "valid_rate": (len(ok) / (len(evaluated) + len(unusable))) if evaluated or unusable else None,
        "candidates": sum(1 for s in sols if s.origin in ("coa", "efa")), "unusable": len(unusable),
        "unusable_reasons": {r: unusable.count(r) for r in dict.fromkeys(unusable)},
        "fix_attempts": len(efa), "fixes_ok": len({s.id for s in efa if s.status == "ok"}), "chains_fixed": len(chains_fixed),
        "lowered_precision": bool(final.get("best_solution")) and lowered_precision(next((s.tags for s in sols if s.id == final.get("best_solution")), [])),
    }
    return row


def summary(store: Store) -> dict:
    rows = [summary_row(store, t["id"]) for t in store.tasks()]
    sp = [r["speedup_eager"] or 1.0 for r in rows if r["status"] != "error"]
    spc = [r["speedup_compile"] for r in rows if r.get("speedup_compile")]
    spb = [r["speedup_best_compile"] for r in rows if r.get("speedup_best_compile")]
    return {
        "rows": rows,
        "geomean_eager": _geo(sp),
        "geomean_eager_clamped": _geo([max(1.0, v) for v in sp]),
        "geomean_compile": _geo(spc),
        "geomean_best_compile": _geo(spb),
        "queries": sum(r["queries"] for r in rows),
        "usd": sum(r["usd"] for r in rows),
        "sandbox": store.get_meta("sandbox"),  # what confined candidate code
    }
