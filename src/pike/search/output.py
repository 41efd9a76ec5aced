"""A task's final numbers and its ``best/<task>.py``; the per-task table of a run.

Final numbers come from an interleaved re-timing (eager, each correct torch.compile mode and the
contenders, A B A B ... in one process): the best of hundreds of noisy search timings is inflated.
The delivered entry is the noise-aware pick among all of them (``select.pick``), baselines included,
and each speedup carries the interval of its paired rounds.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from pike.evaluate.baselines import baseline_source
from pike.evaluate.compare import Tolerance, eager_atol
from pike.evaluate.devices import driver_version
from pike.evaluate.static import lowered_precision
from pike.evaluate import stats
from pike.knobs import VariantKnobs
from pike.search import select
from pike.search.progress import candidate_text
from pike.search.strategies import strategy_class
from pike.store import Store


FINALISTS = 3  # candidates by estimate (and as many by the fast end of their range) re-timed with the baselines


def compile_plan(run, modes: tuple[str, ...]) -> tuple[dict, list[str], list[str]]:
    """(results this run already has, modes still to measure, modes skipped) for the final table.

    The offline portfolio's single ``compile:MODE`` variant is the same torch.compile(mode) of the
    task's Model as that baseline, so its result stands for it: on the GPU a second compile cost
    minutes per task, and a mode that timed out in the search (max-autotune on a recurrent task,
    > 300 s) timed out again in the final table. A run stopped by its time limit starts no new
    compile but default (the table's "vs compile" column)."""
    known: dict = {}
    for s in run.solutions:
        mode = s.knobs.compile_mode if s.knobs is not None and s.knobs.only_compile else None
        if s.origin == "offline" and mode in modes and mode not in known:
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
    have = {s.knobs for s in run.solutions if s.origin == "offline"}
    added = []
    for mode, result in compiles.items():
        knobs = VariantKnobs(compile_mode=mode)
        if result.ok and knobs not in have:
            sid = run.store.add_solution(run.task_id, baseline_source(run.task, mode), "offline",
                                         idea=knobs.name, knobs=knobs)
            run.store.record_evaluation(sid, result)
            added.append(sid)
    return added


def same_program_mode(best, measured) -> str | None:
    """The compile mode whose baseline is the same program as ``best`` (the offline ``compile:MODE``
    variant), when that baseline was measured (``measured``: the modes, or a dict keyed by them)."""
    if best is None or best.origin != "offline" or best.knobs is None or not best.knobs.only_compile:
        return None
    mode = best.knobs.compile_mode
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


FINAL_ORDER = {"eager": -1000.0}  # baselines are earlier than every solution: a tie keeps them


def _final_contenders(run, entries: dict[str, str], samples: dict[str, list[float]], tags: dict[str, list[str]]):
    """The final table's entries as contenders (eager, compile modes, finalists) in the order ties
    prefer: baselines first, then solutions by id."""
    out = []
    for i, (name, code) in enumerate(entries.items()):
        if name.startswith("solution:"):
            order = float(name.split(":")[1])
        else:
            order = FINAL_ORDER.get(name, -999.0 + i)
        out.append(select.contender(name, samples[name], code, order, tags.get(name)))
    return out


def _record_final_retiming(run, timings: dict) -> None:
    """The final table's re-timing into the store's ``retimings``: each entry's samples and speedup vs eager."""
    base = timings["eager"].samples_ms
    rows = []
    for name, t in timings.items():
        samples = [round(x, 6) for x in t.samples_ms]
        where = {"solution_id": int(name.split(":")[1])} if name.startswith("solution:") else {"baseline": name}
        rows.append({**where, "samples": samples,
                     "speedup": None if name == "eager" or not (base and t.samples_ms) else stats.speedup(base, t.samples_ms)})
    run.store.add_retiming(run.task_id, "final", rows)


def _intervals(samples: dict[str, list[float]], best: str, baselines: list[str], paired: bool) -> dict:
    """The delivered entry's speedup over each baseline, with its interval."""
    out = {}
    for b in baselines:
        if b == best:
            n = len(samples[b])
            out[b] = stats.Interval(1.0, 1.0, 1.0, n, paired).to_json()
        else:
            out[b] = stats.speedup(samples[b], samples[best], paired=paired).to_json()
    return out


async def finalize_task(run, run_dir: Path, *, modes: tuple[str, ...], retime: bool = True) -> dict:
    """Eager, every compile mode measured and the contenders re-timed side by side; the delivered
    result is the noise-aware pick among all of them, so never slower than a baseline of this table
    (a baseline that wins, or ties, is what ``best/`` delivers)."""
    task, store = run.task, run.store
    t0 = time.monotonic()
    known, _, skipped = compile_plan(run, modes)
    compiles = {m: known[m] if m in known else await run.pool.baseline(task, m) for m in modes if m not in skipped}
    if strategy_class(run.cfg).compile_variants:
        adopt_compile_baselines(run, compiles)
    # The contenders, minus the eager model itself (it is an entry anyway); one measured under load
    # in the search still gets its place (TaskRun.contenders).
    finalists = [s for s in run.contenders(FINALISTS) if s.code != task.source]
    ok_modes = [m for m, r in compiles.items() if r.ok]
    entries = {"eager": task.source}
    entries.update({f"compile:{m}": baseline_source(task, m) for m in ok_modes})
    # An offline compile:MODE variant is the compile:MODE baseline (one program): timed once, as that.
    same = {s.id: same_program_mode(s, ok_modes) for s in finalists}
    entries.update({f"solution:{s.id}": s.code for s in finalists if not same[s.id]})
    tags = {f"solution:{s.id}": s.tags for s in finalists}
    timings = {}
    if retime and len(entries) > 1:
        timeout = retime_timeout(run, compiles, finalists)
        timings = await run.pool.retime(task, entries, max_time_s=run.cfg.eval.final_retime_s, timeout_s=timeout)
    retimed = bool(timings)
    if retimed:
        _record_final_retiming(run, timings)
    # Back to back (do_bench style), beside the latency, for every entry that has it.
    throughput = {k: t.throughput_ms for k, t in timings.items() if getattr(t, "throughput_ms", None)}
    if retimed:
        samples = {k: list(t.samples_ms) for k, t in timings.items()}
    else:  # the search's own figures, one each: no interval, the fastest median wins
        samples = {"eager": [run.eager_ms]}
        samples.update({f"compile:{m}": [compiles[m].runtime_ms] for m in ok_modes})
        samples.update({f"solution:{s.id}": [s.runtime_ms] for s in finalists if not same[s.id]})
    ms = {k: stats.median(v) for k, v in samples.items()}
    contenders = _final_contenders(run, entries, samples, tags)
    if retimed:
        winner = select.pick(contenders).name
    else:
        winner = min(contenders, key=lambda c: (c.median_ms, c.preference)).name
    compile_ms = {m: ms[f"compile:{m}"] for m in ok_modes}
    best_mode = min(compile_ms, key=compile_ms.get) if compile_ms else None
    by_id = {s.id: s for s in finalists}
    if winner.startswith("solution:"):
        best, best_is_compile = by_id[int(winner.split(":")[1])], None
    else:
        mode = winner.removeprefix("compile:") if winner.startswith("compile:") else None
        best = next((s for s in finalists if mode and same[s.id] == mode), None)  # offline's own variant
        best_is_compile = mode if best is not None else None
    baselines = ["eager", *(f"compile:{m}" for m in ok_modes)]
    intervals = _intervals(samples, winner, baselines, paired=retimed) if retimed else {}
    noisy_at = run.cfg.eval.noisy_spread
    noisy = sorted(b for b, ci in intervals.items() if b != winner and stats.Interval.from_json(ci).noisy(noisy_at))
    final = {
        "eager_ms": ms["eager"],
        "compile_ms": compile_ms,
        "compile_status": {**{m: r.status for m, r in compiles.items()}, **{m: "not measured: time limit" for m in skipped}},
        "best_ms": ms[winner],
        "objective": run.cfg.eval.objective,  # what the figures above are: latency or throughput
        "throughput_ms": throughput,  # per entry: ms per call back to back (re-timed entries)
        "delivered": winner,  # eager, compile:MODE or solution:ID: what best/<task>.py is
        "best_solution": best.id if best else None,
        "finalists_ms": {str(s.id): ms[f"compile:{same[s.id]}" if same[s.id] else f"solution:{s.id}"] for s in finalists},
        "retimed": retimed,
        "rounds": min(len(v) for v in samples.values()) if retimed else 0,
        # The delivered entry's speedup over each baseline of the table, with its interval.
        "intervals": intervals,
        "vs_best_compile": f"compile:{best_mode}" if best_mode else None,
        "noisy": noisy,  # baselines whose interval stayed wider than eval.noisy_spread
        "spread": {k: stats.iqr(v) / ms[k] for k, v in samples.items() if ms[k] > 0} if retimed else {},
        "fallback": best is None,
        "best_is_eager": winner == "eager",
        "best_is_compile": best_is_compile,
        # Compiles and the re-timing process: minutes on recurrent tasks; what a caller that fits a
        # run into a window (offline_suite.py --reserve) has to leave for it.
        "duration_s": time.monotonic() - t0,
    }
    store.set_task(run.task_id, baselines={**(store.task_json(run.task_id, "baselines") or {}),
                                           **{f"compile:{m}": r.to_json() for m, r in compiles.items()}})
    meta = await run.pool.reference_meta(task)
    if meta:  # what every candidate was checked at, and with
        strict = run.cfg.eval.strict
        final["shapes"] = shapes_verified(task, meta)
        final["tolerance"] = Tolerance(strict, atol_floor=eager_atol(meta.get("eager_default"), strict)).describe(meta.get("output_dtypes"))
    run.save_state(final=final)
    if intervals.get("eager"):
        run.notify("confirmed", solution=final["best_solution"], speedup=stats.Interval.from_json(intervals["eager"]), final=True)
    write_best(run, best, final, run_dir, meta)
    return final


def _interval_text(final: dict, baseline: str | None) -> str:
    ci = stats.Interval.from_json(final.get("intervals", {}).get(baseline)) if baseline else None
    return f" [{ci.lo:.2f}-{ci.hi:.2f}]" if ci is not None else ""


def shapes_verified(task, ref_meta: dict) -> dict:
    """The input shapes every candidate was checked at, and its second shape (an alternate size set,
    or another batch size where the task has none) or why it has none."""
    batch_alt = ref_meta.get("batch_alt") or {}
    if task.alt_size:
        second, why = f"size set {task.alt_size!r}", ""
    elif batch_alt.get("alt"):
        second, why = f"batch {batch_alt['alt']} {batch_alt['input_shapes']}", ""
    else:
        second, why = None, batch_alt.get("why", "")
    return {"inputs": ref_meta["input_shapes"], "second": second, "why_none": why}


def write_best(run, best, final: dict, run_dir: Path, ref_meta: dict) -> Path:
    """``best/<task>.py``: the delivered entry. A baseline that won (or tied) is delivered as
    itself: the task's own model, or a small module applying its torch.compile mode."""
    info = run.store.get_meta("device") or {}
    out = run_dir / "best" / f"{run.task.name}.py"
    out.parent.mkdir(parents=True, exist_ok=True)
    delivered = final.get("delivered") or ("eager" if best is None else f"solution:{best.id}")
    if best is None:
        if not run.ok_solutions() and run.state().get("stopped") == "time limit":
            why = "the time limit came before any candidate passed the evaluator"
        elif not [s for s in run.ok_solutions() if s.code != run.task.source]:
            why = "no candidate passed the evaluator"
        else:
            why = "no candidate was faster beyond the interval when re-timed side by side with it"
        code = run.task.source if delivered == "eager" else baseline_source(run.task, delivered)
        what = "eager PyTorch (the task's own Model)" if delivered == "eager" else f"the baseline torch.compile (mode {delivered.removeprefix('compile:')}) of the task's Model"
        out.write_text(f'"""PIKE: for task {run.task.name!r} on {info.get("device_name")} this is {what}: {why}.\n'
                       f'Runtime {final["best_ms"]:.4f} ms; eager {final["eager_ms"]:.4f} ms'
                       + (f" ({final['rounds']} rounds re-timed side by side)" if final.get("retimed") else "") + '."""\n\n' + code)
        return out
    result = run.store.evaluation(best.id)
    row = summary_row(run.store, run.task_id)
    default, top = "compile:default", final.get("vs_best_compile")
    shapes = final.get("shapes") or shapes_verified(run.task, ref_meta)
    lines = [
        f"PIKE solution for task {run.task.name!r} ({run.task.path.name}); drop-in: ModelNew replaces Model.",
        f"Device: {info.get('device_name')}; driver {driver_version() or 'n/a'}; torch {info.get('torch')}; "
        f"Triton {info.get('triton')}; CUDA {info.get('cuda')}.",
        f"Runtime {final['best_ms']:.4f} ms vs eager {final['eager_ms']:.4f} ms: {row['speedup_eager']:.2f}x" + _interval_text(final, "eager")
        + (f"; vs torch.compile (default) {row['speedup_compile']:.2f}x" + _interval_text(final, default) if row.get("speedup_compile") else "")
        + (f"; vs best compile mode ({row['best_compile_mode']}) {row['speedup_best_compile']:.2f}x" + _interval_text(final, top) if row.get("speedup_best_compile") else "")
        + (f" (re-timed side by side, {final['rounds']} rounds; [95% interval])." if final["retimed"] else " (search timings, not re-timed)."),
        f"Verified: {result.trials if result else '?'} trials on held-out inputs {shapes['inputs']}"
        + (f" and at {shapes['second']}" if shapes["second"] else f" (no second shape: {shapes['why_none']})")
        + f"; tolerance {final.get('tolerance') or Tolerance(run.cfg.eval.strict).describe()}"
        + f"; size set: {run.task.size or 'as written'}.",
        f"Precision: {', '.join(t for t in best.tags if t in ('tf32', 'bf16', 'fp16', 'fp8', 'autocast')) or 'fp32 (same as the reference)'}; "
        f"other tags: {', '.join(t for t in best.tags if t not in ('tf32', 'bf16', 'fp16', 'fp8', 'autocast')) or 'none'}.",
        f"State-dict compatible: {'yes: trained weights of Model load into ModelNew' if result and result.state_dict_compatible else 'no (seeded weights only)'}.",
        f"Found by {best.origin}{' (' + best.idea + ')' if best.idea else ''}, solution {best.id} of {run.store.path}.",
        f"Sandbox: {(run.store.get_meta('sandbox') or {}).get('text', 'not recorded')}.",
    ]
    if final.get("noisy"):
        lines.append(f"Noisy: the interval vs {', '.join(final['noisy'])} stayed wide (spread "
                     + ", ".join(f"{k} {v:.0%}" for k, v in final.get("spread", {}).items()) + ").")
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
    cis = final.get("intervals", {})

    def ci(name):
        c = cis.get(name) if name else None
        return [c["lo"], c["hi"]] if c else None

    row = {
        "task": t["name"], "size": t["size"], "status": t["status"], "error": t["error"],
        "eager_ms": eager, "compile_ms": default, "best_compile_mode": best_mode,
        "best_compile_ms": compile_ms.get(best_mode) if best_mode else None,
        "best_ms": best, "fallback": final.get("fallback", True),
        "delivered": final.get("delivered") or ("eager" if final.get("fallback", True) else f"solution:{final.get('best_solution')}"),
        # What best/ holds, named: the candidate (id, idea or variant, parent, phase) or the baseline.
        "winner": next((candidate_text(s) for s in sols if s.id == final.get("best_solution")), None) if not final.get("fallback", True) else None,
        "speedup_eager": (eager / best) if eager and best else None,
        "speedup_compile": (default / best) if default and best else None,
        "speedup_best_compile": (compile_ms[best_mode] / best) if best_mode and best else None,
        # [lo, hi] of each speedup (paired rounds of the final re-timing), None where not re-timed
        "speedup_eager_ci": ci("eager"), "speedup_compile_ci": ci("compile:default" if default else None),
        "speedup_best_compile_ci": ci(f"compile:{best_mode}" if best_mode else None),
        "rounds": final.get("rounds", 0), "noisy": final.get("noisy", []), "spread": final.get("spread", {}),
        "objective": final.get("objective", "latency"),
        # back to back (do_bench style), ms per call: eager, compile default and the delivered entry
        "throughput_ms": {k: v for k, v in (("eager", (final.get("throughput_ms") or {}).get("eager")),
                                             ("compile", (final.get("throughput_ms") or {}).get("compile:default")),
                                             ("best", (final.get("throughput_ms") or {}).get(final.get("delivered") or "")))
                          if v is not None},
        "queries": queries, "usd": usd_all, "evaluated": len(evaluated), "valid": len(ok),
        "valid_rate": (len(ok) / (len(evaluated) + len(unusable))) if evaluated or unusable else None,
        "candidates": sum(1 for s in sols if s.origin in ("coa", "efa")), "unusable": len(unusable),
        "unusable_reasons": {r: unusable.count(r) for r in dict.fromkeys(unusable)},
        "fix_attempts": len(efa), "fixes_ok": len({s.id for s in efa if s.status == "ok"}), "chains_fixed": len(chains_fixed),
        # The shapes every candidate was checked at: {"inputs", "second" (or None), "why_none"}.
        "shapes_verified": final.get("shapes"),
        "tolerance": final.get("tolerance"),  # what candidates were judged with (eager's own deviation included)
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
