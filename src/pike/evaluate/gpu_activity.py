"""How much of the time each GPU of the pool runs kernels, as nvidia-smi reports it.

The pool knows when a GPU is held (a candidate on it) but not whether kernels run: a held GPU may be
waiting for a CUDA context, a torch.compile or a comparison on the CPU. nvidia-smi's
``utilization.gpu`` is the fraction of each sample period in which a kernel ran; it is sampled here in
the background, in one long-running nvidia-smi process, for the pool's GPUs only. Without nvidia-smi
(a CPU run, or a machine without the tool) there is nothing to report, and the reason says why.
"""

from __future__ import annotations

import shutil
import subprocess
import threading


class KernelActivity:
    """``gpus``: each pool device's GPU as nvidia-smi names it (an index in PCI bus order, or a UUID;
    the value its evaluation children get in CUDA_VISIBLE_DEVICES), None for a CPU device."""

    def __init__(self, gpus: list[str | None], period_ms: int = 1000):
        self.gpus, self.period_ms = gpus, period_ms
        self.samples: dict[str, list[float]] = {g: [] for g in gpus if g is not None}
        self.reason = ""
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> "KernelActivity":
        exe = shutil.which("nvidia-smi")
        if not self.samples:
            self.reason = "no GPU in the pool"
        elif exe is None:
            self.reason = "nvidia-smi not on PATH"
        else:
            cmd = [exe, "--query-gpu=index,uuid,utilization.gpu", "--format=csv,noheader,nounits",
                   f"-lms={self.period_ms}", "-i", ",".join(self.samples)]
            try:
                self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            except OSError as e:
                self.reason = f"nvidia-smi did not start: {e}"
                return self
            self._thread = threading.Thread(target=self._read, daemon=True, name="pike-kernel-activity")
            self._thread.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 3:
                continue
            index, uuid, util = parts
            try:
                value = float(util) / 100
            except ValueError:  # "[N/A]" (MIG, some virtual GPUs)
                continue
            key = index if index in self.samples else uuid if uuid in self.samples else None
            if key is not None:
                with self._lock:
                    self.samples[key].append(value)

    def fractions(self) -> list[float | None]:
        """Mean fraction of time with a kernel running, per pool device, so far (None: no samples)."""
        with self._lock:
            return [sum(self.samples[g]) / len(self.samples[g]) if g is not None and self.samples.get(g) else None
                    for g in self.gpus]

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if not self.reason and not any(self.samples.values()):
            self.reason = "nvidia-smi gave no utilisation samples"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
