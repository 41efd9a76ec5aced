"""What the agents are told about the machine that evaluates: the CPU's model, ISA extensions and
caches, and which toolchains work there (a C++ compiler with OpenMP; nvcc for a GPU).

Read from ``/proc/cpuinfo`` and sysfs (free). The toolchain checks build a tiny program, so they
run once per machine and compiler: the result is cached under the evaluator's cache directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

# cpuinfo flag -> name, in the order shown (x86 "flags", ARM "Features")
ISA_FLAGS = (
    ("sse4_2", "SSE4.2"), ("avx", "AVX"), ("avx2", "AVX2"), ("fma", "FMA"), ("f16c", "F16C"),
    ("avx512f", "AVX-512F"), ("avx512bw", "AVX-512BW"), ("avx512vl", "AVX-512VL"),
    ("avx512_vnni", "AVX-512 VNNI"), ("avx512_bf16", "AVX-512 BF16"), ("avx512_fp16", "AVX-512 FP16"),
    ("avx_vnni", "AVX-VNNI"), ("amx_tile", "AMX"), ("amx_bf16", "AMX-BF16"), ("amx_int8", "AMX-INT8"),
    ("amx_fp16", "AMX-FP16"), ("asimd", "NEON"), ("asimdhp", "NEON fp16"), ("bf16", "BF16 (Arm)"),
    ("i8mm", "I8MM"), ("sve", "SVE"), ("sve2", "SVE2"), ("sme", "SME"),
)
CHECKS_VERSION = 1  # bump when what the toolchain checks record changes
_OPENMP_TEST = """#include <omp.h>
int main() { int n = 0;
#pragma omp parallel reduction(+:n)
  n += 1;
  return n > 0 && omp_get_max_threads() > 0 ? 0 : 1; }
"""
_CUDA_TEST = "__global__ void k(float* x) { x[threadIdx.x] *= 2.0f; }\n"


def cpu_facts(cpuinfo: str | None = None, sysfs: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> dict:
    """Model name, ISA extensions and cache sizes of this machine's CPU (what is unknown is left out)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model = _cpuinfo_field(cpuinfo, "model name") or _cpuinfo_field(cpuinfo, "Model") or ""
    flags = set((_cpuinfo_field(cpuinfo, "flags") or _cpuinfo_field(cpuinfo, "Features") or "").split())
    facts: dict = {"isa": [name for flag, name in ISA_FLAGS if flag in flags]}
    if model:
        facts["cpu_model"] = model
    caches = _caches(sysfs)
    if caches:
        facts["caches"] = caches
    return facts


def _cpuinfo_field(text: str, name: str) -> str | None:
    m = re.search(rf"^{re.escape(name)}\s*:\s*(.*)$", text, re.M)
    return m.group(1).strip() if m else None


def _caches(sysfs: Path) -> list[dict]:
    """[{level, type, size, shared_by}] for cpu0's caches; ``shared_by``: how many CPUs share it."""
    out = []
    for d in sorted(sysfs.glob("index*")):
        try:
            level, kind, size = ((d / f).read_text().strip() for f in ("level", "type", "size"))
            shared = _count_cpus((d / "shared_cpu_list").read_text().strip()) if (d / "shared_cpu_list").exists() else None
        except OSError:
            continue
        if kind == "Instruction":
            continue
        out.append({"level": int(level), "type": kind, "size": size, "shared_by": shared})
    return out


def _count_cpus(cpu_list: str) -> int:
    n = 0
    for part in cpu_list.split(","):
        lo, _, hi = part.partition("-")
        if lo.strip():
            n += int(hi) - int(lo) + 1 if hi else 1
    return n


# ---------------------------------------------------------------- toolchains


def toolchain_facts(device_type: str, cache_dir: Path) -> dict:
    """``cxx`` (the C++ compiler torch's extensions use, with its version), ``openmp`` (whether it
    builds and runs an OpenMP program with -fopenmp) and, for a GPU, ``nvcc`` (its release, when it
    compiles a kernel). Cached per machine and compiler."""
    cxx = shutil.which(os.environ.get("CXX", "c++"))
    nvcc = _nvcc() if device_type == "cuda" else None
    key = json.dumps([CHECKS_VERSION, device_type, os.uname().nodename, *(_stamp(p) for p in (cxx, nvcc))])
    path = Path(cache_dir) / "toolchain" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    facts: dict = {"cxx": None, "openmp": False}
    if cxx:
        facts["cxx"] = _version_line(cxx)
        facts["openmp"] = _builds(cxx, "test.cpp", _OPENMP_TEST, ["-fopenmp", "-o", "test"], run="test")
    if nvcc:
        release = re.search(r"release ([\d.]+)", _version_line(nvcc, last=True) or "")
        if _builds(nvcc, "test.cu", _CUDA_TEST, ["-c", "-o", "test.o"]):
            facts["nvcc"] = release.group(1) if release else "unknown release"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(facts))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache: checked again next time
    return facts


def _nvcc() -> str | None:
    """The nvcc that torch's extension builds use (CUDA_HOME), else the one on PATH."""
    try:
        from torch.utils.cpp_extension import CUDA_HOME
    except Exception:  # noqa: BLE001
        CUDA_HOME = None
    if CUDA_HOME and Path(CUDA_HOME, "bin", "nvcc").exists():
        return str(Path(CUDA_HOME, "bin", "nvcc"))
    return shutil.which("nvcc")


def _stamp(path: str | None) -> list:
    if not path:
        return [None]
    try:
        st = Path(path).resolve().stat()
        return [path, st.st_mtime, st.st_size]
    except OSError:
        return [path]


def _version_line(exe: str, last: bool = False) -> str | None:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if not lines:
        return None
    return lines[-2] if last and len(lines) > 1 else lines[0]


def _builds(exe: str, name: str, source: str, args: list[str], run: str | None = None) -> bool:
    with tempfile.TemporaryDirectory(prefix="pike-toolchain-") as d:
        Path(d, name).write_text(source)
        try:
            subprocess.run([exe, name, *args], cwd=d, capture_output=True, timeout=120, check=True)
            if run:
                subprocess.run([str(Path(d, run))], cwd=d, capture_output=True, timeout=30, check=True)
        except (OSError, subprocess.SubprocessError):
            return False
    return True
