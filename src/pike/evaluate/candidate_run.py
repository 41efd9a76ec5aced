"""The run stage (evaluator steps 3-7, 9 and 10): one fresh child builds the candidate, runs the
planned trials and hands its outputs over; the orchestrator checks them while it waits (``Checker``)
and, if they are right and the plan times it, lets it time its forward."""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path

from pike.evaluate import progress
from pike.evaluate.jobs import CandidateJob, Part
from pike.evaluate.paths import task_imports
from pike.evaluate.plan import Plan, plan_candidate
from pike.evaluate.result import EvalResult
from pike.evaluate.verdict import Checker, assemble_result
from pike.task import apply_overrides


def run_candidate(
    ev, prep, ref, alt_ref, *, eager_ms: float | None = None, time_it: bool | None = None,
    timeout_s: float | None = None, exclusive: bool = False,
) -> EvalResult:
    """``prep`` (pipeline.Prepared) against ``ref`` and ``alt_ref`` on ``ev``'s device. With lanes,
    the child asks for the device at its first use of it; with ``share_checks`` its checks hold it
    beside other lanes' checks (unless ``exclusive``) and its timing alone. Raises Tampered when a
    reference file is found changed on disk (no verdict: the pipeline computes it again)."""
    c = ev.config
    timeout_s = timeout_s or c.timeout_s
    rng = random.Random(hashlib.sha256(f"{prep.source}{ev.next_id()}{c.seed}".encode()).digest())
    plan = plan_candidate(c, ref, alt_ref, rng, time_it=time_it, trusted=prep.trusted)
    d = ev.job_dir("candidate", prep.trusted)
    gate, held = ev.gate, []
    shared = gate is not None and ev.share_checks and not exclusive
    checker = Checker(plan, ref, alt_ref, d, comparator=lambda: ev.comparator() if ev.uses_comparator else None,
                      fallbacks=ev.comparator_fallbacks, timeout_s=timeout_s)

    def on_ask(name: str) -> dict:
        if name == "gpu":
            if gate is not None and not held:
                gate.acquire(shared=shared)
                held.append(True)
            return {}
        reply = checker.answer(name)
        if reply.get("time") and shared and held:
            gate.upgrade()  # the timing runs alone on the device
        return reply

    t0 = time.monotonic()
    try:
        job = candidate_job(prep, plan, ref, alt_ref, d, ev.job_device)  # raises Tampered (checksums)
        stage_s = time.monotonic() - t0
        job.gpu_gate = gate is not None
        job.ipc = ev.uses_comparator
        try:
            out = ev.run_job(job, d, timeout=timeout_s, env=prep.env, on_ask=on_ask, trusted=prep.trusted)
        finally:
            if held:
                gate.release()
        if checker.tampered is not None:
            raise checker.tampered
        durations = {**prep.durations, "stage_s": stage_s, "run_s": time.monotonic() - t0, "compare_s": checker.compare_s,
                     "parse_s": checker.parse_s}
        child_s = out.wall_s - checker.compare_s
        if not out.timed_out and child_s + checker.parse_s > timeout_s:
            result = EvalResult("timeout", f"the candidate ran {child_s:.1f} s and reading its outputs took {checker.parse_s:.1f} s: "
                                           f"longer than {timeout_s:g} s together", stage="run", tags=prep.tags, device=c.device)
        else:
            result = assemble_result(c, out, checker, ref, prep.tags, plan, eager_ms, timeout_s, ev.device_info().get("bandwidth_gbs"))
            if out.result is None and progress.read(d):  # killed (time, memory): say where it was
                result.message += f", while at: {progress.describe(progress.read(d))}"
    finally:
        ev.cleanup(d)
    result.durations_s = {**durations, **result.durations_s}
    if shared and result.status == "runtime_error" and "out of memory" in (result.message or "").lower():
        # Possibly the other lanes' memory, not the candidate's own need: once more, alone.
        again = run_candidate(ev, prep, ref, alt_ref, eager_ms=eager_ms, time_it=time_it, timeout_s=timeout_s, exclusive=True)
        again.durations_s["run_s"] = again.durations_s.get("run_s", 0.0) + durations["run_s"]
        return again
    return result


def candidate_job(prep, plan: Plan, ref, alt_ref, d: Path, device: str) -> CandidateJob:
    """The child's job for ``plan``, with every file it names placed in its job directory ``d``: the
    candidate's source at the task's size (and at the alternate size), and copies of the inputs of
    the input sets the plan uses (``Reference.give``): no reference outputs, no path out of ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256(prep.main_src.encode()).hexdigest()[:12]
    (d / f"candidate_{h}.py").write_text(prep.main_src)
    ref.give(d / "main", plan.main_sets(), random_weights=bool(plan.random_trials))
    job = CandidateJob(
        device=device, module_name=f"pike_candidate_{h}", init_seed=ref.meta["init_seed"],
        main=Part(code=f"candidate_{h}.py", data="main", facts=ref.facts(), trials=plan.trials, random_trials=plan.random_trials),
        timing=plan.timing, imports=task_imports(prep.task.path),
    )
    if alt_ref is not None and alt_ref.same_code:  # another batch size: the main part's model checks it
        alt_ref.give(d / "alt", plan.alt_trials, random_weights=False, init_inputs=False)
        job.alt = Part(code=f"candidate_{h}.py", data="alt", facts=alt_ref.facts(), trials=plan.alt_trials, same_model=True)
    elif alt_ref is not None:
        (d / f"candidate_{h}_alt.py").write_text(apply_overrides(prep.source, alt_ref.task.overrides))
        alt_ref.give(d / "alt", plan.alt_trials, random_weights=False)
        job.alt = Part(code=f"candidate_{h}_alt.py", data="alt", facts=alt_ref.facts(), trials=plan.alt_trials)
    return job
