"""The run stage (evaluator steps 3-7, 9 and 10): one fresh child builds the candidate, runs the
planned trials and hands its outputs over; the orchestrator checks them while it waits (``Checker``)
and, if they are right and the plan times it, lets it time its forward."""

from __future__ import annotations

import hashlib
import random
import time

from pike.evaluate.jobs import CandidateJob, Part
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
    beside other lanes' checks (unless ``exclusive``) and its timing alone."""
    c = ev.config
    timeout_s = timeout_s or c.timeout_s
    rng = random.Random(hashlib.sha256(f"{prep.source}{ev.next_id()}{c.seed}".encode()).digest())
    plan = plan_candidate(c, ref, alt_ref, rng, time_it=time_it, trusted=prep.trusted)
    d = ev.job_dir("candidate", prep.trusted)
    job = candidate_job(ev, prep, plan, ref, alt_ref)
    gate, held = ev.gate, []
    shared = gate is not None and ev.share_checks and not exclusive
    job.gpu_gate = gate is not None
    job.ipc = ev.uses_comparator
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
        out = ev.sandbox.run(job.to_json(), d, timeout=timeout_s, env={**ev.child_env, **prep.env}, on_ask=on_ask,
                             trusted=prep.trusted)
    finally:
        if held:
            gate.release()
    durations = {**prep.durations, "run_s": time.monotonic() - t0, "start_s": out.start_s, "compare_s": checker.compare_s}
    try:
        result = assemble_result(c, out, checker, ref, prep.tags, plan, eager_ms, timeout_s, ev.device_info().get("bandwidth_gbs"))
    finally:
        ev.cleanup(d)
    result.durations_s = {**durations, **result.durations_s}
    if shared and result.status == "runtime_error" and "out of memory" in (result.message or "").lower():
        # Possibly the other lanes' memory, not the candidate's own need: once more, alone.
        again = run_candidate(ev, prep, ref, alt_ref, eager_ms=eager_ms, time_it=time_it, timeout_s=timeout_s, exclusive=True)
        again.durations_s["run_s"] = again.durations_s.get("run_s", 0.0) + durations["run_s"]
        return again
    return result


def candidate_job(ev, prep, plan: Plan, ref, alt_ref) -> CandidateJob:
    """The child's job for ``plan``: the candidate's source at the task's size (and at the alternate
    size), the references' inputs, and what to run."""
    d = ev.workdir / "code"
    d.mkdir(exist_ok=True)
    h = hashlib.sha256(prep.main_src.encode()).hexdigest()[:12]
    main_file = d / f"candidate_{h}.py"
    main_file.write_text(prep.main_src)
    job = CandidateJob(
        device=ev.job_device, module_name=f"pike_candidate_{h}", init_seed=ref.meta["init_seed"],
        main=Part(code=str(main_file), ref=str(ref.dir), trials=plan.trials, random_trials=plan.random_trials),
        timing=plan.timing,
    )
    if alt_ref is not None:
        alt_file = d / f"candidate_{h}_alt.py"
        alt_file.write_text(apply_overrides(prep.source, alt_ref.task.overrides))
        job.alt = Part(code=str(alt_file), ref=str(alt_ref.dir), trials=plan.alt_trials)
    return job
