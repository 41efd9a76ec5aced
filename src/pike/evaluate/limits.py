"""Resource limits of the processes that run candidate code: memory, file size, process count.

Memory is limited by a cgroup v2 memory controller where this process may create child cgroups of
its own (root of a VM, a delegated subtree); it counts what the job really uses, on a GPU machine
too. Without one, on the CPU, by ``RLIMIT_AS`` (address space: a 40 GB request fails at once, with
a clear message); on a GPU no address-space limit can be used (CUDA reserves hundreds of GB of
virtual addresses), so there the memory is not limited without a cgroup and the run says so.
File size is ``RLIMIT_FSIZE``. Processes are counted by the cgroup's ``pids.max`` where there is
one, else the sandbox counts the members of the job's PID namespace (``RLIMIT_NPROC`` counts every
process of the user, and root is exempt from it).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

GB = 2**30


def total_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class Limits:
    memory_gb: float = 0.0  # 0: three quarters of the machine's memory
    file_size_gb: float = 8.0  # any one file a job writes (outputs, extension builds)
    max_processes: int = 1024  # processes (not threads) of one job
    max_log_mb: float = 16.0  # stdout and stderr together; past it the job is killed

    def __post_init__(self):
        for name in ("memory_gb", "file_size_gb", "max_log_mb"):
            if getattr(self, name) < 0:
                raise ValueError(f"eval.{name} must be 0 or more, not {getattr(self, name)}")
        if self.max_processes < 1:
            raise ValueError(f"eval.max_processes must be at least 1, not {self.max_processes}")

    @property
    def memory_bytes(self) -> int | None:
        if self.memory_gb:
            return int(self.memory_gb * GB)
        total = total_memory_bytes()
        return int(total * 0.75) if total else None


def apply_rlimits(memory_bytes: int | None, file_size_bytes: int | None) -> None:
    """In the child, before any candidate code: soft and hard limits (they cannot be raised again
    without a privilege the sandbox drops)."""
    for res, value in ((resource.RLIMIT_AS, memory_bytes), (resource.RLIMIT_FSIZE, file_size_bytes), (resource.RLIMIT_CORE, 0)):
        if value is None:
            continue
        try:
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):  # above a hard limit set by someone else: keep theirs
            pass


# ---------------------------------------------------------------- cgroup v2


def _cgroup2_mount() -> Path | None:
    try:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "cgroup2":
                return Path(left.split()[4])
    except OSError:
        pass
    return None


def cgroup_parent() -> Path | None:
    """This process's cgroup v2 directory if jobs can get child cgroups with a memory and a pids
    controller there (both enabled in its ``cgroup.subtree_control`` and the directory writable),
    else None. Never enables controllers itself: that would change the machine's configuration."""
    mount = _cgroup2_mount()
    if mount is None:
        return None
    try:
        own = next(line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::"))
    except (OSError, StopIteration):
        return None
    d = mount / own.strip().lstrip("/")
    try:
        enabled = (d / "cgroup.subtree_control").read_text().split()
    except OSError:
        return None
    if not {"memory", "pids"} <= set(enabled) or not os.access(d, os.W_OK):
        return None
    return d


class JobCgroup:
    """One job's cgroup: memory and process limits, an exact kill, and whether the memory limit was hit."""

    def __init__(self, parent: Path, name: str, memory_bytes: int | None, max_processes: int):
        self.path = parent / name
        self.path.mkdir()
        if memory_bytes:
            (self.path / "memory.max").write_text(str(memory_bytes))
            try:
                (self.path / "memory.swap.max").write_text("0")
            except OSError:  # no swap accounting
                pass
        (self.path / "pids.max").write_text(str(max_processes))

    @property
    def procs_file(self) -> str:
        return str(self.path / "cgroup.procs")

    def _events(self, name: str) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in (line.split() for line in (self.path / name).read_text().splitlines())}
        except (OSError, ValueError):
            return {}

    def oom_killed(self) -> bool:
        return self._events("memory.events").get("oom_kill", 0) > 0

    def pids_refused(self) -> bool:
        return self._events("pids.events").get("max", 0) > 0

    def remove_processes(self) -> None:
        try:
            (self.path / "cgroup.kill").write_text("1")
        except OSError:
            pass

    def remove(self) -> None:
        self.remove_processes()
        for _ in range(200):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # processes still leaving
                time.sleep(0.01)
