"""The evaluation pipeline: the one order of stages that every evaluation goes through.

    static -> references -> build -> run (checks -> verdict -> timing) -> extra check -> result

``pike eval``, baselines, the local pool and the Ray workers all call :func:`evaluate`. What differs
between them is only where a stage runs, which a ``Placement`` decides: ``Local`` runs every stage
on one :class:`~pike.evaluate.evaluator.Evaluator` in the calling thread; the pool
(:class:`~pike.evaluate.pool.EvalPool`) computes references once per task on a device slot, builds on
its CPU build pool, and runs the device stages on a free slot, under the device's gate.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol

from pike.evaluate import stats
from pike.evaluate.checksums import Tampered
from pike.evaluate.paths import task_imports
from pike.evaluate.result import EvalResult
from pike.evaluate.slots import CANDIDATE, STARTUP
from pike.evaluate.static import check_source
from pike.task import Task, apply_overrides


@dataclass
class Prepared:
    """A candidate that passed the static check, on its way through the later stages."""

    task: Task
    source: str
    main_src: str  # with the task's size set applied
    tags: list[str]
    needs_build: bool
    env: dict = field(default_factory=dict)  # extension cache of its build
    durations: dict = field(default_factory=dict)
    trusted: bool = False  # PIKE's own code (baselines, offline variants): no cheat probes


def needs_extension_build(tags: list[str]) -> bool:
    return "cpp_ext" in tags or "cuda" in tags


def static(config, task: Task, source: str, *, trusted: bool = False) -> Prepared | EvalResult:
    """Stage 1 (no candidate code runs): a rejection, or what the later stages need."""
    report = check_source(source, task_module_names=sorted({task.path.stem, task.name}))
    tags = list(report.tags)
    if report.defines is None:
        return EvalResult("rejected", "the candidate defines neither ModelNew nor Model", "; ".join(report.violations), tags=tags, device=config.device, stage="static")
    if not report.ok and not trusted:
        return EvalResult("rejected", "static check: " + "; ".join(report.violations[:5]), "\n".join(report.violations), tags=tags, device=config.device, stage="static")
    main_src = apply_overrides(source, task.overrides)
    return Prepared(task, source, main_src, tags, needs_extension_build(tags), trusted=trusted)


def build(config, prep: Prepared, builder, job_dir) -> EvalResult | None:
    """Stage 3: compile extensions with no GPU held; a failure result, or None to go on."""
    if not prep.needs_build:
        return None
    prep.env = builder.env(prep.main_src)
    t0 = time.monotonic()
    b = builder.build(prep.main_src, job_dir, timeout=config.build_timeout_s, imports=task_imports(prep.task.path))
    prep.durations["build_s"] = time.monotonic() - t0
    if b.status in ("build_error", "timeout", "crashed"):
        status = "timeout" if b.status == "timeout" else "build_error"
        return EvalResult(status, b.message, b.log[-8000:], tags=prep.tags, device=config.device, stage="build", durations_s=dict(prep.durations))
    return None


class Placement(Protocol):
    """Where the stages run."""

    config: object  # EvalConfig

    async def references(self, task: Task) -> None:
        """The task's references exist (computed on a device if they were not cached)."""

    async def build(self, prep: Prepared) -> EvalResult | None:
        """Stage 3 wherever builds run."""

    async def on_device(self, work: Callable, priority: int) -> EvalResult:
        """``work(evaluator, alone)`` on an evaluator that holds a device; ``alone()`` is a context
        in which that device is this evaluation's alone (for stages that must not share it)."""


async def evaluate(
    place: Placement, task: Task, source: str, *, trusted: bool = False, eager_ms: float | None = None,
    time_it: bool | None = None, timeout_s: float | None = None, baseline: bool = False, paired: bool = False,
) -> EvalResult:
    """Evaluate ``source`` for ``task``. ``trusted`` skips the static check's verdict and the cheat
    probes (PIKE's own code); ``eager_ms`` gives the speedup and arms the extra check; a
    ``baseline`` is start-up work and holds its device alone throughout."""
    t_start = time.monotonic()
    prep = static(place.config, task, source, trusted=trusted)
    if isinstance(prep, EvalResult):
        return prep
    await place.references(task)
    prep.durations["reference_s"] = time.monotonic() - t_start
    failed = await place.build(prep)
    if failed is not None:
        return failed

    def on_device(ev, alone) -> EvalResult:
        result = run_stage(ev, alone, prep, lambda: ev.references(task), eager_ms=eager_ms, time_it=time_it, timeout_s=timeout_s, exclusive=baseline)
        if paired and result.ok and result.timing is not None:
            with alone():
                confirm(ev, prep, result)
        if not ev.needs_extra_check(result):
            return result
        with alone():  # new references and a re-timing: the device throughout
            return extra_check(ev, alone, prep, result)

    result = await place.on_device(on_device, STARTUP if baseline else CANDIDATE)
    result.durations_s["total_s"] = time.monotonic() - t_start
    return result


def run_stage(ev, alone, prep: Prepared, references: Callable, **kwargs) -> EvalResult:
    """Stage 4 against ``references()`` (the reference and the alternate size's, or None). A reference
    file found changed on disk leaves no verdict: its entry is dropped and computed again (the device
    alone), and the run repeated, once."""
    why = ""
    for attempt in range(2):
        with alone() if attempt else nullcontext():
            ref, alt_ref = references()
        try:
            return ev.run(prep, ref, alt_ref, **kwargs)
        except Tampered as e:
            why = str(e)
            ev.refs.forget(e.ref, why)
    return EvalResult("rejected", f"the stored reference outputs were changed on disk while it ran, twice ({why})",
                      tags=prep.tags, device=ev.config.device, stage="references")


def extra_check(ev, alone, prep: Prepared, result: EvalResult) -> EvalResult:
    """Stage 5: over ``extra_check_speedup`` vs eager, check again on input sets never used before,
    then time the candidate side by side with eager."""
    sp = result.speedup_vs_eager
    fresh = lambda: (ev.reference(prep.task, pool=ev.config.trials, input_seed=50_000, second_shape=False), None)  # noqa: E731
    again = run_stage(ev, alone, prep, fresh, eager_ms=None, time_it=False)
    if not again.ok:
        again.message = f"{sp:.1f}x vs eager but wrong on new inputs: {again.message}"
        return again
    result.trials += again.trials
    # A lucky timing (or an eager baseline measured under load) must not stand: time both side by
    # side in one process and report those numbers.
    if result.speedup_interval is None:
        confirm(ev, prep, result, max_time_s=1.0)
    result.message += (f"; {sp:.1f}x vs eager in the search, confirmed on {again.trials} new input sets, "
                       f"{result.speedup_vs_eager:.1f}x re-timed side by side with eager")
    return result


def confirm(ev, prep: Prepared, result: EvalResult, max_time_s: float = 3.0) -> None:
    """Time the candidate side by side with eager, in one process, A B A B ...: its figure, eager's
    and the speedup's interval replace those of its own timing (an eager time from another process,
    or a candidate timed under load, would not stand)."""
    t0 = time.monotonic()
    try:
        t = ev.retime(prep.task, {"eager": prep.task.source, "candidate": prep.source}, max_time_s=max_time_s)
    except (RuntimeError, Tampered) as e:
        result.message += f"; not re-timed beside eager ({str(e).splitlines()[0][:200]})"
        return
    result.eager_ms = t["eager"].value_ms
    result.timing = replace(t["candidate"], peak_mem_bytes=result.timing.peak_mem_bytes)
    result.speedup_interval = stats.speedup(t["eager"].samples_ms, t["candidate"].samples_ms).to_json()
    result.durations_s["confirm_s"] = time.monotonic() - t0


class Local:
    """Every stage on one evaluator, in the calling thread (``pike eval``, a Ray worker)."""

    def __init__(self, ev):
        self.ev = ev
        self.config = ev.config

    async def references(self, task: Task) -> None:
        self.ev.references(task)

    async def build(self, prep: Prepared) -> EvalResult | None:
        return build(self.config, prep, self.ev.builder, self.ev.job_dir("build"))

    async def on_device(self, work: Callable, priority: int) -> EvalResult:
        return work(self.ev, nullcontext)


def run_now(coro):
    """The result of a pipeline on ``Local``, whose stages never wait: it completes in one step."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a local evaluation waited on something")
