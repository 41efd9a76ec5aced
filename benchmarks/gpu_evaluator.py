"""GPU benchmarks of the evaluator (issue: GPU timing, baselines and the pool).

    PYTHONPATH=src python3 benchmarks/gpu_evaluator.py --parts all --out results.json

Parts: repeat (same candidate timed twice), dobench (agreement with triton.testing.do_bench),
overhead (evaluator cost beyond build and measured runs), iam (illegal memory access contained),
stream (side-stream candidates), build (killed CUDA extension build), pool (throughput with ~30 s
load_inline builds), scaling (a fixed workload on one GPU, then two), costs (where
the time of a reference and of an evaluation goes, cold cache). Each part writes its numbers into one JSON document; the summary is printed last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from pike.evaluate.evaluator import EvalConfig, Evaluator
from pike.evaluate.pool import EvalPool
from pike.suites import BUILTIN_DIR
from pike.task import load_task

REPEAT_TASKS = ["layernorm_gelu_chain", "mlp_shallow_wide", "gpt2_block", "causal_self_attention", "resnet_bottleneck_block", "rmsnorm_swiglu_mlp", "kv_cache_decode"]
DOBENCH_TASKS = ["mlp_shallow_wide", "gpt2_block", "llama_decoder_block", "causal_self_attention", "dit_block"]


def task(name: str):
    return load_task(BUILTIN_DIR / f"{name}.py")


def part_repeat(ev: Evaluator) -> dict:
    rows = []
    for name in REPEAT_TASKS:
        t = task(name)
        a = ev.evaluate(t, t.source, trusted=True)
        b = ev.evaluate(t, t.source, trusted=True)
        if not (a.ok and b.ok):
            rows.append({"task": name, "error": f"{a.status}: {a.message} / {b.status}: {b.message}"})
            continue
        ra, rb = a.runtime_ms, b.runtime_ms
        rows.append({"task": name, "run1_ms": ra, "run2_ms": rb, "diff_pct": 100 * abs(ra - rb) / min(ra, rb), "iqr1_pct": 100 * a.timing.spread, "runs": [a.timing.runs, b.timing.runs]})
    return {"rows": rows}


DOBENCH_SCRIPT = r"""
import json, sys, torch, importlib.util
import triton.testing
spec = importlib.util.spec_from_file_location("t", sys.argv[1]); m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
torch.manual_seed(42)
init = m.get_init_inputs()
torch.manual_seed(1000)
x = [v.cuda() if isinstance(v, torch.Tensor) else v for v in m.get_inputs()]
torch.manual_seed(42)
model = m.Model(*init).cuda().eval()
with torch.inference_mode():
    ms = triton.testing.do_bench(lambda: model(*x), warmup=200, rep=2000, return_mode="median")
print(json.dumps({"do_bench_ms": ms}))
"""


def part_dobench(ev: Evaluator) -> dict:
    rows = []
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(DOBENCH_SCRIPT)
    for name in DOBENCH_TASKS:
        t = task(name)
        r = ev.evaluate(t, t.source, trusted=True)
        p = subprocess.run([sys.executable, f.name, str(t.path)], capture_output=True, text=True, timeout=300)
        try:
            db = json.loads(p.stdout.strip().splitlines()[-1])["do_bench_ms"]
        except Exception:  # noqa: BLE001
            rows.append({"task": name, "error": p.stderr[-1500:]})
            continue
        if not r.ok:
            rows.append({"task": name, "error": f"{r.status}: {r.message}"})
            continue
        rows.append({"task": name, "pike_ms": r.runtime_ms, "do_bench_ms": db, "diff_pct": 100 * (r.runtime_ms - db) / db})
    return {"rows": rows}


COST_TASKS = ["gpt2_block", "llama_decoder_block", "rmsnorm_swiglu_mlp"]


def part_costs(ev: Evaluator) -> dict:
    """Where an evaluation's wall time goes on a cold cache: the reference job's phases, then an eager
    candidate's phases (child: import/init, checks, timing; orchestrator: the rest)."""
    rows = []
    for name in COST_TASKS:
        t = task(name)
        t0 = time.monotonic()
        ref = ev.reference(t)
        ref_s = time.monotonic() - t0
        r = ev.evaluate(t, t.source, trusted=True)
        row = {"task": name, "reference_wall_s": ref_s, "reference_phases_s": ref.meta.get("durations_s"),
               "pool": ref.meta.get("pool"), "output_mb": ref.meta.get("output_bytes", 0) / 2**20,
               "params_m": ref.meta.get("params", 0) / 1e6, "status": r.status, "runtime_ms": r.runtime_ms,
               "candidate_s": r.durations_s}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return {"rows": rows}


def overhead_row(name: str, r, **extra) -> dict:
    """One evaluation's phases; overhead = total - timing loop - build (the issue's definition)."""
    d = r.durations_s
    return {"task": name, **extra, "total_s": d.get("total_s"), "timing_s": d.get("timing_s", 0.0),
            "compare_s": d.get("compare_s"), "checks_s": d.get("checks_s"), "import_init_s": d.get("import_init_s"),
            "overhead_s": d.get("total_s", 0) - d.get("timing_s", 0) - d.get("build_s", 0)}


def part_overhead(ev: Evaluator) -> dict:
    rows = []
    for name in ["layernorm_gelu_chain", "mlp_shallow_wide", "gpt2_block"]:
        t = task(name)
        ev.evaluate(t, t.source, trusted=True)  # references cached
        for _ in range(3):
            rows.append(overhead_row(name, ev.evaluate(t, t.source, trusted=True)))
    return {"rows": rows, "median_overhead_s": statistics.median(r["overhead_s"] for r in rows)}


def part_handoff(cache: Path, device: str = "cuda", size: str | None = None) -> dict:
    """Outputs handed to the comparator as CUDA IPC handles against the same outputs through files
    (the orchestrator compares): per-candidate overhead side by side (on, off, on, off, ... on one
    cache and GPU), and the same verdicts for wrong candidates of the test suite's tasks. ``on`` and
    ``off`` are the new and the old defaults (models built on the device against on the CPU);
    ``on_cpu_init`` is the comparator with models built on the CPU, to tell the two changes apart."""
    import os

    import torch

    repo = Path(__file__).resolve().parent.parent
    shm_before = set(os.listdir("/dev/shm"))
    doc: dict = {"rows": [], "verdicts": []}
    configs = {"on": ("on", "device"), "off": ("off", "cpu"), "on_cpu_init": ("on", "cpu")}
    evs = {m: Evaluator(EvalConfig(device=device, cache_dir=cache, comparator=c, init_on=i)) for m, (c, i) in configs.items()}
    doc["configs"] = {m: {"comparator": c, "init_on": i} for m, (c, i) in configs.items()}
    doc["built_on"] = {}
    try:
        # /dev/shm after candidates with the comparator off only: does the CUDA driver leave files
        # (cuda.shm.*) for every child, or only for those that shared memory handles?
        t = load_task(BUILTIN_DIR / "mlp_shallow_wide.py", size=size)
        for _ in range(3):
            evs["off"].evaluate(t, t.source, trusted=True)
        doc["shm_left_off_only"] = sorted(set(os.listdir("/dev/shm")) - shm_before)[:20]
        for name in ["layernorm_gelu_chain", "mlp_shallow_wide", "gpt2_block", "rmsnorm_swiglu_mlp"]:
            t = load_task(BUILTIN_DIR / f"{name}.py", size=size)
            for m, ev in evs.items():
                ev.evaluate(t, t.source, trusted=True)  # references cached, processes warm
                meta = ev.reference(t).meta
                doc["built_on"][f"{name}/{m}"] = [meta.get("built_on"), meta.get("built_note")]
            for _ in range(3):
                for mode, ev in evs.items():
                    r = ev.evaluate(t, t.source, trusted=True)
                    row = overhead_row(name, r, comparator=mode, status=r.status)
                    print(json.dumps(row), flush=True)
                    doc["rows"].append(row)
        tests = repo / "tests"
        cases = [("ln_mlp", n) for n in ["ln_fused", "ln_drops_affine", "ln_pointer_cache", "ln_count_cache", "ln_wrong_shape",
                                          "ln_nan", "ln_mutates_input", "ln_thread", "ln_model_only"]]
        cases += [("bf16_cancel", "bf16_cancel_fp32"), ("wide_mlp", "wide_addmm")]
        for task_name, cand in cases:
            t = load_task(tests / "tasks" / f"{task_name}.py", size=size)
            src = (tests / "candidates" / f"{cand}.py").read_text()
            got = {m: ev.evaluate(t, src) for m, ev in evs.items()}
            v = {"task": task_name, "candidate": cand, **{m: [r.status, r.message[:300]] for m, r in got.items()},
                 "same_status": len({r.status for r in got.values()}) == 1}
            print(json.dumps(v), flush=True)
            doc["verdicts"].append(v)
        doc["fallbacks"] = evs["on"].comparator_fallbacks
    finally:
        for ev in evs.values():
            ev.close()
    for mode in configs:
        rows = [r for r in doc["rows"] if r["comparator"] == mode]
        doc[f"median_overhead_s_{mode}"] = statistics.median(r["overhead_s"] for r in rows)
        for name in {r["task"] for r in rows}:
            doc[f"{name}_overhead_s_{mode}"] = statistics.median(r["overhead_s"] for r in rows if r["task"] == name)
    doc["shm_left"] = sorted(set(os.listdir("/dev/shm")) - shm_before)[:20]
    if device == "cuda":
        doc["gpu_processes"] = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv"],
                                              capture_output=True, text=True).stdout
    doc["torch"] = torch.__version__
    return doc


IAM = '''
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def bad_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    v = tl.load(x_ptr + offs, mask=offs < n)
    tl.store(y_ptr + offs * 1000000007 + (1 << 40), v, mask=offs < n)


class ModelNew(nn.Module):
    def __init__(self, *args):
        super().__init__()

    def forward(self, x, *rest):
        y = torch.empty_like(x)
        bad_kernel[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
        return y
'''

SIDE_STREAM = '''
import torch
import torch.nn as nn
import torch.nn.functional as F

{task_source}

class ModelNew(Model):
    def forward(self, *args):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            y = super().forward(*args)
        {join}
        return y
'''


def part_iam(ev: Evaluator) -> dict:
    t = task("layernorm_gelu_chain")
    bad = ev.evaluate(t, IAM)
    good = ev.evaluate(t, t.source, trusted=True)
    return {"illegal": {"status": bad.status, "message": bad.message[:500]}, "next": {"status": good.status, "runtime_ms": good.runtime_ms, "max_abs_err": good.max_abs_err}}


def part_stream(ev: Evaluator) -> dict:
    t = task("mlp_shallow_wide")
    out = {}
    for name, join in [("side_stream_synchronized", "s.synchronize()"), ("side_stream_no_join", "pass")]:
        r = ev.evaluate(t, SIDE_STREAM.replace("{task_source}", t.source).replace("{join}", join), trusted=True)
        out[name] = {"status": r.status, "message": r.message[:400], "tags": r.tags,
                     "event_ms": r.timing.event_median_ms if r.timing else None,
                     "host_ms": r.timing.host_median_ms if r.timing else None,
                     "runtime_ms": r.runtime_ms}
    eager = ev.evaluate(t, t.source, trusted=True)
    out["eager_ms"] = eager.runtime_ms
    return out


CUDA_EXT = r'''
import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

# variant {variant}
_src = """
#include <torch/extension.h>
#include <cuda_runtime.h>

__global__ void gelu_kernel(const float* __restrict__ x, float* __restrict__ y, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    }
}

torch::Tensor gelu(torch::Tensor x) {
    auto y = torch::empty_like(x);
    long n = x.numel();
    gelu_kernel<<<(n + 255) / 256, 256>>>(x.data_ptr<float>(), y.data_ptr<float>(), n);
    return y;
}
"""

_ext = load_inline(name="pike_bench_gelu_{variant}", cpp_sources="torch::Tensor gelu(torch::Tensor x);", cuda_sources=_src, functions=["gelu"])

{task_source}

class ModelNew(Model):
    pass
'''


def part_build(cache: Path) -> dict:
    t = task("layernorm_gelu_chain")
    src = CUDA_EXT.replace("{variant}", "killed").replace("{task_source}", t.source)
    with Evaluator(EvalConfig(device="cuda", cache_dir=cache)) as ev:
        t0 = time.monotonic()
        killed = ev.builder.build(src, ev.workdir / "killed", timeout=8)
        locks = [str(p) for p in (cache / "extensions").glob("*/*/lock")]
        t1 = time.monotonic()
        r = ev.evaluate(t, src)
        return {"killed": killed.status, "killed_after_s": t1 - t0, "stale_torch_locks": locks,
                "rebuild": {"status": r.status, "message": r.message[:300], "build_s": r.durations_s.get("build_s")}}


def part_pool(cache: Path, n: int = 4) -> dict:
    """``n`` CUDA-extension candidates at once: builds overlap on the CPU pool while the GPU evaluates
    finished ones. A task with small outputs, so that evaluation is not what is measured."""
    t = task("mlp_shallow_wide")
    srcs = [CUDA_EXT.replace("{variant}", f"v{i}").replace("{task_source}", t.source) for i in range(n + 1)]

    async def run(sources: list[str]) -> dict:
        with EvalPool(EvalConfig(device="cuda", cache_dir=cache), devices=["cuda:0"]) as pool:
            await pool.evaluate(t, t.source, trusted=True)  # references and context warm
            t0 = time.monotonic()
            done = []
            for fut in asyncio.as_completed([pool.evaluate(t, s) for s in sources]):
                r = await fut
                done.append({"at_s": time.monotonic() - t0, "status": r.status, "build_s": r.durations_s.get("build_s"),
                             "total_s": r.durations_s.get("total_s")})
                print(json.dumps(done[-1]), flush=True)
            wall = time.monotonic() - t0
            return {"candidates": len(sources), "wall_s": wall, "per_minute": 60 * len(sources) / wall, "done": done,
                    "gpu_held_s": pool.stats.slots[0].held_s, "build_workers": pool._n_build}

    # One build alone takes `build_s` of any row (about 70 s on an H100 with CUDA 13): in series, n
    # candidates would take n times that plus their evaluations.
    return {"parallel": asyncio.run(run(srcs[1:]))}


SCALING_TASKS = ["gpt2_block", "convnext_block", "causal_self_attention"]
SCALING_VARIANTS = ["eager", "cuda_graph", "tf32", "bf16_autocast", "compile:default"]


def part_scaling(cache: Path, device: str = "cuda", size: str | None = None, n_devices: int = 2) -> dict:
    """The same fixed workload on one device, then on ``n_devices``: PIKE's own variants of a few
    tasks (a torch.compile among them), all submitted at once. Each run has its own cache (so the
    second cannot reuse the first's compiles) with its references made before the clock starts. Pool
    scaling alone, without the LLM's latency or the tasks' start-up of `pool_busy.py`."""
    from pike.search.variants import variants

    tasks = [load_task(BUILTIN_DIR / f"{n}.py", size=size) for n in SCALING_TASKS]
    work = [(t, v.name, v.source) for t in tasks for v in variants(t, device, combos=False)
            if v.name in SCALING_VARIANTS and v.source is not None]

    async def run(devices: list[str], run_cache: Path) -> dict:
        with EvalPool(EvalConfig(device=device, cache_dir=run_cache), devices=devices) as pool:
            await asyncio.gather(*(pool.reference_meta(t) for t in tasks))  # references, not timed
            held0 = [s.held() for s in pool.stats.slots]
            t0 = time.monotonic()
            done = []
            for fut in asyncio.as_completed([pool.evaluate(t, src, trusted=True) for t, _, src in work]):
                r = await fut
                done.append({"at_s": round(time.monotonic() - t0, 2), "status": r.status, "total_s": r.durations_s.get("total_s")})
            wall = time.monotonic() - t0
            held = [s.held() - h for s, h in zip(pool.stats.slots, held0)]
            return {"devices": devices, "candidates": len(work), "wall_s": wall, "per_minute": 60 * len(work) / wall,
                    "held_fraction": [h / wall for h in held], "statuses": sorted({d["status"] for d in done}), "done": done}

    one = asyncio.run(run([f"{device}:0" if device == "cuda" else device], cache / "scaling-1"))
    many = asyncio.run(run([f"{device}:{i}" if device == "cuda" else device for i in range(n_devices)], cache / f"scaling-{n_devices}"))
    return {"work": [f"{t.name}:{name}" for t, name, _ in work], "one": one, "many": many,
            "scaling": one["wall_s"] / many["wall_s"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="all")
    ap.add_argument("--out", default="gpu_evaluator.json")
    ap.add_argument("--cache", default=None)
    args = ap.parse_args()
    parts = ["repeat", "dobench", "costs", "overhead", "iam", "stream", "build", "pool"] if args.parts == "all" else args.parts.split(",")
    cache = Path(args.cache or tempfile.mkdtemp(prefix="pike-bench-"))
    doc: dict = {"parts": {}}
    with Evaluator(EvalConfig(device="cuda", cache_dir=cache)) as ev:
        doc["device"] = ev.device_info()
        for p in parts:
            t0 = time.monotonic()
            try:
                if p in ("build", "pool", "scaling", "handoff"):
                    res = globals()[f"part_{p}"](cache)
                else:
                    res = globals()[f"part_{p}"](ev)
            except Exception:  # noqa: BLE001
                res = {"error": traceback.format_exc()[-3000:]}
            res["wall_s"] = time.monotonic() - t0
            doc["parts"][p] = res
            Path(args.out).write_text(json.dumps(doc, indent=1))
            print(f"== {p} ({res['wall_s']:.1f} s)\n{json.dumps(res, indent=1)[:3000]}", flush=True)


if __name__ == "__main__":
    main()
