"""The evaluator: the protocol of docs/architecture.md ("The evaluator's protocol", steps 1-10), for one device.

Orchestrator side: candidate code never runs in this process. An :class:`Evaluator` holds what one
device's evaluations share (its children's sandbox, work directory, references, builder and
comparator) and runs the stages of ``pipeline`` on them: the static check, references computed by
children that never import candidate code (``references``), extensions built with no GPU held, each
candidate run in a fresh child (``candidate_run``) whose outputs are checked here (``verdict``; or,
with ``comparator="on"``, by a comparator process where they are), re-timing and profiling
(``retime``) and baselines (``baselines``).
"""

from __future__ import annotations

import itertools
import os
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from pike.config import EvalSettings
from pike.evaluate import baselines, candidate_run, pipeline
from pike.evaluate import retime as retime_mod
from pike.evaluate.build import Builder
from pike.evaluate.comparator import Comparator
from pike.evaluate.confine import BACKENDS, Mounts, resolve
from pike.evaluate.jobs import Job, ProbeJob
from pike.evaluate.limits import Limits
from pike.evaluate.paths import task_dirs
from pike.evaluate.references import Reference, ReferenceCache
from pike.evaluate.result import OBJECTIVES, EvalResult, Timing
from pike.evaluate.sandbox import JobOutcome, Sandbox, describe, scrubbed_env
from pike.evaluate.tempdirs import owned_tempdir
from pike.evaluate.timing import TimingConfig
from pike.task import Task


def default_cache_dir() -> Path:
    env = os.environ.get("PIKE_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pike"


# The settings users give (the config's eval section, pike.config.EvalSettings) have their defaults
# there; the fields below that repeat them take them from it.
_S = EvalSettings


@dataclass
class EvalConfig:
    device: str = "cpu"  # cpu, cuda, cuda:N (resolved: never "auto")
    trials: int = _S.trials
    random_weight_trials: int = _S.random_weight_trials
    alt_trials: int = _S.alt_trials
    timeout_s: float = _S.timeout_s
    build_timeout_s: float = _S.build_timeout_s
    strict: bool = _S.strict
    require_state_dict: bool = _S.require_state_dict
    time: bool = True
    timing: TimingConfig = field(default_factory=TimingConfig)
    timing_sets: int = 2  # input sets rotated while timing (and as many held out for the refill check)
    pool_max_bytes: int = 512 * 2**20  # bound on the reference pool (inputs + outputs of all sets)
    floor_fraction: float = _S.floor_fraction
    extra_check_speedup: float = _S.extra_check_speedup
    fresh_ratio: float = _S.fresh_ratio
    start_method: str = _S.start_method
    sandbox: str = _S.sandbox
    memory_limit_gb: float = _S.memory_limit_gb
    file_size_gb: float = _S.file_size_gb
    max_processes: int = _S.max_processes
    max_log_mb: float = _S.max_log_mb
    sandbox_hide: tuple[str, ...] = ()  # directories hidden from jobs besides home, caches and work dirs (run dirs)
    # Held-out input sets (with reference outputs) kept for the fresh-content probe; each evaluation
    # draws plan.PROBE_PAIRS of them at random for its probe and as many for its confirmation.
    probe_sets: int = 12
    objective: str = _S.objective
    interval_target: float = _S.interval_target
    # on: compare outputs in a comparator process on the device, handed over as memory (CUDA IPC; on
    # the CPU shared memory), not copied through files; off: the orchestrator compares the child's
    # files; auto: on for a GPU (0.5-4 s less per candidate there, BENCHMARKS.md), off on the CPU.
    comparator: str = _S.comparator
    comparator_cache_bytes: int = 2 * 2**30  # references it keeps on its device
    # device: the reference and every candidate are built under torch.device(<device>) (weights made
    # and initialised on the GPU: seconds less per candidate for a large model than the CPU's RNG);
    # cpu: built on the CPU, then moved. A task whose Model cannot be built on the device falls back
    # to the CPU (recorded in the reference's meta). No difference on a CPU device.
    init_on: str = _S.init_on
    cache_dir: Path | None = None
    keep_jobs: bool = _S.keep_jobs
    cuda_arch_list: str | None = _S.cuda_arch_list
    cpu_affinity: tuple[int, ...] | None = None  # cores for this slot's timing loop
    prep_affinity: tuple[int, ...] | None = None  # cores before it (import, compile, checks); None: cpu_affinity
    seed: int = 0

    @classmethod
    def from_settings(cls, settings: EvalSettings, device: str, **more) -> "EvalConfig":
        """The evaluator's config from the eval section (``device`` resolved; ``more``: fields that
        are no setting, such as ``seed`` or ``time``)."""
        own = {f.name for f in fields(cls)}
        shared = {f.name: getattr(settings, f.name) for f in fields(settings) if f.name in own}
        return cls(**{**shared, "device": device, **more})

    def __post_init__(self):
        if self.comparator not in ("on", "off", "auto"):
            raise ValueError(f"eval.comparator must be on, off or auto (on for a GPU), not {self.comparator!r}")
        if self.init_on not in ("device", "cpu"):
            raise ValueError(f"eval.init_on must be device or cpu (where models are built), not {self.init_on!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"eval.objective must be {' or '.join(OBJECTIVES)} (what the search optimises), not {self.objective!r}")
        if self.sandbox not in BACKENDS:
            raise ValueError(f"eval.sandbox must be one of {', '.join(BACKENDS)}, not {self.sandbox!r}")
        self.limits  # its own checks

    @property
    def limits(self) -> Limits:
        return Limits(self.memory_limit_gb, self.file_size_gb, self.max_processes, self.max_log_mb)

    @property
    def device_type(self) -> str:
        return torch.device(self.device).type


class Evaluator:
    """Evaluates candidates for tasks on one device, one candidate at a time."""

    def __init__(self, config: EvalConfig | None = None):
        self.config = config or EvalConfig()
        c = self.config
        self.cache = Path(c.cache_dir or default_cache_dir())
        self.cache.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(owned_tempdir("pike-eval-", _scratch_root()))
        self.child_env = self._child_env()
        self.confinement = resolve(c.sandbox)
        self.sandbox = Sandbox(c.start_method, env=self.child_env, confinement=self.confinement, root=self.workdir / "jobs",
                               mounts=self._mounts(), limits=c.limits, gpu=self._gpu(), cpus=c.prep_affinity or c.cpu_affinity,
                               timing_cpus=c.cpu_affinity)
        self.gate = None  # a DeviceGate when this evaluator is one of several lanes of its device (pool)
        self.share_checks = False  # with a gate: candidates' checks hold it shared, their timing exclusively
        self.refs = ReferenceCache(self.cache, c, self.run_job, self.job_dir, self.device_info, self.cleanup)
        self.on_progress = None  # (task, text): where a reference job is (a big model's take minutes)
        self._builder: Builder | None = None
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

    def _gpu(self) -> str | None:
        return self.child_env["CUDA_VISIBLE_DEVICES"] if self.config.device_type == "cuda" else None

    def _mounts(self) -> Mounts:
        """Jobs see no cache, work or run directory but these: the shared compile caches, writable by
        trusted jobs only and through a vanishing overlay for candidates. A child's inputs are copied
        into its job directory, so the reference cache stays out of sight."""
        caches = [self.cache / sub for sub in ("triton", "inductor", "extensions")]
        for d in caches:
            d.mkdir(parents=True, exist_ok=True)
        return Mounts(hide=(str(self.cache), str(self.workdir), *self.config.sandbox_hide), caches=tuple(map(str, caches)),
                      tmpfs_bytes=int(self.config.file_size_gb * 2**30))

    def sandbox_info(self) -> dict:
        """What confines candidate code here (for the run header, the store and the result files)."""
        return describe(self.confinement, self.config.limits, self.config.device_type)

    @property
    def job_device(self) -> str:
        return "cuda" if self.config.device_type == "cuda" else "cpu"

    def next_id(self) -> int:
        return next(self._counter)

    def job_dir(self, kind: str, trusted: bool | None = None) -> Path:
        """A new job directory. A candidate's is the one its sandbox instance is already starting
        for; a build's is made here (its instance binds its build directory too). ``trusted``
        (default: by ``kind``): a job that runs outside the sandbox."""
        if kind == "build":
            d = self.workdir / "builds" / f"{self.next_id():05d}"
            d.mkdir(parents=True)
            return d
        return self.sandbox.job_dir(kind in self.TRUSTED_KINDS if trusted is None else trusted)

    # Jobs that never import candidate code: the task's own code and PIKE's, outside the sandbox.
    TRUSTED_KINDS = ("probe", "reference")

    def run_job(self, job: Job, job_dir: Path, *, timeout: float, env: dict | None = None, on_ask=None,
                trusted: bool | None = None) -> JobOutcome:
        """``job`` in a child, in ``job_dir`` (which holds every file the job names). ``trusted``
        (default: by the job's kind) runs it outside the sandbox: PIKE's and the task's own code."""
        trusted = job.kind in self.TRUSTED_KINDS if trusted is None else trusted
        return self.sandbox.run(job.to_json(), job_dir, timeout=timeout, env={**self.child_env, **(env or {})}, on_ask=on_ask,
                                trusted=trusted)

    def cleanup(self, d: Path) -> None:
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
            d = self.job_dir("probe")
            out = self.run_job(ProbeJob(device=self.job_device, bandwidth=self.config.device_type == "cuda"), d, timeout=120)
            self.cleanup(d)
            if not out.result or out.result.get("status") != "ok":
                said = out.log_tail.strip() or (f"its result: {out.result}" if out.result else "it wrote nothing")
                raise RuntimeError(f"probing {self.config.device} failed ({out.describe_exit()}): {said}")
            self._info = {**out.result["info"], "sandbox": self.sandbox_info()}
        return self._info

    def arch_list(self) -> str | None:
        """TORCH_CUDA_ARCH_LIST for builds: configured, or this GPU's compute capability."""
        if self.config.cuda_arch_list or self.config.device_type != "cuda":
            return self.config.cuda_arch_list
        return self.device_info().get("capability")

    def extension_env(self, main_src: str, tags: list[str]) -> dict[str, str]:
        """The extension cache of an already-built source (run stage, re-timing, profiling)."""
        return self.builder.env(main_src) if pipeline.needs_extension_build(tags) else {}

    @property
    def builder(self) -> Builder:
        if self._builder is None:
            self._builder = Builder(self.cache, arch_list=self.arch_list(), sandbox=self.confinement, limits=self.config.limits)
        return self._builder

    # -------------------------------------------------------------- stages (see pipeline)

    def reference(self, task: Task, *, pool: int | None = None, input_seed: int = 1000, second_shape: bool = True) -> Reference:
        """Reference outputs for ``task`` on this device, computed once and cached on disk. With
        ``second_shape``, a task without an alternate size set also gets its inputs at another batch
        size where the model accepts one (``Reference.batch_alt``)."""
        self.sandbox.reveal(task_dirs(task.path))  # the task's own imports, for its candidates' jobs
        return self.refs.get(task, pool=pool, input_seed=input_seed, second_shape=second_shape, progress=self.on_progress)

    def references(self, task: Task) -> tuple[Reference, Reference | None]:
        """The task's reference and its second shape's: the alternate size set's, or where the task
        has none, its inputs at another batch size (None when the model accepts no other)."""
        c = self.config
        ref = self.reference(task)
        if not c.alt_trials:
            return ref, None
        if task.alt_size:
            return ref, self.reference(task.with_size(task.alt_size), pool=c.alt_trials, second_shape=False)
        return ref, ref.batch_alt

    def evaluate(
        self, task: Task, source: str, *, trusted: bool = False, eager_ms: float | None = None,
        time_it: bool | None = None, timeout_s: float | None = None, paired: bool = False,
    ) -> EvalResult:
        """Evaluate candidate ``source`` for ``task`` (every stage, in this thread). ``trusted`` skips
        the static check (generated baselines and offline variants); ``eager_ms`` (if known) gives the
        speedup and arms the over-10x extra check; ``paired``: the speedup comes from timing the
        candidate side by side with eager in one process (``pipeline.confirm``), with its interval."""
        return pipeline.run_now(pipeline.evaluate(pipeline.Local(self), task, source, trusted=trusted, eager_ms=eager_ms,
                                                  time_it=time_it, timeout_s=timeout_s, paired=paired))

    def needs_extra_check(self, result: EvalResult) -> bool:
        sp = result.speedup_vs_eager
        return result.ok and sp is not None and sp >= self.config.extra_check_speedup

    def run(self, prep: pipeline.Prepared, ref: Reference, alt_ref: Reference | None, **kwargs) -> EvalResult:
        """The run stage (see ``candidate_run.run_candidate``)."""
        return candidate_run.run_candidate(self, prep, ref, alt_ref, **kwargs)

    def retime(self, task: Task, entries: dict[str, str], *, max_time_s: float = 3.0, timeout_s: float | None = None) -> dict[str, Timing]:
        """Final numbers: the given (already verified) sources timed interleaved in one process."""
        return retime_mod.retime(self, task, entries, max_time_s=max_time_s, timeout_s=timeout_s)

    def profile(self, task: Task, source: str, *, rows: int = 10) -> str:
        """A verified solution's top kernels by time (the optimiser's profile feedback)."""
        return retime_mod.profile(self, task, source, rows=rows)

    def eager(self, task: Task) -> EvalResult:
        """The task's own Model, timed by the same code (PyTorch defaults); cached per device."""
        return self.baseline(task, "eager")

    def baseline(self, task: Task, mode: str, *, fresh: bool = False) -> EvalResult:
        """Baseline ``mode`` (see ``baselines.baseline``)."""
        return pipeline.run_now(baselines.baseline(pipeline.Local(self), self.cache, self.device_info(), task, mode, fresh=fresh))

    # -------------------------------------------------------------- comparator

    # A comparator that failed this often is not asked again by this evaluator (each failure costs
    # a restart, seconds on a GPU); the candidates' outputs then go through files.
    COMPARATOR_MAX_FAILURES = 3

    @property
    def uses_comparator(self) -> bool:
        wanted = self.config.comparator == "on" or (self.config.comparator == "auto" and self.config.device_type == "cuda")
        return wanted and (self._cmp is None or self._cmp.failures < self.COMPARATOR_MAX_FAILURES)

    def comparator(self) -> Comparator:
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


def _scratch_root() -> str | None:
    """Job directories carry every checked output: keep them in RAM (/dev/shm) when there is room."""
    try:
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize > 8 * 2**30:
            return "/dev/shm"
    except OSError:
        pass
    return None
