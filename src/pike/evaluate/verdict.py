"""From a child's outputs to the verdict (evaluator steps 6, 7's checks, 9 and 10): the one place
that checks.

Runs in the orchestrator: the correctness trials, the spot checks of timed runs and the refill check
are compared against the references that the ``Plan`` names, here (``local_diffs``) or, for outputs a
child handed over as memory handles, in the comparator process (``comparator_diffs``); the
``Checker`` does this while the child waits, and ``assemble_result`` turns its verdicts and the
child's result into an ``EvalResult`` with the I/O floor applied.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from pike.evaluate import outputs, stats
from pike.evaluate.checksums import Tampered
from pike.evaluate.comparator import ComparatorError
from pike.evaluate.compare import Diff, compare
from pike.evaluate.confine import shm_dir
from pike.evaluate.jobs import TimingPlan
from pike.evaluate.outputs import UnsafeOutputs
from pike.evaluate.plan import Plan
from pike.evaluate.precision import merge_tags
from pike.evaluate.result import EvalResult, Timing
from pike.evaluate.sandbox import JobOutcome


def local_diffs(items):
    """Diffs in this process, one item at a time (each reference read only when reached)."""
    for r, sub, gold_sub, idx, out in items:
        yield compare(r.get(sub, idx), out, r.tolerance, lambda r=r, g=gold_sub, i=idx: r.get_golden(g, i))


def comparator_diffs(comparator, timeout_s: float, shm: str | None = None):
    """Diffs from the comparator process; ``out`` is then the child's description of its outputs
    (``ipc.share``), passed on unread (``shm``: where a sandboxed child's /dev/shm is). Raises
    ComparatorError when it cannot answer."""

    def diffs(items):
        items = list(items)
        reqs = []
        for r, sub, gold_sub, idx, out in items:
            (ref, ref_sha), (gold, gold_sha) = r.answer(sub, idx), r.answer(gold_sub, idx)
            reqs.append({"ref": str(ref), "ref_sha": ref_sha, "gold": str(gold) if r.has_golden else None, "gold_sha": gold_sha,
                         "strict": r.tolerance.strict, "rel_norm": r.tolerance.rel_norm, "atol_floor": r.tolerance.atol_floor,
                         "out": out, "shm": shm})
        got = [Diff(**d) for d in comparator.compare(reqs, timeout_s)]
        if len(got) < len(items) and all(d.ok for d in got):
            raise ComparatorError(f"{len(got)} answers for {len(items)} outputs")
        return got

    return diffs


@dataclass
class Verdict:
    """The outcome of one check of a candidate's outputs against the references."""

    ok: bool
    message: str = ""
    feedback: str = ""
    group: str = ""  # the check that failed: seeded, random (re-randomised weights) or alt (size)
    diff: Diff = field(default_factory=lambda: Diff(True))
    trials: int = 0  # outputs compared


def uncovered_checks(checks, plan: Plan) -> str:
    """What the child's correctness outputs leave out of the plan ("" when nothing): code in the
    child's process could otherwise drop the trials it fails, and zero trials compare as equal."""
    if not isinstance(checks, dict) or not all(isinstance(v, dict) for v in checks.values()):
        return "the child's correctness outputs are not laid out per check"
    want = {"seeded": plan.trials, "alt": plan.alt_trials}
    if "random" in checks:  # absent when the state_dict differs from the reference's
        want["random"] = plan.random_trials
    for group, ids in want.items():
        got = sorted(checks.get(group, {}))
        if got != sorted(ids):
            return f"the child returned outputs for input sets {got} of check '{group}', not the planned {sorted(ids)}"
    extra = sorted(set(checks) - set(want))
    return f"unexpected checks {extra}" if extra else ""


def uncovered_timed(timed, tj: TimingPlan) -> str:
    """What the spot, refill and fresh-content probe outputs leave out of the timing plan ("" when
    nothing). The probe's second group (a confirmation) is run only when the first looks cached."""
    try:
        spot = [(int(run_i), int(sid)) for run_i, sid, _ in timed["spot"]]
        refill = [(int(sid), int(new)) for sid, new, _ in timed["refill"]]
        probe = [int(sid) for sid, _ in timed.get("probe", [])]
    except (KeyError, TypeError, ValueError):
        return "the timed runs' outputs are not laid out as planned"
    if not spot or any(sid not in tj.sets for _, sid in spot):
        return f"spot checks of timed runs on input sets {[s for _, s in spot]}, not on the timing sets {tj.sets}"
    if refill != list(zip(tj.sets, tj.refill)):
        return f"refill checks {refill}, not the planned {list(zip(tj.sets, tj.refill))}"
    groups = tj.probe or []
    allowed = [sum(groups[:k], []) for k in range(1, len(groups) + 1)]
    if groups and probe not in allowed:
        return f"fresh-content probe on input sets {probe}, not the planned {groups[0]}"
    return ""


def check_outputs(checks: dict, ref, alt_ref, plan: Plan, diffs=local_diffs) -> Verdict:
    """Compare the child's correctness outputs with the references (all that ``plan`` planned); the
    verdict before timing."""
    problem = uncovered_checks(checks, plan)
    if problem:
        return Verdict(False, problem, group="seeded")
    groups = [("seeded", ref, "outputs", "golden", "")]
    if "random" in checks:
        groups.append(("random", ref, "random", "golden_random", " with re-randomised weights"))
    if alt_ref is not None and "alt" in checks:
        groups.append(("alt", alt_ref, "outputs", "golden", f" at {alt_ref.label}"))
    items = [(name, r, sub, gold, what, idx, out) for name, r, sub, gold, what in groups for idx, out in sorted(checks.get(name, {}).items())]
    total = Diff(True)
    n = 0
    for (name, r, sub, gold, what, idx, out), d in zip(items, diffs([p[1:4] + p[5:] for p in items])):
        n += 1
        total = Diff(total.ok, total.reason, max(total.max_abs, d.max_abs), max(total.max_rel, d.max_rel), total.note or d.note)
        if not d.ok:
            msg = f"trial on input set {idx}{what}: {d.reason}"
            if name == "random":
                msg = "correct only at the default initialisation: " + msg
            return Verdict(False, msg, msg, group=name, diff=total, trials=n)
    return Verdict(True, diff=total, trials=n)


def check_timed(timed: dict, ref, tj: TimingPlan, diffs=local_diffs) -> Verdict:
    """The spot checks of timed runs and the refill check (all that the timing plan ``tj`` planned),
    against held-out references."""
    problem = uncovered_timed(timed, tj)
    if problem:
        return Verdict(False, problem, problem)
    items = [("spot", run_i, sid, sid, o) for run_i, sid, o in timed["spot"]]
    items += [("refill", sid, sid, new, o) for sid, new, o in timed["refill"]]
    items += [("probe", sid, sid, sid, o) for sid, o in timed.get("probe", [])]
    for (kind, a, sid, idx, _), d in zip(items, diffs([(ref, "outputs", "golden", p[3], p[4]) for p in items])):
        if d.ok:
            continue
        if kind == "spot":
            msg = f"timed run {a} (input set {sid}) differs from the reference: {d.reason}"
            return Verdict(False, msg, msg + "\n(a result that is right when checked but wrong while timed: outputs cached by call count, or work outside the current stream)")
        if kind == "probe":
            msg = f"on input set {sid}, new to the process (fresh-content probe), the output was wrong: {d.reason}"
            return Verdict(False, msg, msg + "\n(outputs looked up by approximate input content fail here)")
        msg = f"after the timing buffers were refilled in place with new values, the output was wrong: {d.reason}"
        return Verdict(False, msg, msg + "\n(outputs cached by input pointer or by call count fail here)")
    return Verdict(True)


class Checker:
    """Judges what a candidate's process hands over while it waits: its correctness outputs
    (``checks``), then, if those passed and the plan times it, its timed runs' outputs (``timing``).
    The process asks ``<what>-ipc`` (memory handles in ``<what>.json``, compared by the comparator)
    or ``<what>-file`` (saved to ``<what>.pt``, compared here). A comparator that cannot answer is no
    verdict on the candidate: the answer is ``resend``, and the process saves a file and asks again.
    Each is judged once, checks before timing; the verdicts stay here for ``assemble_result``.
    What the process wrote is read within bounds set by the reference's outputs (``outputs``), and
    the time spent reading it (``parse_s``) is the candidate's. A reference file found changed on
    disk leaves no verdict: ``tampered`` holds why."""

    def __init__(self, plan: Plan, ref, alt_ref, job_dir: Path, *, comparator=lambda: None,
                 fallbacks: list | None = None, timeout_s: float = 300.0):
        self.plan, self.ref, self.alt_ref, self.dir = plan, ref, alt_ref, Path(job_dir)
        self.comparator = comparator  # the comparator to use now, or None
        self.fallbacks = fallbacks if fallbacks is not None else []  # why outputs went through files
        self.timeout_s = timeout_s
        self.checks: Verdict | None = None
        self.timed: Verdict | None = None
        self.tampered: Tampered | None = None
        self.compare_s = 0.0  # answering, reading included
        self.parse_s = 0.0  # reading what the process wrote

    def answer(self, name: str) -> dict:
        what, _, via = name.partition("-")
        due = self.checks is None if what == "checks" else what == "timing" and self.checks is not None and self.timed is None
        if due and self.tampered is None:
            t0 = time.monotonic()
            try:
                verdict = self._from_ipc(what) if via == "ipc" else self._from_file(what)
            except Tampered as e:
                self.tampered, verdict = e, Verdict(False, f"not judged: {e}")
            finally:
                self.compare_s += time.monotonic() - t0
            if verdict is None:
                return {"resend": True}
            setattr(self, "checks" if what == "checks" else "timed", verdict)
        if what == "checks" and self.checks is not None:
            return {"time": self.checks.ok and self.plan.time}
        return {}

    def _bounds(self, what: str) -> outputs.Bounds:
        p = self.plan
        if what == "checks":
            b = outputs.of_outputs(self.ref, len(p.trials) + len(p.random_trials))
            return b + outputs.of_outputs(self.alt_ref, len(p.alt_trials)) if self.alt_ref is not None else b
        spots = p.timing.config.get("spot_checks", 2) + 1 if p.timing else 0
        return outputs.of_outputs(self.ref, spots + len(p.timing.refill) if p.timing else 0)

    def _read(self, what: str, *, described: bool):
        t0 = time.monotonic()
        try:
            if described:
                return outputs.load_description(self.dir / f"{what}.json", self._bounds(what))
            return outputs.load_child_file(self.dir / f"{what}.pt", self._bounds(what))
        finally:
            self.parse_s += time.monotonic() - t0

    def _judge(self, what: str, handed, diffs) -> Verdict:
        if what == "checks":
            return check_outputs(handed, self.ref, self.alt_ref, self.plan, diffs)
        if self.plan.timing is None or not self.checks.ok:
            return Verdict(False, "timed outputs handed over for a run that was not to be timed")
        return check_timed(handed, self.ref, self.plan.timing, diffs)

    def _from_ipc(self, what: str) -> Verdict | None:
        cmp = self.comparator()
        if cmp is None:  # given up on during this candidate
            return None
        try:
            described = self._read(what, described=True)
        except (UnsafeOutputs, OSError) as e:
            return Verdict(False, str(e), str(e), group="seeded")
        try:
            if what == "checks":  # {group: [[input set, output], ...]}
                described = {g: {int(i): o for i, o in rows} for g, rows in described.items()}
            shm = shm_dir(self.dir)
            return self._judge(what, described, comparator_diffs(cmp, self.timeout_s, shm if os.path.isdir(shm) else None))
        except (ComparatorError, OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            self.fallbacks.append(f"{what}: {type(e).__name__}: {e}"[:300])
            return None

    def _from_file(self, what: str) -> Verdict:
        try:
            handed = self._read(what, described=False)
        except (UnsafeOutputs, OSError) as e:
            return Verdict(False, str(e), str(e), group="seeded")
        return self._judge(what, handed, local_diffs)


def assemble_result(c, out: JobOutcome, checker: Checker, ref, tags: list[str], plan: Plan, eager_ms: float | None, timeout_s: float, bandwidth_gbs: float | None) -> EvalResult:
    base = dict(tags=tags, device=c.device, task_flags=ref.flags)
    if out.timed_out:
        return EvalResult("timeout", f"the candidate ran longer than {timeout_s:g} s and was killed", out.log_tail[-4000:], stage="run", **base)
    res = out.result
    if res is None:
        oom = " (killed by the system: out of memory?)" if out.signal == 9 else ""
        return EvalResult("runtime_error", f"the candidate process {out.describe_exit()}{oom} (contained)", out.log_tail[-4000:], stage="run", **base)
    durations = res.get("durations", {})
    if res["status"] == "ok":  # precision tags from the dtypes a forward used, the static ones as hints
        base["tags"], base["precision_hints"] = merge_tags(tags, res.get("precision"))
    if res["status"] != "ok":
        feedback = res.get("feedback", "")
        log = out.log_tail.strip()
        if log and res["status"] in ("runtime_error", "build_error"):
            feedback = f"{feedback}\n--- output ---\n{log[-3000:]}"
        return EvalResult(res["status"], res.get("message", ""), feedback, stage=res.get("stage", ""), durations_s=durations, **base)
    verdict = checker.checks or Verdict(False, "the candidate's process finished without handing over its outputs for checking")
    diff = verdict.diff
    errs = dict(max_abs_err=diff.max_abs, max_rel_err=diff.max_rel, trials=verdict.trials)
    compat = bool(res.get("state_dict_compatible"))
    base["state_dict_compatible"] = compat
    if not verdict.ok:
        return EvalResult("mismatch", verdict.message, verdict.feedback or verdict.message, stage="compare", durations_s=durations, **errs, **base)
    if c.require_state_dict and not compat:
        note = res.get("state_dict_note", "")
        return EvalResult(
            "rejected",
            f"not state-dict compatible with the reference ({note}); trained weights could not be loaded and the "
            "re-randomised weight check could not run (allow seeded-only checks to accept it)",
            note, stage="weights", durations_s=durations, **errs, **base,
        )
    how = f"; {diff.note}" if diff.note else ""  # passed by eager's own error against fp32, not elementwise
    if plan.alt_trials and checker.alt_ref is not None:
        how += f"; also checked at {checker.alt_ref.label}"
    if ref.tolerance.atol_floor:
        how += f"; judged within {ref.tolerance.describe(ref.meta.get('output_dtypes'))}"
    if not plan.time:
        return EvalResult("ok", "correct (not timed)" + how, stage="compare", durations_s=durations, eager_ms=eager_ms, **errs, **base)
    if "timing" not in res:
        return EvalResult("runtime_error", "the candidate finished without timing results", out.log_tail[-3000:], stage="timing", **base)
    timed = checker.timed or Verdict(False, "the candidate's process finished without handing over its timed runs' outputs")
    if not timed.ok:
        return EvalResult("mismatch", timed.message, timed.feedback or timed.message, stage="timing", durations_s=durations, **errs, **base)
    ts = res["timing"]
    try:  # statistics here, from the raw readings: nothing in the child's process can shape them
        timing = Timing.from_raw(ts, c.device_type == "cuda", c.objective)
    except (KeyError, TypeError, ValueError) as e:
        return EvalResult("runtime_error", f"the candidate's timing readings are malformed ({e})", stage="timing", durations_s=durations, **errs, **base)
    result = EvalResult("ok", "correct" + how, timing=timing, eager_ms=eager_ms, stage="timing", durations_s=durations, **errs, **base)
    if timing.out_of_stream:
        result.message = "correct; host time far above CUDA event time (work outside the current stream): host time used" + how
        result.tags = sorted(set(result.tags) | {"out_of_stream"})
    apply_floor(c, result, ref, bandwidth_gbs)
    apply_fresh_probe(c, result, ts.get("probes"), bool(plan.timing.probe))
    return result


def apply_fresh_probe(c, result: EvalResult, probes, planned: bool) -> None:
    """Fast on inputs it has seen, slow on new ones: outputs cached by input content (a cache keyed by
    pointer or call count already failed the refill check). Suspect only when every probe run (the
    first, and the confirmation the child runs when the first looks cached) shows it: every new-input
    run slower than every repeated one, by ``fresh_ratio`` in the medians. A busy machine slows
    both sides alike, and rarely orders all of them so."""
    if not planned or not c.fresh_ratio or result.status != "ok":
        return
    min_gap_ms = 0.02 if c.device_type == "cuda" else 1.0  # below this, timer noise on a busy CPU
    try:
        signs = [stats.cache_signs(p, c.fresh_ratio, min_gap_ms) for p in probes]
        if not signs:
            raise ValueError("no probe")
    except (KeyError, TypeError, ValueError) as e:
        result.status, result.message = "suspect", f"the fresh-content probe's readings are missing or malformed ({e})"
        return
    if all(signs):
        p = probes[-1]
        rep, fresh = stats.median(p["repeat_ms"]), stats.median(p["fresh_ms"])
        result.status = "suspect"
        result.message = (
            f"{fresh / rep:.1f}x slower on inputs it had not seen ({fresh:.4f} ms) than on the repeated timing "
            f"inputs ({rep:.4f} ms), A B A B over {len(p['fresh_ms'])} pairs, each new-input run slower than every "
            f"repeated one, in {len(probes)} probe(s): outputs cached by input content?"
        )
        result.feedback = result.message + "\nEvery forward must compute its outputs from its inputs; the timing reuses input sets."


def apply_floor(c, result: EvalResult, ref, bw: float | None) -> None:
    """Step 9 (GPU): faster than reading the inputs and writing the outputs once is impossible."""
    if c.device_type != "cuda" or result.timing is None or not bw:
        return
    floor_ms = (ref.meta["input_bytes"] + ref.meta["output_bytes"]) / (c.floor_fraction * bw * 1e9) * 1e3
    fastest = min(result.timing.median_ms, result.timing.throughput_ms or float("inf"))  # latency or back to back
    if fastest < floor_ms:
        result.status = "suspect"
        result.message = (
            f"{fastest:.4f} ms is below the I/O floor of {floor_ms:.4f} ms "
            f"(reading the inputs and writing the outputs once at {c.floor_fraction:.0%} of {bw:.0f} GB/s)"
        )
