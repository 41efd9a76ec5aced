"""The build stage (evaluator step 2): compile a candidate's C++/CUDA extensions with no GPU held.

torch's extension cache guards a build directory with a lock *file*; a build killed mid-way leaves it,
and the next build of the same source waits on it forever. The design's remedy is a fresh temp
directory renamed into place on success, but torch writes absolute paths into its ninja file, so a
renamed build is rebuilt from scratch at its first import. Instead each source hash gets one stable
build directory guarded by a kernel lock (``flock``) that dies with its holder: every process that
imports the candidate (build stage and run stage) takes it, and under it any torch lock file left in
the directory is stale by construction and is removed. A killed build therefore never blocks the next
one, and ninja resumes what the killed build had finished (commands missing from its log rerun).
A ``.built`` marker records a finished build.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pike.evaluate.confine import Confinement, Mounts
from pike.evaluate.devices import usable_cpus
from pike.evaluate.jobs import BuildJob
from pike.evaluate.limits import Limits
from pike.evaluate.sandbox import Sandbox


@dataclass
class BuildOutcome:
    status: str  # ok, build_error, timeout, deferred (import needs the run stage), crashed
    message: str = ""
    log: str = ""
    wall_s: float = 0.0


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:24]


def extension_env(root: Path, source: str) -> dict[str, str]:
    """Environment that points torch's extension cache at this source's build directory."""
    return {"TORCH_EXTENSIONS_DIR": str(root / source_hash(source))}


def lock_path(ext_dir: str | os.PathLike) -> Path:
    """The kernel lock of a build directory: beside it, made by the orchestrator's Builder."""
    ext_dir = Path(ext_dir)
    return ext_dir.parent / f"{ext_dir.name}.lock"


def extension_lock_path(env: dict | None = None) -> Path | None:
    """This job's build lock, if its extension cache is one of PIKE's (a user's own
    ``TORCH_EXTENSIONS_DIR`` has no lock file beside it)."""
    env = os.environ if env is None else env
    ext_dir = env.get("TORCH_EXTENSIONS_DIR")
    path = lock_path(ext_dir) if ext_dir else None
    return path if path is not None and path.exists() else None


@contextmanager
def extension_lock(env: dict | None = None):
    """Held (in the child) around importing candidate code; see the module docstring."""
    path = extension_lock_path(env)
    if path is None:
        yield
        return
    ext_dir = path.parent / path.name.removesuffix(".lock")
    ext_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for stale in ext_dir.glob("*/lock"):
            stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)  # releases the flock


class Builder:
    """Builds run sandboxed like every job that imports candidate code, each in a fresh instance that
    may write only its job directory, its source's build directory and that directory's lock (no
    instance can be started before its build is known)."""

    def __init__(self, cache_dir: Path, *, arch_list: str | None = None, max_jobs: int | None = None,
                 cpu_affinity: tuple[int, ...] | None = None, sandbox: Confinement | str = "auto", limits: Limits | None = None):
        self.root = Path(cache_dir) / "extensions"
        self.root.mkdir(parents=True, exist_ok=True)
        env = {"CUDA_VISIBLE_DEVICES": ""}  # builds never hold a GPU
        self.arch_list = arch_list
        # Half the cores the build may use: its own (pinned) or this process's affinity.
        cores = len(cpu_affinity) if cpu_affinity else usable_cpus()
        env["MAX_JOBS"] = str(max_jobs or max(1, min(8, cores // 2)))
        limits = limits or Limits()
        self.sandbox = Sandbox("spawn", env=env, sandbox=sandbox if isinstance(sandbox, str) else "auto",
                               confinement=sandbox if isinstance(sandbox, Confinement) else None, limits=limits,
                               mounts=Mounts(hide=(str(cache_dir),), caches=(str(self.root),), tmpfs_bytes=int(limits.file_size_gb * 2**30)),
                               cpus=cpu_affinity)

    def env(self, source: str) -> dict[str, str]:
        """For the build and for every later process that imports the candidate. The arch list must
        be in both: torch re-runs ninja at import, and a run stage that detected the arch from its GPU
        wrote different flags and rebuilt from scratch in the GPU slot (~70 s per candidate on H100)."""
        env = extension_env(self.root, source)
        Path(env["TORCH_EXTENSIONS_DIR"]).mkdir(parents=True, exist_ok=True)
        lock_path(env["TORCH_EXTENSIONS_DIR"]).touch()
        if self.arch_list:
            env["TORCH_CUDA_ARCH_LIST"] = self.arch_list
        return env

    def is_built(self, source: str) -> bool:
        return (self.root / source_hash(source) / ".built").exists()

    def build(self, source: str, job_dir: Path, *, timeout: float, module_name: str = "pike_build",
              imports: dict | None = None) -> BuildOutcome:
        """``imports``: the task's import paths (``paths.task_imports``): the candidate may import the
        user's package."""
        if self.is_built(source):
            return BuildOutcome("ok")
        t0 = time.monotonic()
        job_dir.mkdir(parents=True, exist_ok=True)
        code = job_dir / f"{module_name}.py"
        code.write_text(source)
        job = BuildJob(code=code.name, module_name=module_name, imports=imports or {})
        env = self.env(source)
        ext_dir = env["TORCH_EXTENSIONS_DIR"]
        out = self.sandbox.run(job.to_json(), job_dir, timeout=timeout, env=env, writable=(ext_dir, str(lock_path(ext_dir))))
        wall = time.monotonic() - t0
        if out.timed_out:
            return BuildOutcome("timeout", f"the build took longer than {timeout:.0f} s", out.log_tail, wall)
        res = out.result
        if res is None:
            return BuildOutcome("crashed", f"the build process {out.describe_exit()}", out.log_tail, wall)
        if res["status"] == "build_error":
            return BuildOutcome("build_error", res["message"], res.get("feedback", "") or out.log_tail, wall)
        if res["status"] != "ok":
            return BuildOutcome("deferred", res.get("message", ""), "", wall)
        (self.root / source_hash(source) / ".built").touch()
        return BuildOutcome("ok", wall_s=wall)

    def close(self) -> None:
        self.sandbox.close()
