"""Device facts the orchestrator needs without creating a CUDA context of its own."""

from __future__ import annotations

import os
import shutil
import subprocess


def _nvidia_smi(*args: str) -> str | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        return subprocess.run([exe, *args], capture_output=True, text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None


def usable_cpus() -> int:
    """Cores this process may run on: its affinity (taskset, a container's cpuset), not the machine's
    count, so pools sized from it neither oversubscribe the cores it has nor assume ones it lacks."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def visible_gpu_count() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([v for v in visible.split(",") if v.strip() and v.strip() != "-1"])
    out = _nvidia_smi("-L")
    if out is not None:
        return sum(1 for line in out.splitlines() if line.startswith("GPU "))
    return 0


def driver_version() -> str | None:
    out = _nvidia_smi("--query-gpu=driver_version", "--format=csv,noheader")
    return out.splitlines()[0].strip() if out else None


def resolve_device(spec: str | None) -> tuple[str, str]:
    """(device, how it was chosen) for ``eval.device``: ``auto`` (the default) is the first CUDA device
    when this torch build has CUDA and a GPU is visible, else the CPU. Counting GPUs goes through NVML
    (torch.cuda.device_count), so no CUDA context is made in this process."""
    spec = (spec or "auto").strip()
    if spec != "auto":
        return spec, ""
    import torch

    if not torch.backends.cuda.is_built():
        return "cpu", "auto: this torch build has no CUDA"
    try:
        n = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - a broken driver reads as no GPU
        n = 0
    if n <= 0:
        return "cpu", "auto: no CUDA device visible"
    return "cuda", f"auto: the first of {n} visible CUDA device{'s' if n > 1 else ''}"


def device_problem(device: str) -> str | None:
    """Why ``device`` (cpu, cuda, cuda:N) cannot run here, in one line; None when it can. Checked before
    a run starts: otherwise the first sign is a failed probe deep in the evaluation pool."""
    if device == "cpu":
        return None
    kind, _, index = device.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        return f"device {device!r}: expected auto, cpu, cuda or cuda:N"
    import torch

    if not torch.backends.cuda.is_built():
        return f"device {device!r}: this torch build has no CUDA (torch {torch.__version__}): use --device cpu (or auto)"
    try:
        n = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - a broken driver reads as no GPU
        n = 0
    if n <= 0:
        return f"device {device!r}: no CUDA device is visible (driver, CUDA_VISIBLE_DEVICES): use --device cpu (or auto)"
    if index and int(index) >= n:
        return f"device {device!r}: only {n} CUDA device{'s' if n > 1 else ''} visible (cuda:0{f' to cuda:{n - 1}' if n > 1 else ''})"
    return None
