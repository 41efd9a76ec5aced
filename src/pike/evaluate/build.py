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

from pike.evaluate.devices import usable_cpus
from pike.evaluate.jobs import BuildJob
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
    h = source_hash(source)
    return {"TORCH_EXTENSIONS_DIR": str(root / h), "PIKE_EXT_LOCK": str(root / f"{h}.lock")}


@contextmanager
def extension_lock(env: dict | None = None):
    """Held (in the child) around importing candidate code; see the module docstring."""
    env = os.environ if env is None else env
    lock_path = env.get("PIKE_EXT_LOCK")
    if not lock_path:
        yield
        return
    ext_dir = Path(env["TORCH_EXTENSIONS_DIR"])
    ext_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for stale in ext_dir.glob("*/lock"):
            stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)  # releases the flock


class Builder:
    def __init__(self, cache_dir: Path, *, arch_list: str | None = None, max_jobs: int | None = None, start_method: str = "forkserver",
                 cpu_affinity: tuple[int, ...] | None = None):
        self.root = Path(cache_dir) / "extensions"
        self.root.mkdir(parents=True, exist_ok=True)
        env = {"CUDA_VISIBLE_DEVICES": ""}  # builds never hold a GPU
        self.arch_list = arch_list
        # Half the cores the build may use: its own (pinned) or this process's affinity.
        cores = len(cpu_affinity) if cpu_affinity else usable_cpus()
        env["MAX_JOBS"] = str(max_jobs or max(1, min(8, cores // 2)))
        if cpu_affinity:
            env["PIKE_CPU_AFFINITY"] = ",".join(map(str, cpu_affinity))
        self.sandbox = Sandbox(start_method, env=env)

    def env(self, source: str) -> dict[str, str]:
        """For the build and for every later process that imports the candidate. The arch list must
        be in both: torch re-runs ninja at import, and a run stage that detected the arch from its GPU
        wrote different flags and rebuilt from scratch in the GPU slot (~70 s per candidate on H100)."""
        env = extension_env(self.root, source)
        if self.arch_list:
            env["TORCH_CUDA_ARCH_LIST"] = self.arch_list
        return env

    def is_built(self, source: str) -> bool:
        return (self.root / source_hash(source) / ".built").exists()

    def build(self, source: str, job_dir: Path, *, timeout: float, module_name: str = "pike_build") -> BuildOutcome:
        if self.is_built(source):
            return BuildOutcome("ok")
        t0 = time.monotonic()
        job_dir.mkdir(parents=True, exist_ok=True)
        code = job_dir / f"{module_name}.py"
        code.write_text(source)
        job = BuildJob(code=code.name, module_name=module_name)
        out = self.sandbox.run(job.to_json(), job_dir, timeout=timeout, env=self.env(source))
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
