"""The target device as the agents are told it: facts measured or read on the evaluating machine
(its probe), a GPU's datasheet peaks from a packaged table, and the toolchains that work there.
Nothing is guessed: a fact that is unknown is left out."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.resources import files

PEAK_PRECISIONS = (("fp32", "fp32"), ("tf32", "tf32 tensor cores"), ("bf16", "bf16 tensor cores"),
                   ("fp16", "fp16 tensor cores"), ("fp8", "fp8 tensor cores"))


@dataclass
class Hardware:
    name: str | None = None
    kind: str = "cuda"  # "cuda" or "cpu"
    # GPU
    capability: str | None = None
    sms: int | None = None
    memory_gb: float | None = None
    l2_mb: float | None = None
    bandwidth_gbs: float | None = None  # measured on this machine
    peaks: dict[str, float] = field(default_factory=dict)  # precision -> TFLOP/s (datasheet, dense)
    peak_bandwidth_gbs: float | None = None  # datasheet
    peaks_source: str | None = None
    # CPU
    cores: int | None = None  # usable by the evaluator (its affinity)
    threads: int | None = None  # torch's intra-op threads
    isa: list[str] = field(default_factory=list)
    cpu_capability: str | None = None  # the code path of PyTorch's own CPU kernels (AVX2, AVX512...)
    caches: list[dict] = field(default_factory=list)  # {level, type, size, shared_by}
    # Toolchain: name -> version; "cxx" the compiler's version line, "openmp" and "nvcc" only when
    # they built a test program here
    versions: dict[str, str] = field(default_factory=dict)
    openmp: bool | None = None

    @classmethod
    def from_info(cls, info: dict, kind: str) -> "Hardware":
        """From the evaluator's device facts (``Evaluator.device_info``)."""
        versions = {k: str(info[k]) for k in ("torch", "cuda", "triton", "cudnn", "nvcc", "cxx") if info.get(k)}
        if kind == "cpu":
            return cls(name=info.get("cpu_model") or info.get("device_name") or None, kind="cpu", cores=info.get("cpus"),
                       threads=info.get("threads"), isa=list(info.get("isa") or []), cpu_capability=info.get("cpu_capability"),
                       caches=list(info.get("caches") or []), versions=versions, openmp=info.get("openmp"))
        peak = gpu_peaks().get((info.get("device_name") or "").strip().lower(), {})
        return cls(
            name=info.get("device_name"), kind="cuda", capability=info.get("capability"), sms=info.get("sms"),
            memory_gb=round(info["memory_bytes"] / 2**30, 1) if info.get("memory_bytes") else None,
            l2_mb=round(info["l2_bytes"] / 2**20, 1) if info.get("l2_bytes") else None,
            bandwidth_gbs=round(info["bandwidth_gbs"]) if info.get("bandwidth_gbs") else None,
            peaks={p: peak[p] for p, _ in PEAK_PRECISIONS if peak.get(p)},
            peak_bandwidth_gbs=peak.get("bandwidth_gbs"), peaks_source=peak.get("source"), versions=versions,
        )

    def describe(self) -> str:
        """One line naming the device, for "Target device:" and the system prompt."""
        v = self.versions
        if self.kind == "cpu":
            what = ", ".join(x for x in (self.name, f"{self.cores} cores" if self.cores else None) if x)
            return f"the CPU ({what}; torch {v.get('torch', '?')}); no GPU" if what else "the CPU (no GPU)"
        tools = ", ".join(f"{label} {v[k]}" for k, label in (("torch", "torch"), ("cuda", "CUDA"), ("triton", "Triton"))
                          if v.get(k))
        return f"{self.name or 'a CUDA GPU'}" + (f" ({tools})" if tools else "")

    def facts(self) -> list[str]:
        """One "label: value" line per known fact."""
        return self._cpu_facts() if self.kind == "cpu" else self._gpu_facts()

    def _gpu_facts(self) -> list[str]:
        rows = [
            ("GPU", self.name, "{}"), ("compute capability", self.capability, "{}"),
            ("streaming multiprocessors", self.sms, "{}"), ("memory", self.memory_gb, "{:g} GB"),
            ("L2 cache", self.l2_mb, "{:g} MB"),
            ("memory bandwidth measured here (device-to-device copy)", self.bandwidth_gbs, "{:g} GB/s"),
        ]
        lines = [f"{label}: {fmt.format(v)}" for label, v, fmt in rows if v is not None]
        peaks = [f"{label} {self.peaks[p]:g} TFLOP/s" for p, label in PEAK_PRECISIONS if p in self.peaks]
        if self.peak_bandwidth_gbs:
            peaks.append(f"memory bandwidth {self.peak_bandwidth_gbs:g} GB/s")
        if peaks:
            lines.append(f"peak rates ({self.peaks_source or 'datasheet'}, dense): " + ", ".join(peaks))
        v = self.versions
        tools = [f"{label} {v[k]}" for k, label in (("torch", "torch"), ("cuda", "CUDA runtime"), ("triton", "Triton"),
                                                    ("cudnn", "cuDNN")) if v.get(k)]
        if tools:
            lines.append("toolchain: " + ", ".join(tools))
        if v.get("nvcc"):
            lines.append(f"CUDA C++ through torch.utils.cpp_extension.load_inline builds here (nvcc {v['nvcc']})")
        elif v:
            lines.append("no working nvcc here: CUDA C++ through load_inline cannot be built; use Triton or PyTorch")
        return lines

    def _cpu_facts(self) -> list[str]:
        lines = [f"CPU: {self.name}"] if self.name else []
        if self.cores:
            lines.append(f"cores available to the evaluator: {self.cores}"
                         + (f"; PyTorch uses {self.threads} threads" if self.threads else ""))
        if self.isa:
            line = "ISA extensions: " + ", ".join(self.isa)
            if self.cpu_capability:
                line += f" (PyTorch's own kernels use its {self.cpu_capability} code path)"
            lines.append(line)
            missing = _missing_isa(self.isa)
            if missing:
                lines.append("not available: " + "; ".join(missing))
        if self.caches:
            lines.append("caches: " + ", ".join(_cache_text(c) for c in self.caches))
        lines.append("what runs here: " + "; ".join(self._cpu_paths()))
        return lines

    def _cpu_paths(self) -> list[str]:
        paths = ["PyTorch's vectorised CPU kernels (ATen, oneDNN)"]
        cxx = self.versions.get("cxx")
        if cxx:
            cpp = f"C++ through torch.utils.cpp_extension.load_inline (compiler: {cxx})"
            if self.openmp:
                cpp += ", with OpenMP when built with extra_cflags=['-O3', '-fopenmp'] and extra_ldflags=['-fopenmp']"
            elif self.openmp is False:
                cpp += "; OpenMP does not build here"
            paths.append(cpp)
        else:
            paths.append("no C++ compiler was found, so C++ extensions cannot be built")
        paths.append("Triton only under its interpreter (TRITON_INTERPRET=1), far slower than PyTorch: not a way to"
                     " speed anything up")
        paths.append("no GPU: CUDA, CUDA graphs and torch.cuda are not available")
        return paths


def _missing_isa(isa: list[str]) -> list[str]:
    """The extensions whose absence changes what is worth trying (x86 only)."""
    if "AVX2" not in isa and "AVX" not in isa:
        return []  # not an x86 CPU (or flags unknown): say nothing
    missing = []
    if "AVX-512F" not in isa:
        missing.append("AVX-512")
    if "AMX" not in isa:
        missing.append("AMX")
    if not {"AVX-512 BF16", "AMX-BF16"} & set(isa):
        missing.append("native bf16 arithmetic (bf16 is converted to fp32 to compute, usually slower than fp32)")
    return missing


def _cache_text(c: dict) -> str:
    name = f"L{c['level']}" + ("d" if c.get("type") == "Data" else "")
    shared = c.get("shared_by")
    where = "per core" if shared == 1 else f"shared by {shared} CPUs" if shared else ""
    return f"{name} {c['size']}" + (f" {where}" if where else "")


@lru_cache(maxsize=1)
def gpu_peaks() -> dict[str, dict]:
    """Datasheet peaks by lower-case device name (``gpu_peaks.csv``)."""
    text = (files(__package__) / "gpu_peaks.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(io.StringIO("\n".join(line for line in text.splitlines() if not line.startswith("#"))))
    out = {}
    for row in rows:
        entry: dict = {"source": row["source"]}
        for key in (*(p for p, _ in PEAK_PRECISIONS), "bandwidth_gbs"):
            if row.get(key):
                entry[key] = float(row[key])
        out[row["name"].strip().lower()] = entry
    return out
