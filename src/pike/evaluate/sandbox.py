"""Running jobs in sandboxed child processes (evaluator step 3).

A job is a directory holding ``job.json``; the child (``pike.evaluate.worker`` inside
``pike.evaluate.child``) writes its files there. Every job gets its own sandbox instance (``instance``,
``confine``): under bwrap its own PID, network, mount, IPC and user namespaces, the system read-only,
the user's files and PIKE's caches hidden, its job directory the one writable place it keeps; with
``eval.sandbox = none`` a plain child in its own session. Either way its environment is the user's,
scrubbed of secrets, plus what the device needs; its limits are set before any candidate code runs;
its output is read through a pipe with a size cap; and when the job ends the instance is killed, so
nothing a job starts or writes outside its job directory outlives it.

Importing torch takes seconds, so the next instance of a slot is started when a job starts (its
warm-up paused while the job is timed) and is ready when the next job comes. A child may ask the
orchestrator a question mid-run (the correctness verdict before timing) through files: it writes
``<name>.ready`` and waits for ``<name>.answer``; see :meth:`Sandbox.run`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import select
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pike.evaluate.confine import Confinement, InstanceSpec, Mounts, resolve
from pike.evaluate.forkserver import ForkedJob, ForkServer
from pike.evaluate.child import TIMING_STARTED
from pike.evaluate.instance import Instance, InstanceFailed
from pike.evaluate.limits import JobCgroup, Limits, cgroup_parent
from pike.evaluate.tempdirs import owned_tempdir

# Variables a candidate must never see: API keys, tokens, passwords and cloud credentials.
_SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION", re.I)
_SECRET_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_", "GCP_", "GH_", "GITHUB_", "OPENAI", "ANTHROPIC", "GEMINI", "OPENROUTER", "HF_")
START_METHODS = ("warm", "spawn", "forkserver")  # forkserver: the former name of warm
READY_TIMEOUT_S = 300.0  # importing torch on a loaded machine
LOG_TAIL_BYTES = 64 * 1024


def scrubbed_env(extra: dict | None = None) -> dict[str, str]:
    """The user's environment without secrets and without PIKE's own settings (``PIKE_*``): a
    candidate finds nothing there that tells it PIKE is watching."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not _SECRET.search(k) and not k.upper().startswith(_SECRET_PREFIXES) and not k.startswith("PIKE_")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass
class JobOutcome:
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    timed_out: bool
    result: dict | None  # result.json, if the child wrote one
    log_tail: str
    wall_s: float
    limit: str = ""  # the limit that ended the job, said for the user
    start_s: float = 0.0  # until the job was handed over (an instance not yet ready: its import of torch)

    def describe_exit(self) -> str:
        if self.timed_out:
            return "timed out"
        if self.limit:
            return f"was killed: {self.limit}"
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}"
        return f"exited with code {self.exit_code}"


class _Log:
    """The job's stdout and stderr: the last ``LOG_TAIL_BYTES`` kept, the total counted."""

    def __init__(self, cap_bytes: int):
        self.cap, self.total, self.tail = cap_bytes, 0, b""

    def __call__(self, chunk: bytes) -> bool:
        self.total += len(chunk)
        self.tail = (self.tail + chunk)[-LOG_TAIL_BYTES:]
        return self.total <= self.cap

    def text(self, limit: int = 6000) -> str:
        return self.tail[-limit:].decode(errors="replace")


def memory_mode(device_type: str, limits: Limits) -> str:
    """How the memory limit is enforced here: cgroup, rlimit (address space, CPU only) or none."""
    if limits.memory_bytes is None:
        return "none"
    if cgroup_parent() is not None:
        return "cgroup"
    return "rlimit" if device_type == "cpu" else "none"


def sandbox_summary(mode: str, limits: Limits, device_type: str) -> dict:
    """``describe`` for a setting: resolves it (``SandboxUnavailable`` for ``bwrap`` where it cannot run)."""
    return describe(resolve(mode), limits, device_type)


def describe(conf: Confinement, limits: Limits, device_type: str) -> dict:
    """What confines candidate code here, for the run header, the store and the result files."""
    mode = memory_mode(device_type, limits)
    mem = {"cgroup": f"{limits.memory_bytes / 2**30:.3g} GB (cgroup)",
           "rlimit": f"{limits.memory_bytes / 2**30:.3g} GB of address space (RLIMIT_AS)",
           "none": "not limited (no cgroup v2 memory controller here, and RLIMIT_AS cannot be used with CUDA)"}[mode]
    procs = (f"{limits.max_processes} (cgroup)" if cgroup_parent() is not None
             else f"{limits.max_processes} (counted in its PID namespace)" if conf.confined else "not limited")
    text = (f"{conf.describe()}; memory {mem}; file size {limits.file_size_gb:g} GB; processes {procs}; "
            f"output {limits.max_log_mb:g} MB")
    return {"backend": conf.backend, "version": conf.version, "confined": conf.confined, "reason": conf.reason,
            "memory": mode, "text": text}


class Sandbox:
    """Runs jobs one at a time, each in a fresh instance. Not thread-safe: one per worker slot.

    ``env``: what the device needs (CUDA_VISIBLE_DEVICES, cache directories); ``gpu``: that GPU's
    CUDA_VISIBLE_DEVICES entry (its device nodes are bound in), None on the CPU; ``cpus``: the cores
    before timing, ``timing_cpus`` those of the timing loop; ``root``: where job directories are made.
    """

    def __init__(self, start_method: str = "warm", env: dict[str, str] | None = None, *, sandbox: str = "auto",
                 confinement: Confinement | None = None, root: str | os.PathLike | None = None, mounts: Mounts | None = None,
                 limits: Limits | None = None, gpu: str | None = None, cpus: tuple[int, ...] | None = None,
                 timing_cpus: tuple[int, ...] | None = None):
        if start_method not in START_METHODS:
            raise ValueError(f"start_method must be warm or spawn, not {start_method!r}")
        self.prestart = start_method != "spawn"
        self.env = scrubbed_env(env)
        self.conf = confinement or resolve(sandbox)
        self.limits = limits or Limits()
        self.mounts = mounts or Mounts(tmpfs_bytes=int(self.limits.file_size_gb * 2**30))
        self.gpu, self.cpus, self.timing_cpus = gpu, cpus, timing_cpus
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(owned_tempdir("pike-jobs-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self._cgroup_parent = cgroup_parent()
        self._counter = itertools.count(1)
        self._next: Instance | None = None  # started for the next job's directory
        self._next_claimed = False
        self._server: ForkServer | None = None
        self._candidates = 0  # jobs run in instances so far

    # -------------------------------------------------------------- instances

    def _memory_rlimit(self) -> int | None:
        return self.limits.memory_bytes if memory_mode("cuda" if self.gpu is not None else "cpu", self.limits) == "rlimit" else None

    def _new_dir(self) -> Path:
        d = self.root / f"{next(self._counter):05d}"
        d.mkdir(parents=True)
        return d

    def _cgroup(self) -> JobCgroup | None:
        if self._cgroup_parent is None:
            return None
        try:
            return JobCgroup(self._cgroup_parent, f"pike-{os.getpid()}-{next(self._counter)}",
                             self.limits.memory_bytes, self.limits.max_processes)
        except OSError:
            return None

    def _start(self, spec: InstanceSpec) -> Instance:
        env, cwd = self.env, None
        if self.conf.confined and "TMPDIR" in env:
            env = {**env, "TMPDIR": "/tmp"}  # the user's is hidden or read-only in the sandbox
        if not self.conf.confined:
            cwd = tempfile.mkdtemp(prefix="cwd-", dir=self.root)
        return Instance(self.conf, self.mounts, spec, env, cpus=self.cpus, cgroup=self._cgroup(), cwd=cwd)

    def reveal(self, paths: list[str]) -> None:
        """Show ``paths`` read-only to later instances (a task's own directory where it would be
        hidden); a spare started without them is replaced."""
        new = tuple(p for p in paths if p not in self.mounts.read_only)
        if new:
            self.mounts = dataclasses.replace(self.mounts, read_only=(*self.mounts.read_only, *new))
            if self._next is not None and not self._next_claimed:
                self._discard_next()

    def job_dir(self, trusted: bool = False) -> Path:
        """Where the next job's files go: for a candidate, the directory of the instance already
        starting for it."""
        if not trusted and self._next is not None and not self._next_claimed:
            self._next_claimed = True
            return Path(self._next.spec.job_dir)
        return self._new_dir()

    def wait_spare(self, timeout: float = READY_TIMEOUT_S) -> float | None:
        """Seconds until the next candidate's instance is ready (None: there is none). A benchmark's
        steady state: a search's slot has its spare ready when the LLM's next candidate is slower."""
        if self._next is None:
            return None
        t0 = time.monotonic()
        try:
            self._next.wait_ready(timeout, lambda chunk: True)
        except InstanceFailed:
            return None
        return time.monotonic() - t0

    def _discard_next(self) -> None:
        if self._next is not None:
            self._close(self._next, remove_dir=not self._next_claimed)
            self._next = None

    def _close(self, inst: Instance, remove_dir: bool = False) -> None:
        inst.close()
        if inst.cwd:
            shutil.rmtree(inst.cwd, ignore_errors=True)
        if remove_dir:
            shutil.rmtree(inst.spec.job_dir, ignore_errors=True)

    def _instance_for(self, spec: InstanceSpec, log: _Log) -> Instance:
        nxt = self._next
        if nxt is not None and nxt.spec.job_dir == spec.job_dir:
            self._next = None
            if ((nxt.spec.trusted, nxt.spec.writable) == (spec.trusted, spec.writable) and nxt.mounts == self.mounts
                    and nxt.proc.poll() is None):
                inst = nxt
            else:
                self._close(nxt)
                inst = self._start(spec)
        else:
            inst = self._start(spec)
        try:
            inst.wait_ready(READY_TIMEOUT_S, log)
            return inst
        except InstanceFailed:
            first = log.text(2000)
            self._close(inst)
        inst = self._start(spec)  # once more, from scratch (a spare killed by the OOM killer, say)
        try:
            inst.wait_ready(READY_TIMEOUT_S, log)
        except InstanceFailed as e:
            self._close(inst)
            raise RuntimeError(f"the sandboxed evaluation process did not start ({e}); is torch importable?\n"
                               f"{log.text(2000) or first}") from None
        return inst

    # -------------------------------------------------------------- a job

    def _forkserver(self) -> ForkServer:
        if self._server is None or not self._server.alive():
            if self._server is not None:
                self._server.close()
            self._server = ForkServer(self.env, str(self.root), self.cpus)
        return self._server

    def _launch(self, req: dict, job_dir: Path, trusted: bool, writable: tuple[str, ...], log: _Log):
        """The job's process: a sandbox instance for candidate code under bwrap (and for every job
        with ``start_method = spawn``), else a child of the fork server."""
        if (self.conf.confined and not trusted) or not self.prestart:
            inst = self._instance_for(InstanceSpec(str(job_dir), trusted, writable, self.gpu), log)
            inst.start({**req, "cwd": None if self.conf.confined else inst.cwd})
            return inst
        cg = self._cgroup()
        req = {**req, "cwd": tempfile.mkdtemp(prefix="cwd-", dir=self.root)}
        try:
            return ForkedJob(self._forkserver(), req, job_dir, cg)
        except (EOFError, OSError, RuntimeError):  # a dead fork server: a new one, once
            self._server = None
            (job_dir / "log.fifo").unlink(missing_ok=True)
            return ForkedJob(self._forkserver(), req, job_dir, cg)

    def run(
        self,
        job: dict,
        job_dir: Path,
        *,
        timeout: float,
        env: dict[str, str] | None = None,
        on_ask: Callable[[str], dict] | None = None,
        trusted: bool = False,
        writable: tuple[str, ...] = (),
    ) -> JobOutcome:
        """Run ``job`` in its own process; kill it after ``timeout`` seconds (from the hand-over).

        ``trusted``: PIKE's own code (references, baselines, offline variants): no instance of its
        own, and it may write the shared compile caches, which a candidate sees through an overlay
        whose writes vanish. ``writable``: directories bound read-write besides the job directory (an
        extension's build). ``on_ask(name)`` answers a child's question ``<name>.ready`` with a dict
        written to ``<name>.answer``; time spent answering does not count against the timeout.
        """
        t0 = time.monotonic()
        job_dir = Path(job_dir)
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / "job.json").write_text(json.dumps(job))
        log = _Log(int(self.limits.max_log_mb * 2**20))
        req = {
            "job_dir": str(job_dir),
            "env": env or {},
            "cpus": list(self.cpus) if self.cpus else None,
            "timing_cpus": list(self.timing_cpus) if self.timing_cpus else None,
            "memory_bytes": self._memory_rlimit(),
            "file_size_bytes": int(self.limits.file_size_gb * 2**30) or None,
        }
        proc = self._launch(req, job_dir, trusted, tuple(writable), log)
        start_s = time.monotonic() - t0
        log.total = 0  # a warm-up's output does not count against the job
        if isinstance(proc, Instance) and self.prestart:
            # From the second candidate on (one alone, as in `pike eval`, needs no spare), the next
            # one's instance imports torch while this one runs.
            if self._candidates and self._next is None:
                self._next = self._start(InstanceSpec(str(self._new_dir()), gpu=self.gpu))
                self._next_claimed = False
            self._candidates += 1
        try:
            timed_out, limit = self._watch(proc, job_dir, timeout, log, on_ask)
        finally:
            proc.kill()
            proc.read_log(log)
            if self._next is not None:
                self._next.pause(False)
        if not limit and proc.cgroup is not None and proc.cgroup.oom_killed():
            limit = f"it used more than the memory limit of {self.limits.memory_bytes / 2**30:.3g} GB (eval.memory_limit_gb)"
        code, sig = proc.status()
        if not limit and sig == signal.SIGXFSZ:
            limit = f"it wrote a file larger than {self.limits.file_size_gb:g} GB (eval.file_size_gb)"
        if not limit and proc.cgroup is not None and proc.cgroup.pids_refused() and code != 0:
            limit = f"it tried to start more than {self.limits.max_processes} processes (eval.max_processes)"
        if isinstance(proc, Instance):
            self._close(proc)
        else:
            proc.close()
        (job_dir / "log.txt").write_bytes(log.tail)  # for keep_jobs: what the job printed, capped
        return JobOutcome(exit_code=code, signal=sig, timed_out=timed_out and not limit,
                          result=None if timed_out or limit else _read_result(job_dir / "result.json"),
                          log_tail=log.text(), wall_s=time.monotonic() - t0, limit=limit, start_s=start_s)

    def _watch(self, proc, job_dir: Path, timeout: float, log: _Log, on_ask) -> tuple[bool, str]:
        """Until the job ends: its output drained, its questions answered, its limits watched."""
        deadline = time.monotonic() + timeout
        answered: set[str] = set()
        count_processes = self.conf.confined and proc.cgroup is None
        next_count = time.monotonic() + 0.5
        timing = job_dir / TIMING_STARTED
        while not proc.finished():
            now = time.monotonic()
            if now >= deadline:
                return True, ""
            if count_processes and now >= next_count:
                n = proc.processes()
                if n is not None and n > self.limits.max_processes:
                    return False, f"it started more than {self.limits.max_processes} processes (eval.max_processes)"
                next_count = now + 0.5
            r, _, _ = select.select(proc.fds(), [], [], min(deadline - now, 0.005 if on_ask else 0.1))
            proc.read_log(log)
            if log.total > log.cap:
                return False, f"it wrote more than {self.limits.max_log_mb:g} MB to stdout and stderr (eval.max_log_mb)"
            if self._next is not None and not self._next.paused and timing.exists():
                self._next.pause(True)  # the timed runs get the cores
            if on_ask is not None:
                for ready in job_dir.glob("*.ready"):
                    name = ready.stem
                    if name in answered:
                        continue
                    answered.add(name)
                    t_ask = time.monotonic()
                    answer = on_ask(name)
                    tmp = job_dir / f"{name}.answer.tmp"
                    tmp.write_text(json.dumps(answer))
                    os.replace(tmp, job_dir / f"{name}.answer")
                    deadline += time.monotonic() - t_ask
        return False, ""

    def close(self) -> None:
        self._discard_next()
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


RESULT_MAX_BYTES = 16 * 2**20


def _read_result(path: Path) -> dict | None:
    """result.json, unless missing, malformed or larger than any the harness writes."""
    try:
        if path.stat().st_size > RESULT_MAX_BYTES:
            return None
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
