"""From a child's saved outputs to the verdict (evaluator steps 6, 7's checks, 9 and 10).

Runs in the orchestrator: the correctness trials, the spot checks of timed runs and the refill check
are compared here against the references, and the result is assembled with the I/O floor applied.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pike.evaluate.compare import Diff, compare
from pike.evaluate.result import EvalResult, Timing
from pike.evaluate.sandbox import JobOutcome


class UnsafeOutputs(Exception):
    pass


def load_child_file(path: Path):
    """A file the candidate's process wrote. ``weights_only``: tensors, lists, tuples, dicts and plain
    values only; a pickled object would otherwise run its code here, in the orchestrator (which holds
    the API keys and the store). Memory-mapped: big outputs are compared without another copy."""
    try:
        return torch.load(path, weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError and friends
        raise UnsafeOutputs(f"{path.name} could not be read as tensors, lists, tuples, dicts and plain values "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None


def check_outputs(checks: dict, ref, alt_ref) -> dict:
    """Compare the child's correctness outputs with the references; the verdict before timing."""
    total = Diff(True)
    n = 0
    groups = [("seeded", ref.output, ref.golden, ref.tolerance, "")]
    if "random" in checks:
        groups.append(("random", ref.random_output, ref.golden_random, ref.tolerance, " with re-randomised weights"))
    if alt_ref is not None and "alt" in checks:
        groups.append(("alt", alt_ref.output, alt_ref.golden, alt_ref.tolerance, f" at size {alt_ref.task.size}"))
    for name, expected, golden, tol, what in groups:
        for idx, out in sorted(checks.get(name, {}).items()):
            d = compare(expected(idx), out, tol, lambda: golden(idx))
            n += 1
            total = Diff(total.ok, total.reason, max(total.max_abs, d.max_abs), max(total.max_rel, d.max_rel), total.note or d.note)
            if not d.ok:
                return {"ok": False, "group": name, "message": f"trial on input set {idx}{what}: {d.reason}", "diff": total, "trials": n}
    return {"ok": True, "diff": total, "trials": n, "random_checked": "random" in checks}


def assemble_result(c, out: JobOutcome, d: Path, verdict: dict, ref, tags: list[str], plan: dict, eager_ms: float | None, timeout_s: float, bandwidth_gbs: float | None) -> EvalResult:
    base = dict(tags=tags, device=c.device, task_flags=ref.flags)
    if out.timed_out:
        return EvalResult("timeout", f"the candidate ran longer than {timeout_s:g} s and was killed", out.log_tail[-4000:], stage="run", **base)
    res = out.result
    if res is None:
        return EvalResult("runtime_error", f"the candidate process {out.describe_exit()} (contained)", out.log_tail[-4000:], stage="run", **base)
    durations = res.get("durations", {})
    if res["status"] != "ok":
        feedback = res.get("feedback", "")
        log = out.log_tail.strip()
        if log and res["status"] in ("runtime_error", "build_error"):
            feedback = f"{feedback}\n--- output ---\n{log[-3000:]}"
        return EvalResult(res["status"], res.get("message", ""), feedback, stage=res.get("stage", ""), durations_s=durations, **base)
    diff: Diff = verdict.get("diff", Diff(True))
    errs = dict(max_abs_err=diff.max_abs, max_rel_err=diff.max_rel, trials=verdict.get("trials", 0))
    compat = bool(res.get("state_dict_compatible"))
    base["state_dict_compatible"] = compat
    if not verdict.get("ok"):
        msg = verdict.get("message", "outputs differ from the reference")
        if verdict.get("group") == "random":
            msg = "correct only at the default initialisation: " + msg
        return EvalResult("mismatch", msg, msg, stage="compare", durations_s=durations, **errs, **base)
    if c.require_state_dict and not compat:
        note = res.get("state_dict_note", "")
        return EvalResult(
            "rejected",
            f"not state-dict compatible with the reference ({note}); trained weights could not be loaded and the "
            "re-randomised weight check could not run (allow seeded-only checks to accept it)",
            note, stage="weights", durations_s=durations, **errs, **base,
        )
    how = f"; {diff.note}" if diff.note else ""  # passed by eager's own error against fp32, not elementwise
    if not plan["time"]:
        return EvalResult("ok", "correct (not timed)" + how, stage="compare", durations_s=durations, eager_ms=eager_ms, **errs, **base)
    if "timing" not in res:
        return EvalResult("runtime_error", "the candidate finished without timing results", out.log_tail[-3000:], stage="timing", **base)
    # Spot checks of timed runs and the refill check, against held-out references.
    try:
        t = load_child_file(d / "timing.pt")
    except UnsafeOutputs as e:
        return EvalResult("mismatch", f"timed runs: {e}", str(e), stage="timing", durations_s=durations, **errs, **base)
    for run_i, sid, o in t["spot"]:
        dd = compare(ref.output(sid), o, ref.tolerance, lambda: ref.golden(sid))
        if not dd.ok:
            msg = f"timed run {run_i} (input set {sid}) differs from the reference: {dd.reason}"
            return EvalResult("mismatch", msg, msg + "\n(a result that is right when checked but wrong while timed: outputs cached by call count, or work outside the current stream)", stage="timing", durations_s=durations, **errs, **base)
    for sid, new, o in t["refill"]:
        dd = compare(ref.output(new), o, ref.tolerance, lambda: ref.golden(new))
        if not dd.ok:
            msg = f"after the timing buffers were refilled in place with new values, the output was wrong: {dd.reason}"
            return EvalResult("mismatch", msg, msg + "\n(outputs cached by input pointer or by call count fail here)", stage="timing", durations_s=durations, **errs, **base)
    ts = res["timing"]
    timing = Timing(
        median_ms=ts["median_ms"], iqr_ms=ts["iqr_ms"], runs=ts["runs"],
        host_median_ms=ts.get("host_median_ms"), event_median_ms=ts.get("event_median_ms"),
        out_of_stream=bool(ts.get("out_of_stream")), peak_mem_bytes=ts.get("peak_mem_bytes"),
        samples_ms=ts.get("samples_ms", []),
    )
    result = EvalResult("ok", "correct" + how, timing=timing, eager_ms=eager_ms, stage="timing", durations_s=durations, **errs, **base)
    if timing.out_of_stream:
        result.message = "correct; host time far above CUDA event time (work outside the current stream): host time used" + how
        result.tags = sorted(set(result.tags) | {"out_of_stream"})
    apply_floor(c, result, ref, bandwidth_gbs)
    apply_fresh_probe(c, result, ts.get("fresh_probe"))
    return result


def apply_fresh_probe(c, result: EvalResult, probe: dict | None) -> None:
    """Fast on inputs it has seen, slow on new ones: outputs cached by input content (a cache keyed by
    pointer or call count already failed the refill check)."""
    if not probe or not c.fresh_ratio or result.status != "ok":
        return
    min_gap_ms = 0.02 if c.device_type == "cuda" else 1.0  # below this, timer noise on a busy CPU
    if probe["ratio"] > c.fresh_ratio and probe["fresh_ms"] - probe["repeat_ms"] > min_gap_ms:
        result.status = "suspect"
        result.message = (
            f"{probe['ratio']:.1f}x slower on inputs it had not seen ({probe['fresh_ms']:.4f} ms) than on the "
            f"repeated timing inputs ({probe['repeat_ms']:.4f} ms), A B A B over {probe['pairs']} pairs: "
            "outputs cached by input content?"
        )
        result.feedback = result.message + "\nEvery forward must compute its outputs from its inputs; the timing reuses input sets."


def apply_floor(c, result: EvalResult, ref, bw: float | None) -> None:
    """Step 9 (GPU): faster than reading the inputs and writing the outputs once is impossible."""
    if c.device_type != "cuda" or result.timing is None or not bw:
        return
    floor_ms = (ref.meta["input_bytes"] + ref.meta["output_bytes"]) / (c.floor_fraction * bw * 1e9) * 1e3
    if result.timing.median_ms < floor_ms:
        result.status = "suspect"
        result.message = (
            f"{result.timing.median_ms:.4f} ms is below the I/O floor of {floor_ms:.4f} ms "
            f"(reading the inputs and writing the outputs once at {c.floor_fraction:.0%} of {bw:.0f} GB/s)"
        )
