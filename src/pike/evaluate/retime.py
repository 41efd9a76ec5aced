"""Jobs on already verified sources: interleaved re-timing (the numbers reported) and profiling (the
optimiser's profile feedback). Orchestrator side; the child side is ``worker.run_retime`` and
``worker.run_profile``."""

from __future__ import annotations

from pike.evaluate.jobs import ProfileJob, RetimeEntry, RetimeJob
from pike.evaluate.paths import task_imports
from pike.evaluate.result import Timing
from pike.evaluate.static import check_source
from pike.task import Task, apply_overrides


def retime(ev, task: Task, entries: dict[str, str], *, max_time_s: float = 3.0, timeout_s: float | None = None) -> dict[str, Timing]:
    """The given sources timed interleaved in one process. Entries that need an extension build must
    have been built (evaluated) before."""
    c = ev.config
    sets = list(range(min(c.timing_sets, ev.reference(task).meta["pool"])))
    d = ev.job_dir("retime")
    d.mkdir(parents=True, exist_ok=True)
    items = []
    for i, (name, src) in enumerate(entries.items()):
        main_src = apply_overrides(src, task.overrides)
        (d / f"entry_{i}.py").write_text(main_src)
        items.append(RetimeEntry(name=name, code=f"entry_{i}.py", env=ev.extension_env(main_src, check_source(src).tags)))
    try:
        ref = ev.refs.given(task, d / "data", sets)
        job = RetimeJob(
            device=ev.job_device, module_name=f"pike_retime_{task.name}", init_seed=ref.meta["init_seed"], data="data", facts=ref.facts(),
            entries=items, sets=sets, config=c.timing.to_json(), max_time_s=max_time_s, imports=task_imports(task.path),
            interval_target=c.interval_target,
        )
        out = ev.run_job(job, d, timeout=timeout_s or max(c.timeout_s, 60 + 10 * len(items)))
    finally:
        ev.cleanup(d)
    if not out.result or out.result.get("status") != "ok":
        msg = (out.result or {}).get("message") or out.describe_exit()
        raise RuntimeError(f"interleaved re-timing of {task.label} failed: {msg}\n{out.log_tail[-2000:]}")
    try:  # statistics from the raw readings, here
        return {name: Timing.from_raw(raw, c.device_type == "cuda", c.objective) for name, raw in out.result["timings"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise RuntimeError(f"interleaved re-timing of {task.label}: malformed readings ({e})") from None


def profile(ev, task: Task, source: str, *, rows: int = 10) -> str:
    """A verified solution's top kernels by time ("" when profiling failed)."""
    d = ev.job_dir("profile")
    d.mkdir(parents=True, exist_ok=True)
    main_src = apply_overrides(source, task.overrides)
    (d / "solution.py").write_text(main_src)
    try:
        ref = ev.refs.given(task, d / "data", [0])
        job = ProfileJob(device=ev.job_device, module_name=f"pike_profile_{task.name}", code="solution.py", data="data",
                         facts=ref.facts(), init_seed=ref.meta["init_seed"], rows=rows, imports=task_imports(task.path))
        out = ev.run_job(job, d, timeout=ev.config.timeout_s, env=ev.extension_env(main_src, check_source(source).tags))
    finally:
        ev.cleanup(d)
    if not out.result or out.result.get("status") != "ok":
        return ""
    return out.result["profile"]
