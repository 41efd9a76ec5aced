"""Baselines as solution files: eager is the task itself; each torch.compile mode wraps its forward.

Baselines go through the same pipeline (same checks, same timing code) as every candidate, and their
results are cached per task, device and torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pike.evaluate import pipeline
from pike.evaluate.references import CACHE_FORMAT
from pike.evaluate.result import EvalResult
from pike.task import Task

GPU_COMPILE_MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead")
OPTIONAL_COMPILE_MODES = ("max-autotune",)  # slow to compile: on request (the paper's compile baseline)
CPU_COMPILE_MODES = ("default",)


def compile_modes(device_type: str, with_max_autotune: bool = False) -> tuple[str, ...]:
    if device_type != "cuda":
        return CPU_COMPILE_MODES
    return GPU_COMPILE_MODES + (OPTIONAL_COMPILE_MODES if with_max_autotune else ())


def baseline_source(task: Task, mode: str) -> str:
    """A solution file for baseline ``mode``: ``eager`` or ``compile:<mode>`` / a bare compile mode."""
    if mode == "eager":
        return task.source
    mode = mode.removeprefix("compile:")
    arg = "" if mode == "default" else f", mode={mode!r}"
    return task.source.rstrip() + f"""


# ---- PIKE baseline: torch.compile{f"(mode={mode!r})" if arg else ""} of the task's Model ----
import torch as _pike_torch
import torch._inductor.config as _pike_inductor_config

# Inductor draws random numbers its own way; eager's draws keep a random task checkable.
_pike_inductor_config.fallback_random = True


class ModelNew(Model):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A compiled bound method, not a wrapped module: the state_dict keeps the reference's keys.
        self._pike_forward = _pike_torch.compile(super().forward{arg})

    def forward(self, *args, **kwargs):
        return self._pike_forward(*args, **kwargs)
"""


async def baseline(place, cache: Path, info: dict, task: Task, mode: str, *, fresh: bool = False) -> EvalResult:
    """Baseline ``mode`` of ``task`` through the pipeline on ``place``; ``info``: the device's facts.
    ``fresh``: measure again (and refresh the cache) instead of reading an earlier run's number, so
    that one measurement taken under load does not follow every later run."""
    c = place.config
    key = hashlib.sha256(json.dumps([CACHE_FORMAT, task.resolved_source, mode, c.strict, c.require_state_dict, info.get("device_name"),
                                     info.get("torch"), c.device_type, c.timing.to_json(), c.objective]).encode()).hexdigest()[:20]
    path = Path(cache) / "baselines" / f"{key}.json"
    if path.exists() and not fresh:
        return EvalResult.from_json(json.loads(path.read_text()))
    result = await pipeline.evaluate(place, task, baseline_source(task, mode), trusted=True, baseline=True)
    if result.ok:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result.to_json()))
        os.replace(tmp, path)
    return result


async def measure_baselines(pool, task: Task, modes: list[str], *, interleaved: bool = True, on_mode=None) -> dict:
    """Eager and compile-mode baselines of one task through the pool; with ``interleaved``, the correct
    ones are re-timed A B A B ... in one process (the numbers to report)."""
    results = {}
    for mode in modes:
        r = await pool.baseline(task, mode)
        results[mode] = r
        if on_mode:
            on_mode(mode, r)
    eager = results.get("eager")
    row = {"task": task.name, "size": task.size, "modes": {}}
    for mode, r in results.items():
        row["modes"][mode] = {
            "status": r.status, "message": r.message, "runtime_ms": r.runtime_ms,
            "iqr_ms": r.timing.iqr_ms if r.timing else None,
            "speedup_vs_eager": (eager.runtime_ms / r.runtime_ms) if eager and eager.ok and r.ok and r.runtime_ms else None,
        }
    ok = {m: r for m, r in results.items() if r.ok}
    if interleaved and len(ok) > 1:
        timings = await pool.retime(task, {m: baseline_source(task, m) for m in ok})
        base = timings.get("eager")
        for m, t in timings.items():
            row["modes"][m]["interleaved_ms"] = t.value_ms
            row["modes"][m]["interleaved_iqr_ms"] = t.iqr_ms
            if base:
                row["modes"][m]["interleaved_speedup"] = base.value_ms / t.value_ms
    return row
