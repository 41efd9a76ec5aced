"""What runs inside an evaluation child (evaluator steps 4-7): one job per process.

Jobs (``jobs``: ``job.json`` in the job directory; results go to ``result.json`` and ``*.pt`` beside it):
- ``probe``: versions and device facts.
- ``reference``: the task's own Model in strict fp32 on a pool of input sets, the determinism probes,
  another seed's output, and re-randomised weights with their outputs. Never imports candidate code.
- ``candidate``: import, seeded build, correctness trials (seeded, re-randomised weights, alternate
  size), then hands the outputs over and waits for the verdict and, if correct, times the forward
  and hands the timed runs' outputs over.
- ``retime`` (several verified models timed A B A B ...), ``profile`` (top kernels), ``build``
  (import only, to compile extensions with no GPU).
Shared helpers live in ``harness`` and the reference job in ``reference_job``.

Nothing here compares against references: the child never sees them. Outputs are saved and the
orchestrator compares.
"""

from __future__ import annotations

import os
import random
import re
import sys
from pathlib import Path

import torch

from pike.evaluate import ipc, jobs
from pike.evaluate import stats as stats_mod
from pike.evaluate import timing as timing_mod
from pike.evaluate import weights as weights_mod
from pike.evaluate.build import extension_lock, extension_lock_path
from pike.evaluate.harness import (
    Failure, Integrity, RefData, TaskFailure, build_model, check_output_types, guarded_call,
    import_file, ask, output_devices, perf_counter, pin_for_timing, run_trials, save_atomic, seed_all, set_imports, tb, to_cpu, to_device, write_json,
    _RUN,
)
from pike.evaluate.jobs import BuildJob, CandidateJob, ProbeJob, ProfileJob, RetimeJob
from pike.evaluate.progress import Progress
from pike.evaluate.reference_job import run_reference

# How an allocation refused by the address-space limit shows (Python, torch's CPU allocator).
_OUT_OF_MEMORY = re.compile(r"MemoryError|can't allocate memory|Cannot allocate memory|std::bad_alloc")

# ---------------------------------------------------------------- probe


def run_probe(job: ProbeJob, job_dir: Path) -> dict:
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0]}
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        info["triton"] = None
    device = torch.device(job.device)
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(
            device_name=p.name, sms=p.multi_processor_count, memory_bytes=p.total_memory,
            l2_bytes=getattr(p, "L2_cache_size", None), capability=f"{p.major}.{p.minor}",
            cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        )
        if job.bandwidth:
            n = 256 * 2**20  # 1 GiB of fp32 each way
            a = torch.empty(n, device=device)
            b = torch.empty_like(a)
            for _ in range(3):
                b.copy_(a)
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            times = []
            for _ in range(10):
                start.record()
                b.copy_(a)
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            info["bandwidth_gbs"] = 2 * a.numel() * 4 / (sorted(times)[len(times) // 2] / 1e3) / 1e9
    else:
        import platform

        from pike.evaluate.device_facts import cpu_facts

        info.update(device_name=platform.processor() or platform.machine(), cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(), threads=torch.get_num_threads())
        info.update(cpu_facts(), cpu_capability=torch.backends.cpu.get_cpu_capability())
    return {"status": "ok", "info": info}


def gate_device(job_dir: Path, device: torch.device):
    """Lanes (several evaluation processes per GPU): ask for the device at the first CUDA
    initialisation, wherever the candidate's code triggers it (import, construction, ``.to``), so
    that no context is created while another lane's child holds the device. Returns the fallback,
    called before the checks: a path that initialised CUDA without ``torch.cuda._lazy_init`` (or a
    CPU device) asks there."""
    state = {"asked": False}

    def ask_once() -> None:
        if not state["asked"]:
            state["asked"] = True
            ask(job_dir, "gpu")

    if device.type == "cuda":
        import torch.cuda as tc

        lazy_init = tc._lazy_init

        def gated_lazy_init():
            ask_once()
            return lazy_init()

        tc._lazy_init = gated_lazy_init  # torch's C++ lazy init calls this module attribute too
    return ask_once


def run_candidate(job: CandidateJob, job_dir: Path) -> dict:
    device = torch.device(job.device)
    gpu_ready = gate_device(job_dir, device) if job.gpu_gate else None
    if gpu_ready is not None and extension_lock_path():
        # An extension's import holds its build lock: waiting for the device under it could deadlock
        # with a lane that holds the device and imports the same source for its alternate size.
        gpu_ready()
    integrity = Integrity()
    t0 = perf_counter()
    stage = Progress(job_dir)  # named in the verdict if the process is killed (time, memory)
    stage("importing and building the model")
    ref = RefData(job_dir / job.main.data, job.main.facts)
    model = build_model(job_dir / job.main.code, ref, job.module_name, device, job.init_seed, integrity, cpu_first=gpu_ready is not None)
    if gpu_ready is not None:
        gpu_ready()
        try:
            model = model.to(device)
        except Exception as e:  # noqa: BLE001
            raise Failure("runtime_error", "init", f"moving ModelNew to {device} raised {type(e).__name__}: {e}"[:2000], tb()) from None
    durations = {"import_init_s": perf_counter() - t0}
    call_seed = ref.meta["call_seed"]
    check_inputs = "mutates_inputs" not in ref.meta["flags"]
    keep = job.ipc  # outputs stay on the device for the comparator
    stage("correctness trials")
    checks = {"seeded": run_trials(model, ref, job.main.trials, device, call_seed, "forward", check_inputs, keep)}
    compat, why = weights_mod.compatible(ref.meta["state_dict"], model)
    if compat and job.main.random_trials:
        seeded_sd = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(ref.random_sd())
        checks["random"] = run_trials(model, ref, job.main.random_trials, device, call_seed, "forward (re-randomised weights)", check_inputs, keep)
        model.load_state_dict(seeded_sd)
    if job.alt is not None and job.alt.same_model:  # the task's inputs at another batch size
        alt_ref = RefData(job_dir / job.alt.data, job.alt.facts)
        checks["alt"] = run_trials(model, alt_ref, job.alt.trials, device, alt_ref.meta["call_seed"], f"forward (at {alt_ref.meta['label']})",
                                   check_inputs, keep)
    elif job.alt is not None:
        alt_ref = RefData(job_dir / job.alt.data, job.alt.facts)
        alt_model = build_model(job_dir / job.alt.code, alt_ref, job.module_name + "_alt", device, job.init_seed, integrity, " (alternate size)")
        checks["alt"] = run_trials(alt_model, alt_ref, job.alt.trials, device, alt_ref.meta["call_seed"], "forward (alternate size)", check_inputs, keep)
        del alt_model
    changed = integrity.changed()
    if changed:
        raise Failure("rejected", "forward", f"the candidate replaced {', '.join(changed)}; harness functions must not be patched")
    durations["checks_s"] = perf_counter() - t0 - durations["import_init_s"]
    verdict = hand_over(job_dir, "checks", checks, {g: [[i, o] for i, o in outs.items()] for g, outs in checks.items()}, keep, device)
    del checks
    result = {"status": "ok", "state_dict_compatible": compat, "state_dict_note": why, "durations": durations}

    def finish() -> dict:
        # Last, after the timing: under the dispatch mode torch.compile skips the frame and may run it
        # uncompiled from then on (fullgraph code raised in the timing loop when this came first).
        result["precision"] = observe_precision(model, ref, device, call_seed, job.main.trials[0])
        changed = integrity.changed()
        if changed:
            raise Failure("rejected", "precision", f"the candidate replaced {', '.join(changed)}")
        return result

    if not verdict.get("time") or job.timing is None:
        return finish()
    pin_for_timing()
    stage("timing")
    t1 = perf_counter()
    readings, spot, refill, probe = _time(model, ref, job.timing.to_json(), device, call_seed, keep)
    timed = {"spot": spot, "refill": refill, "probe": probe}
    hand_over(job_dir, "timing", timed, timed, keep, device)
    del timed, spot, refill, probe
    changed = integrity.changed()
    if changed:
        raise Failure("rejected", "timing", f"the candidate replaced {', '.join(changed)} while being timed")
    durations["timing_s"] = perf_counter() - t1
    result["timing"] = readings  # raw: the orchestrator computes every statistic
    return finish()


def observe_precision(model, ref: RefData, device, call_seed: int, sid: int) -> dict | None:
    """The dtypes one more forward of the checked model really uses, for its precision tags
    (``precision``); None when it cannot be observed (the static tags then stand)."""
    from pike.evaluate.precision import observe

    try:
        seed_all(call_seed + sid)
        with torch.inference_mode():
            seen = observe(model, to_device(ref.inputs(sid), device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return seen
    except Exception:  # noqa: BLE001 - a forward that rejects the dispatch mode is judged by the checks, not here
        return None


def hand_over(job_dir: Path, name: str, outputs, rows: dict, keep: bool, device) -> dict:
    """Hand ``outputs`` over to the orchestrator's checks (``verdict.Checker``) and return its answer:
    with ``keep``, as memory handles for the comparator in ``<name>.json`` (``rows``: the same outputs
    as ``{key: [[ids..., output], ...]}``), asked as ``<name>-ipc``; else, or when the handles cannot
    be made or read, saved to ``<name>.pt`` (on the CPU) and asked as ``<name>-file``."""
    if keep:
        held: list = []  # the shared tensors, alive until the answer
        try:
            _same_device(outputs, device)
            described = {k: [[*row[:-1], ipc.share(row[-1], held)] for row in v] for k, v in rows.items()}
            write_json(job_dir / f"{name}.json", described)
            answer = ask(job_dir, f"{name}-ipc")
        except (ipc.NotShareable, RuntimeError):
            answer = {"resend": True}
        del held
        if not answer.get("resend"):
            return answer
    save_atomic(to_cpu(outputs), job_dir / f"{name}.pt")
    return ask(job_dir, f"{name}-file")


def _same_device(obj, device) -> None:
    others = sorted(set(output_devices(obj)) - {device.type})
    if others:
        raise ipc.NotShareable(f"an output on {others[0]}")


def _before_each_run(buffers: dict, call_seed: int):
    """What runs before each timed forward, outside the timed region."""

    def prepare(sid):
        seed_all(call_seed + sid)  # random tasks stay checkable
        # Bump each buffer's version counter (a self-copy moves no data): a cache keyed by pointer and
        # version would otherwise tell the repeats of the timing loop apart from new data for free.
        for t in buffers.get(sid, ()):
            if isinstance(t, torch.Tensor):
                t.copy_(t)

    return prepare


def _time(model, ref: RefData, tj: dict, device, call_seed: int, keep: bool = False):
    """The timed runs, then back-to-back batches, the refill check and the fresh-content probe.
    Returns (raw readings, spot outputs, refill outputs, probe outputs)."""
    cfg = timing_mod.TimingConfig(**tj["config"])
    rng = random.Random(tj["seed"])
    sets = tj["sets"]
    # One device buffer per timing set, reused across runs (so pointer caching shows up at the refill).
    buffers = {sid: to_device(ref.inputs(sid), device) for sid in sets}

    def call(sid):
        return model(*buffers[sid])

    def check(out):  # the exact type of every output, before the harness touches it
        check_output_types(out, "timing")

    prepare = _before_each_run(buffers, call_seed)
    probe_out: list = []
    try:
        with torch.inference_mode():
            raw, spot = timing_mod.time_forward(call, sets, device, cfg, rng, prepare, check)
            calls = timing_mod.batch_calls(timing_mod._median(raw["event_ms"]), cfg)
            raw["batch_ms"] = timing_mod.back_to_back(call, sets[0], device, cfg, calls, prepare, check)
            # Refill the same buffers in place with held-out values and run again: outputs cached by
            # input pointer or by call count now come out stale.
            refill = []
            for sid, new in zip(sets, tj["refill"]):
                src = ref.inputs(new)
                for dst, s in zip(buffers[sid], src):
                    if isinstance(dst, torch.Tensor):
                        dst.copy_(s)
                y = timing_mod.clone_outputs(guarded_call(model, buffers[sid], call_seed + new, check_inputs=False, stage="timing"))
                refill.append((sid, new, to_cpu(y, move=not keep)))
            if tj.get("probe"):
                raw["probes"], probe_out = _fresh_probe(call, buffers, ref, sets[0], tj["probe"], device, cfg, prepare, check)
            if device.type == "cuda":
                torch.cuda.synchronize()
    except Failure:
        raise
    except Exception as e:  # noqa: BLE001
        raise Failure("runtime_error", "timing", f"forward raised {type(e).__name__} while being timed: {e}"[:2000], tb()) from None
    spot = [(i, sid, to_cpu(o, move=not keep)) for i, sid, o in spot]
    probe_out = [(sid, to_cpu(o, move=not keep)) for sid, o in probe_out]
    return raw, spot, refill, probe_out


PROBE_BUFFER = -1  # the probe's own input buffer among the timing buffers


def _fresh_probe(call, buffers: dict, ref: RefData, repeat_sid: int, groups: list[list[int]], device, cfg, prepare, check):
    """Timing on input sets new to this process (held-out sets of the reference, drawn at random for
    each evaluation, so each is a fresh draw of the task's inputs and never a small change of a timing
    input) against the repeated timing inputs (see timing.fresh_content_probe). The second group
    confirms, and runs only when the first looks like a cache. Returns (readings per probe, outputs)."""
    buffers[PROBE_BUFFER] = [t.clone() if isinstance(t, torch.Tensor) else t for t in buffers[repeat_sid]]

    def load(sid):
        for dst, src in zip(buffers[PROBE_BUFFER], ref.inputs(sid)):
            if isinstance(dst, torch.Tensor):
                dst.copy_(src)
        return PROBE_BUFFER

    probes, outs = [], []
    for group in groups:
        readings, got = timing_mod.fresh_content_probe(call, repeat_sid, group, load, device, cfg, prepare, check)
        probes.append(readings)
        outs += got
        if timing_mod._median(readings["fresh_ms"]) <= 1.5 * timing_mod._median(readings["repeat_ms"]):
            break
    return probes, outs


# ---------------------------------------------------------------- interleaved re-timing


def run_retime(job: RetimeJob, job_dir: Path) -> dict:
    """Eager, compile and solutions timed A B A B ... in one process (already verified elsewhere)."""
    device = torch.device(job.device)
    integrity = Integrity()
    models = {}
    ref = RefData(job_dir / job.data, job.facts)
    for i, entry in enumerate(job.entries):
        os.environ.update(entry.env)
        models[entry.name] = build_model(job_dir / entry.code, ref, f"{job.module_name}_{i}", device, job.init_seed, integrity)
    call_seed = ref.meta["call_seed"]
    sets = job.sets
    buffers = {sid: to_device(ref.inputs(sid), device) for sid in sets}

    prepare = _before_each_run(buffers, call_seed)
    calls = {name: (lambda m: (lambda sid: m(*buffers[sid])))(m) for name, m in models.items()}
    cfg = timing_mod.TimingConfig(**job.config)
    target, anchor = job.interval_target, next(iter(calls))

    def enough(rounds):  # when to stop only; the reported intervals are the orchestrator's
        try:
            return bool(target) and stats_mod.tight(rounds, anchor, target)
        except Exception:  # noqa: BLE001 - a model that patched numpy: the time cap decides
            return False

    with torch.inference_mode():
        for call in calls.values():  # compile (torch.compile, Triton) before the cores are narrowed
            prepare(sets[0])
            call(sets[0])
        pin_for_timing()
        raw = timing_mod.interleaved(calls, sets, device, cfg, prepare, max_time_s=job.max_time_s, enough=enough)
    if integrity.changed():
        raise Failure("rejected", "retime", f"a model replaced {', '.join(integrity.changed())}")
    return {"status": "ok", "timings": raw}


# ---------------------------------------------------------------- profile


def run_profile(job: ProfileJob, job_dir: Path) -> dict:
    """Where a verified solution's forward spends its time (``profiling``), as text for the prompts."""
    from pike.evaluate.profiling import format_profile, profile_forward

    device = torch.device(job.device)
    ref = RefData(job_dir / job.data, job.facts)
    model = build_model(job_dir / job.code, ref, job.module_name, device, job.init_seed, Integrity())
    x = to_device(ref.inputs(0), device)
    with torch.inference_mode():
        for _ in range(3):
            model(*x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        p = profile_forward(model, x, device, job.iters)
    return {"status": "ok", "profile": format_profile(p, top=job.rows)}


# ---------------------------------------------------------------- build


def run_build(job: BuildJob, job_dir: Path) -> dict:
    """Import the candidate so that its extensions compile (no GPU in this process)."""
    try:
        with extension_lock():
            import_file(job_dir / job.code, job.module_name)
    except Exception as e:  # noqa: BLE001
        if "Error building extension" in str(e) or "CalledProcessError" in type(e).__name__:
            raise Failure("build_error", "build", f"building the extension failed: {type(e).__name__}", str(e)[-8000:]) from None
        # Anything else (code that needs the GPU at import, say) is the run stage's to report.
        return {"status": "deferred", "message": f"{type(e).__name__}: {e}"[:500]}
    return {"status": "ok"}


# ---------------------------------------------------------------- entry


def main(job_dir: str | os.PathLike) -> int:
    job_dir = Path(job_dir)
    job = jobs.load(job_dir)
    set_imports(getattr(job, "imports", None))  # before any task or candidate code is imported
    runners = {"probe": run_probe, "reference": run_reference, "candidate": run_candidate, "build": run_build, "retime": run_retime, "profile": run_profile}
    try:
        result = runners[job.kind](job, job_dir)
    except Failure as f:
        result = {"status": f.status, "stage": f.stage, "message": f.message, "feedback": f.feedback}
    except TaskFailure as e:
        result = {"status": "task_error", "message": str(e), "feedback": e.detail}
    except Exception as e:  # noqa: BLE001
        result = {"status": "runtime_error", "stage": job.kind, "message": f"{type(e).__name__}: {e}"[:2000], "feedback": tb()}
    limit = _RUN["memory_bytes"]
    if limit and result["status"] == "runtime_error" and _OUT_OF_MEMORY.search(result.get("message", "")):
        result["message"] = f"over the memory limit of {limit / 2**30:.3g} GB (eval.memory_limit_gb): {result['message']}"
    write_json(job_dir / "result.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
