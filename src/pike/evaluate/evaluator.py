"""The evaluator: the protocol of the design's "The evaluator", steps 1-10, for one device.

Orchestrator side: candidate code never runs in this process. It checks the source statically, has
extensions built with no GPU held, has references computed by children that never import candidate
code, has each candidate run in a fresh child, and compares every output itself (or, with
``comparator="on"``, has a comparator process compare them where they are).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from pike.evaluate.build import Builder
from pike.evaluate.compare import Tolerance, weak_tolerance
from pike.evaluate.result import EvalResult, Timing
from pike.evaluate.sandbox import JobOutcome, Sandbox, owned_tempdir, scrubbed_env
from pike.evaluate.static import check_source
from pike.evaluate.comparator import Comparator, ComparatorError
from pike.evaluate.verdict import (
    UnsafeOutputs, assemble_result, check_outputs, check_timed, comparator_diffs, load_child_file,
)
from pike.evaluate.timing import TimingConfig
from pike.task import Task, TaskError, apply_overrides


# Bumped whenever what the cache holds changes shape or meaning, so that stale entries are never read.
CACHE_FORMAT = 4


def default_cache_dir() -> Path:
    env = os.environ.get("PIKE_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pike"


@dataclass
class EvalConfig:
    device: str = "cpu"  # cpu, cuda, cuda:N
    trials: int = 5  # K correctness trials on held-out input sets
    random_weight_trials: int = 2  # trials with re-randomised weights
    alt_trials: int = 2  # trials at the alternate size set, where the task has one
    timeout_s: float = 300.0  # per candidate run (import, compile, checks, timing)
    build_timeout_s: float = 600.0
    strict: bool = False  # tolerance 1e-4 instead of 1e-2 (fp32)
    require_state_dict: bool = True  # user-facing runs: the solution must load the reference's weights
    time: bool = True
    timing: TimingConfig = field(default_factory=TimingConfig)
    timing_sets: int = 2  # input sets rotated while timing (and as many held out for the refill check)
    pool_max_bytes: int = 512 * 2**20  # bound on the reference pool (inputs + outputs of all sets)
    floor_fraction: float = 0.8  # faster than I/O at this fraction of bandwidth is "suspect" (GPU)
    extra_check_speedup: float = 10.0  # over this vs eager: extra trials on new inputs
    fresh_ratio: float = 2.0  # this much slower on never-seen inputs than on repeated ones: "suspect" (0: off)
    start_method: str = "forkserver"
    # on: compare outputs in a comparator process on the device, handed over as memory (CUDA IPC; on
    # the CPU shared memory), not copied through files; off: the orchestrator compares the child's
    # files; auto: on for a GPU (0.5-4 s less per candidate there, BENCHMARKS.md), off on the CPU.
    comparator: str = "auto"
    comparator_cache_bytes: int = 2 * 2**30  # references it keeps on its device
    # device: the reference and every candidate are built under torch.device(<device>) (weights made
    # and initialised on the GPU: seconds less per candidate for a large model than the CPU's RNG);
    # cpu: built on the CPU, then moved. A task whose Model cannot be built on the device falls back
    # to the CPU (recorded in the reference's meta). No difference on a CPU device.
    init_on: str = "device"
    cache_dir: Path | None = None
    keep_jobs: bool = False  # keep job directories (candidate files, logs) for debugging
    cuda_arch_list: str | None = None
    cpu_affinity: tuple[int, ...] | None = None  # cores for this slot's timing loop
    prep_affinity: tuple[int, ...] | None = None  # cores before it (import, compile, checks); None: cpu_affinity
    seed: int = 0

    def __post_init__(self):
        if self.comparator not in ("on", "off", "auto"):
            raise ValueError(f"eval.comparator must be on, off or auto (on for a GPU), not {self.comparator!r}")
        if self.init_on not in ("device", "cpu"):
            raise ValueError(f"eval.init_on must be device or cpu (where models are built), not {self.init_on!r}")

    @property
    def device_type(self) -> str:
        return torch.device(self.device).type


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


@dataclass
class Reference:
    task: Task
    dir: Path
    meta: dict
    tolerance: Tolerance
    flags: list[str]
    _cache: dict = field(default_factory=dict)

    def path(self, sub: str, i: int) -> Path:
        return self.dir / sub / f"{i}.pt"

    def get(self, sub: str, i: int):
        # Small references stay in memory; large ones are read per use (one set is tens of MB).
        key = (sub, i)
        if key in self._cache:
            return self._cache[key]
        value = load_child_file(self.path(sub, i))  # tensors and plain values only, as for candidates
        if self.meta["output_bytes"] <= 4 * 2**20:
            self._cache[key] = value
        return value

    @property
    def has_golden(self) -> bool:
        """The model was also run in fp32 (bf16/fp16 tasks): ``golden/`` and ``golden_random/``."""
        return self.meta.get("golden") == "ok"

    def get_golden(self, sub: str, i: int):
        return self.get(sub, i) if self.has_golden else None


class Evaluator:
    """Evaluates candidates for tasks on one device, one candidate at a time."""

    def __init__(self, config: EvalConfig | None = None):
        self.config = config or EvalConfig()
        c = self.config
        self.cache = Path(c.cache_dir or default_cache_dir())
        self.cache.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(owned_tempdir("pike-eval-", _scratch_root()))
        self.child_env = self._child_env()
        self.sandbox = Sandbox(c.start_method)
        self.gate = None  # a DeviceGate when this evaluator is one of several lanes of its device (pool)
        self.share_checks = False  # with a gate: candidates' checks hold it shared, their timing exclusively
        self._builder: Builder | None = None
        self._refs: dict[str, Reference] = {}
        self._info: dict | None = None
        self._counter = itertools.count(1)
        self._cmp: Comparator | None = None
        self.comparator_fallbacks: list[str] = []  # why outputs went through files after all

    # -------------------------------------------------------------- set-up

    def _child_env(self) -> dict[str, str]:
        c = self.config
        env = {
            "TRITON_CACHE_DIR": str(self.cache / "triton"),
            "TORCHINDUCTOR_CACHE_DIR": str(self.cache / "inductor"),
        }
        if c.cpu_affinity:
            # The child starts on the wider set and narrows to the timing cores for the timed runs.
            env["PIKE_CPU_AFFINITY"] = ",".join(map(str, c.prep_affinity or c.cpu_affinity))
            env["PIKE_TIMING_CPUS"] = ",".join(map(str, c.cpu_affinity))
        dev = torch.device(c.device)
        if dev.type == "cuda":
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            index = dev.index or 0
            ids = [v for v in visible.split(",") if v.strip()] if visible else None
            env["CUDA_VISIBLE_DEVICES"] = ids[index] if ids else str(index)
        else:
            env["CUDA_VISIBLE_DEVICES"] = ""
            env["TRITON_INTERPRET"] = "1"  # Triton kernels run on CPU tensors in the interpreter
        return env

    @property
    def job_device(self) -> str:
        return "cuda" if self.config.device_type == "cuda" else "cpu"

    def _job_dir(self, kind: str) -> Path:
        return self.workdir / f"{next(self._counter):05d}-{kind}"

    def _run(self, job: dict, kind: str, *, timeout: float, env: dict | None = None, on_ask=None) -> tuple[JobOutcome, Path]:
        d = self._job_dir(kind)
        out = self.sandbox.run(job, d, timeout=timeout, env={**self.child_env, **(env or {})}, on_ask=on_ask)
        return out, d

    def _cleanup(self, d: Path) -> None:
        if not self.config.keep_jobs:
            shutil.rmtree(d, ignore_errors=True)

    def device_info(self, toolchain: bool = False) -> dict:
        """Versions and device facts (name, SMs, memory, bandwidth), from a child; cached per device.
        ``toolchain``: also which compilers work here, for the agents' prompts (a test build each,
        cached per machine)."""
        if toolchain:
            from pike.evaluate.device_facts import toolchain_facts

            return {**self.device_info(), **toolchain_facts(self.config.device_type, self.cache)}
        if self._info is None:
            out, d = self._run({"kind": "probe", "device": self.job_device, "bandwidth": self.config.device_type == "cuda"}, "probe", timeout=120)
            self._cleanup(d)
            if not out.result or out.result.get("status") != "ok":
                raise RuntimeError(f"probing {self.config.device} failed ({out.describe_exit()}):\n{out.log_tail}")
            self._info = out.result["info"]
        return self._info

    def arch_list(self) -> str | None:
        """TORCH_CUDA_ARCH_LIST for builds: configured, or this GPU's compute capability."""
        if self.config.cuda_arch_list or self.config.device_type != "cuda":
            return self.config.cuda_arch_list
        return self.device_info().get("capability")

    def _extension_env(self, main_src: str, tags: list[str]) -> dict[str, str]:
        """The extension cache of an already-built source (run stage, re-timing, profiling)."""
        return self.builder.env(main_src) if needs_extension_build(tags) else {}

    @property
    def builder(self) -> Builder:
        if self._builder is None:
            self._builder = Builder(self.cache, arch_list=self.arch_list(), start_method=self.config.start_method)
        return self._builder

    # -------------------------------------------------------------- references

    def reference(self, task: Task, *, pool: int | None = None, input_seed: int = 1000) -> Reference:
        """Reference outputs for ``task`` on this device, computed once and cached on disk."""
        c = self.config
        info = self.device_info()
        pool = pool or (c.trials + 2 * c.timing_sets)
        init_on = c.init_on if c.device_type != "cpu" else "cpu"
        key_src = json.dumps([CACHE_FORMAT, task.resolved_source, info.get("device_name"), info.get("torch"), c.device_type, pool, input_seed, c.random_weight_trials, c.seed, c.pool_max_bytes, init_on])
        key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
        if key in self._refs:
            return self._refs[key]
        final = self.cache / "references" / key
        if not (final / "meta.json").exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix="tmp-", dir=final.parent))
            task_file = tmp / f"task_{task.name}.py"
            task_file.write_text(task.resolved_source)
            job = {
                "kind": "reference", "device": self.job_device, "task": str(task_file),
                "module_name": f"pike_task_{task.name}", "out_dir": str(tmp),
                "init_seed": 42 + c.seed, "input_seed": input_seed + c.seed, "call_seed": 7 + c.seed,
                "pool": pool, "min_pool": min(pool, 3), "pool_bytes": c.pool_max_bytes,
                "random_count": c.random_weight_trials, "init_on": init_on,
            }
            out, d = self._run(job, "reference", timeout=max(c.timeout_s, 600))
            res = out.result
            if res is None:
                shutil.rmtree(tmp, ignore_errors=True)
                raise TaskError(task.path, f"the reference run {out.describe_exit()}:\n{out.log_tail[-2000:]}")
            if res["status"] != "ok":
                shutil.rmtree(tmp, ignore_errors=True)
                raise TaskError(task.path, res.get("message", "reference failed"))
            self._cleanup(d)
            try:
                os.rename(tmp, final)
            except OSError:  # a concurrent run finished first; its entry is identical
                shutil.rmtree(tmp, ignore_errors=True)
        meta = json.loads((final / "meta.json").read_text())
        tol = Tolerance(strict=c.strict)
        flags = list(meta["flags"])
        try:
            other = load_child_file(final / "other_seed.pt")
            first = load_child_file(final / "outputs" / "0.pt")
        except UnsafeOutputs as e:
            raise TaskError(task.path, f"the task's outputs must be tensors, or lists, tuples and dicts of tensors and plain values: {e}") from None
        weak = weak_tolerance(first, other, tol)
        if weak:
            # The elementwise tolerance cannot tell the reference from an impostor: add a norm check.
            atol, rtol = tol.for_dtype(torch.float32)
            tol = replace(tol, rel_norm=2 * rtol)
            flags.append("weak_tolerance")
            meta["weak_tolerance"] = weak
        ref = Reference(task=task, dir=final, meta=meta, tolerance=tol, flags=flags)
        self._refs[key] = ref
        return ref

    # -------------------------------------------------------------- candidates

    def static(self, task: Task, source: str, *, trusted: bool = False) -> "Prepared | EvalResult":
        """Step 1 (no candidate code runs): a rejection, or what the later stages need."""
        c = self.config
        report = check_source(source, task_module_names=_task_module_names(task))
        tags = list(report.tags)
        if report.defines is None:
            return EvalResult("rejected", "the candidate defines neither ModelNew nor Model", "; ".join(report.violations), tags=tags, device=c.device, stage="static")
        if not report.ok and not trusted:
            return EvalResult("rejected", "static check: " + "; ".join(report.violations[:5]), "\n".join(report.violations), tags=tags, device=c.device, stage="static")
        main_src = apply_overrides(source, task.overrides)
        needs_build = needs_extension_build(tags)
        return Prepared(task, source, main_src, tags, needs_build, trusted=trusted)

    def references(self, task: Task) -> tuple[Reference, Reference | None]:
        """The task's reference and, where it has one, its alternate size's."""
        c = self.config
        ref = self.reference(task)
        alt_task = task.with_size(task.alt_size) if task.alt_size and c.alt_trials else None
        return ref, (self.reference(alt_task, pool=c.alt_trials) if alt_task else None)

    def build(self, prep: "Prepared", builder: Builder | None = None) -> EvalResult | None:
        """Step 2: compile extensions with no GPU held; a failure result, or None to go on."""
        if not prep.needs_build:
            return None
        builder = builder or self.builder
        prep.env = builder.env(prep.main_src)
        t0 = time.monotonic()
        b = builder.build(prep.main_src, self._job_dir("build"), timeout=self.config.build_timeout_s)
        prep.durations["build_s"] = time.monotonic() - t0
        if b.status in ("build_error", "timeout", "crashed"):
            status = "timeout" if b.status == "timeout" else "build_error"
            return EvalResult(status, b.message, b.log[-8000:], tags=prep.tags, device=self.config.device, stage="build", durations_s=dict(prep.durations))
        return None

    def evaluate(
        self, task: Task, source: str, *, trusted: bool = False, eager_ms: float | None = None,
        time_it: bool | None = None, timeout_s: float | None = None,
    ) -> EvalResult:
        """Evaluate candidate ``source`` for ``task`` (all steps, in this thread). ``trusted`` skips the
        static check (generated baselines and offline variants); ``eager_ms`` (if known) gives the
        speedup and arms the over-10x extra check."""
        t_start = time.monotonic()
        prep = self.static(task, source, trusted=trusted)
        if isinstance(prep, EvalResult):
            return prep
        ref, alt_ref = self.references(task)
        prep.durations["reference_s"] = time.monotonic() - t_start
        failed = self.build(prep)
        if failed is not None:
            return failed
        result = self.run(prep, ref, alt_ref, eager_ms=eager_ms, time_it=time_it, timeout_s=timeout_s)
        result = self.extra_check(prep, result)
        result.durations_s["total_s"] = time.monotonic() - t_start
        return result

    def needs_extra_check(self, result: EvalResult) -> bool:
        sp = result.speedup_vs_eager
        return result.ok and sp is not None and sp >= self.config.extra_check_speedup

    def extra_check(self, prep: "Prepared", result: EvalResult) -> EvalResult:
        """Step 9: over ``extra_check_speedup`` vs eager, check again on input sets never used before."""
        c = self.config
        sp = result.speedup_vs_eager
        if not self.needs_extra_check(result):
            return result
        fresh = self.reference(prep.task, pool=c.trials, input_seed=50_000)
        again = self.run(prep, fresh, None, eager_ms=None, time_it=False)
        if again.ok:
            result.trials += again.trials
            # A lucky timing (or an eager baseline measured under load) must not stand: time both
            # side by side in one process and report those numbers.
            try:
                t = self.retime(prep.task, {"eager": prep.task.source, "candidate": prep.source}, max_time_s=1.0)
                result.eager_ms = t["eager"].median_ms
                result.timing.median_ms, result.timing.iqr_ms = t["candidate"].median_ms, t["candidate"].iqr_ms
            except RuntimeError:
                pass
            result.message += (f"; {sp:.1f}x vs eager in the search, confirmed on {again.trials} new input sets, "
                               f"{result.speedup_vs_eager:.1f}x re-timed side by side with eager")
            return result
        again.message = f"{sp:.1f}x vs eager but wrong on new inputs: {again.message}"
        return again

    def run(
        self, prep: "Prepared", ref: Reference, alt_ref: Reference | None, *, eager_ms: float | None = None,
        time_it: bool | None = None, timeout_s: float | None = None, exclusive: bool = False,
    ) -> EvalResult:
        """Steps 3-7 and 9-10: one fresh child holds the device for the checks and the timing (with
        ``share_checks``, the checks beside other lanes' checks, unless ``exclusive``)."""
        c = self.config
        timeout_s = timeout_s or c.timeout_s
        rng = random.Random(hashlib.sha256(f"{prep.source}{next(self._counter)}{c.seed}".encode()).digest())
        alt_task = alt_ref.task if alt_ref is not None else None
        job, plan = self._candidate_job(prep.task, prep.main_src, ref, alt_task, alt_ref, prep.source, rng, time_it, prep.trusted)
        d = self._job_dir("candidate")
        verdict: dict = {}
        compare_s = [0.0]
        gate, held = self.gate, []
        shared = gate is not None and self.share_checks and not exclusive
        if gate is not None:
            job["gpu_gate"] = True  # the child asks for the device before its first use of it
        if self.uses_comparator:
            job["handoff"] = "ipc"

        def on_ask(name: str) -> dict:
            if name == "gpu":
                if gate is not None and not held:
                    gate.acquire(shared=shared)
                    held.append(True)
                return {}
            t_cmp = time.monotonic()
            try:
                reply = answer(name)
            finally:
                compare_s[0] += time.monotonic() - t_cmp
            if reply.get("time") and shared and held:
                gate.upgrade()  # the timing runs alone on the device
            return reply

        def answer(name: str) -> dict:
            if name == "timing_file":  # compared from timing.pt once the child is done
                return {}
            if job.get("handoff") and name in ("checks", "timing"):  # outputs handed over as memory: the comparator compares
                if not self.uses_comparator:  # given up on during this candidate
                    return {"resend": True}
                try:
                    described = json.loads((d / f"{name}.json").read_text())
                    diffs = comparator_diffs(self._comparator(), timeout_s)
                    if name == "checks":
                        checks = {g: {int(i): o for i, o in rows} for g, rows in described.items()}
                        verdict.update(check_outputs(checks, ref, alt_ref, job, diffs))
                    else:
                        verdict["timed"] = check_timed(described, ref, job["timing"], diffs)
                        return {}
                except (ComparatorError, OSError, ValueError, KeyError, TypeError) as e:
                    # not a verdict on the candidate: it saves its outputs to a file and asks again
                    self.comparator_fallbacks.append(f"{name}: {type(e).__name__}: {e}"[:300])
                    return {"resend": True}
            else:
                try:
                    checks = load_child_file(d / "checks.pt")
                except UnsafeOutputs as e:
                    verdict.update({"ok": False, "group": "seeded", "message": str(e), "trials": 0})
                else:
                    verdict.update(check_outputs(checks, ref, alt_ref, job))
            return {"time": verdict["ok"] and plan["time"]}

        t0 = time.monotonic()
        try:
            out = self.sandbox.run(job, d, timeout=timeout_s, env={**self.child_env, **prep.env}, on_ask=on_ask)
        finally:
            if held:
                gate.release()
        durations = {**prep.durations, "run_s": time.monotonic() - t0, "compare_s": compare_s[0]}
        try:
            result = assemble_result(c, out, d, verdict, ref, prep.tags, plan, eager_ms, timeout_s, self.device_info().get("bandwidth_gbs"))
        finally:
            self._cleanup(d)
        result.durations_s = {**durations, **result.durations_s}
        if shared and result.status == "runtime_error" and "out of memory" in (result.message or "").lower():
            # Possibly the other lanes' memory, not the candidate's own need: once more, alone.
            again = self.run(prep, ref, alt_ref, eager_ms=eager_ms, time_it=time_it, timeout_s=timeout_s, exclusive=True)
            again.durations_s["run_s"] = again.durations_s.get("run_s", 0.0) + durations["run_s"]
            return again
        return result

    def _candidate_job(self, task, main_src, ref, alt_task, alt_ref, source, rng, time_it, trusted=False):
        c = self.config
        d = self.workdir / "code"
        d.mkdir(exist_ok=True)
        h = hashlib.sha256(main_src.encode()).hexdigest()[:12]
        main_file = d / f"candidate_{h}.py"
        main_file.write_text(main_src)
        n = ref.meta["pool"]
        order = list(range(n))
        rng.shuffle(order)
        trials = sorted(order[: min(c.trials, n)])
        rest = order[min(c.trials, n):] or order
        timing_sets = rest[: c.timing_sets] or order[:1]
        refill = [i for i in rest if i not in timing_sets][: len(timing_sets)]
        refill += [i for i in order if i not in timing_sets and i not in refill][: len(timing_sets) - len(refill)]
        random_trials = list(range(min(c.random_weight_trials, ref.meta["random_count"])))
        do_time = c.time if time_it is None else time_it
        job = {
            "kind": "candidate", "device": self.job_device, "module_name": f"pike_candidate_{h}",
            "init_seed": ref.meta["init_seed"],
            "main": {"code": str(main_file), "ref": str(ref.dir), "trials": trials, "random_trials": random_trials},
            "alt": None,
            "timing": {"config": c.timing.to_json(), "sets": timing_sets, "refill": refill[: len(timing_sets)], "seed": rng.randrange(2**31),
                       "fresh_probe": bool(c.fresh_ratio) and not trusted} if do_time else None,
        }
        if alt_task is not None:
            alt_src = apply_overrides(source, alt_task.overrides)
            alt_file = d / f"candidate_{h}_alt.py"
            alt_file.write_text(alt_src)
            job["alt"] = {"code": str(alt_file), "ref": str(alt_ref.dir), "trials": list(range(alt_ref.meta["pool"])), "random_trials": []}
        plan = {"time": do_time, "trials": trials, "random_trials": random_trials, "timing": job["timing"]}
        return job, plan

    def retime(self, task: Task, entries: dict[str, str], *, max_time_s: float = 3.0, timeout_s: float | None = None) -> dict[str, Timing]:
        """Final numbers: the given (already verified) sources timed interleaved in one process.
        Entries that need an extension build must have been built (evaluated) before."""
        c = self.config
        ref = self.reference(task)
        d = self._job_dir("retime")
        d.mkdir(parents=True)
        items = []
        for i, (name, src) in enumerate(entries.items()):
            main_src = apply_overrides(src, task.overrides)
            f = d / f"entry_{i}.py"
            f.write_text(main_src)
            tags = check_source(src).tags
            env = self._extension_env(main_src, tags)
            items.append({"name": name, "code": str(f), "env": env})
        sets = list(range(min(c.timing_sets, ref.meta["pool"])))
        job = {
            "kind": "retime", "device": self.job_device, "module_name": f"pike_retime_{task.name}",
            "init_seed": ref.meta["init_seed"], "ref": str(ref.dir), "entries": items, "sets": sets,
            "config": c.timing.to_json(), "max_time_s": max_time_s,
        }
        out = self.sandbox.run(job, d, timeout=timeout_s or max(c.timeout_s, 60 + 10 * len(items)), env=self.child_env)
        self._cleanup(d)
        if not out.result or out.result.get("status") != "ok":
            msg = (out.result or {}).get("message") or out.describe_exit()
            raise RuntimeError(f"interleaved re-timing of {task.label} failed: {msg}\n{out.log_tail[-2000:]}")
        return {name: Timing(median_ms=t["median_ms"], iqr_ms=t["iqr_ms"], runs=t["runs"], samples_ms=t["samples_ms"]) for name, t in out.result["timings"].items()}

    def profile(self, task: Task, source: str, *, rows: int = 10) -> str:
        """A verified solution's top kernels by time (the optimiser's profile feedback)."""
        ref = self.reference(task)
        d = self._job_dir("profile")
        d.mkdir(parents=True)
        main_src = apply_overrides(source, task.overrides)
        f = d / "solution.py"
        f.write_text(main_src)
        tags = check_source(source).tags
        env = self._extension_env(main_src, tags)
        job = {"kind": "profile", "device": self.job_device, "module_name": f"pike_profile_{task.name}",
               "code": str(f), "ref": str(ref.dir), "init_seed": ref.meta["init_seed"], "rows": rows}
        out = self.sandbox.run(job, d, timeout=self.config.timeout_s, env={**self.child_env, **env})
        self._cleanup(d)
        if not out.result or out.result.get("status") != "ok":
            return ""
        return out.result["profile"]

    # -------------------------------------------------------------- baselines

    def eager(self, task: Task) -> EvalResult:
        """The task's own Model, timed by the same code (PyTorch defaults); cached per device."""
        return self.baseline(task, "eager")

    def baseline(self, task: Task, mode: str, *, fresh: bool = False) -> EvalResult:
        """``fresh``: measure again (and refresh the cache) instead of reading an earlier run's number,
        so that one measurement taken under load does not follow every later run."""
        from pike.evaluate.baselines import baseline_source

        info = self.device_info()
        c = self.config
        key = hashlib.sha256(json.dumps([CACHE_FORMAT, task.resolved_source, mode, c.strict, c.require_state_dict, info.get("device_name"), info.get("torch"), c.device_type, c.timing.to_json()]).encode()).hexdigest()[:20]
        path = self.cache / "baselines" / f"{key}.json"
        if path.exists() and not fresh:
            return EvalResult.from_json(json.loads(path.read_text()))
        result = self.evaluate(task, baseline_source(task, mode), trusted=True)
        if result.ok:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result.to_json()))
            os.replace(tmp, path)
        return result

    # A comparator that failed this often is not asked again by this evaluator (each failure costs
    # a restart, seconds on a GPU); the candidates' outputs then go through files.
    COMPARATOR_MAX_FAILURES = 3

    @property
    def uses_comparator(self) -> bool:
        wanted = self.config.comparator == "on" or (self.config.comparator == "auto" and self.config.device_type == "cuda")
        return wanted and (self._cmp is None or self._cmp.failures < self.COMPARATOR_MAX_FAILURES)

    def _comparator(self) -> Comparator:
        if self._cmp is None:
            self._cmp = Comparator(scrubbed_env(self.child_env), self.config.comparator_cache_bytes,
                                   log=self.workdir / "comparator.log")
        return self._cmp

    def close(self) -> None:
        if self._cmp is not None:
            self._cmp.close()
        self.sandbox.close()
        if self._builder is not None:
            self._builder.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def needs_extension_build(tags: list[str]) -> bool:
    return "cpp_ext" in tags or "cuda" in tags


def _scratch_root() -> str | None:
    """Job directories carry every checked output: keep them in RAM (/dev/shm) when there is room."""
    try:
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize > 8 * 2**30:
            return "/dev/shm"
    except OSError:
        pass
    return None


def _task_module_names(task: Task) -> list[str]:
    return sorted({task.path.stem, task.name})
