"""A scripted stand-in for an LLM, for pool benchmarks: `--llm "cmd:python3 benchmarks/scripted_llm.py"`.

NOT an LLM and never a result about search quality. It reads PIKE's prompt on stdin, waits a
realistic reply latency (uniform between --min and --max seconds), and answers with one candidate
for the task in the prompt's reference block, drawn from a fixed mix so that the evaluation pool sees
the load a real run gives it: an offline-style variant (TF32, CUDA graph, autocast, channels_last,
cudnn.benchmark), a torch.compile variant (compiles inside the candidate process), a CUDA extension
built with load_inline (a fresh build on the build pool each time), a candidate that fails at run
time, and one with wrong outputs. The kind drawn is printed to stderr only.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import sys
import tempfile
import time
from pathlib import Path

MIX = {"variant": 0.45, "compile": 0.10, "cuda_ext": 0.15, "runtime_error": 0.15, "wrong": 0.15}

_EXT = r'''
from torch.utils.cpp_extension import load_inline as _pike_load_inline

# build {tag}
_pike_src = """
#include <torch/extension.h>

__global__ void copy_kernel(const float* __restrict__ x, float* __restrict__ y, long n) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i];
}

torch::Tensor copy(torch::Tensor x) {
    auto y = torch::empty_like(x);
    long n = x.numel();
    if (n > 0) copy_kernel<<<(n + 255) / 256, 256>>>(x.data_ptr<float>(), y.data_ptr<float>(), n);
    return y;
}
"""
_pike_ext = _pike_load_inline(name="pike_scripted_{tag}", cpp_sources="torch::Tensor copy(torch::Tensor x);",
                              cuda_sources=_pike_src, functions=["copy"])


def _pike_out(t):
    if t.dtype == torch.float32 and t.is_cuda and t.is_contiguous():
        return _pike_ext.copy(t)
    return t
'''

_WRAP = '''

def _pike_apply(fn, obj):
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_pike_apply(fn, o) for o in obj)
    return obj


class ModelNew(Model):
    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        return _pike_apply(_pike_out, out)
'''

_WRONG = '''

def _pike_out(t):
    return t * 1.01 + 0.01 if t.is_floating_point() else t
'''

_RUNTIME_ERROR = '''

class ModelNew(Model):
    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        return _pike_fused_epilogue(out)  # never defined: a NameError at the first call
'''


def reference_of(prompt: str) -> str | None:
    m = re.search(r"## Reference implementation.*?```python\n(.*?)```", prompt, re.S)
    m = m or re.search(r"```python\n(.*?)```", prompt, re.S)
    return m.group(1) if m else None


def candidate(source: str, kind: str, device: str, rng: random.Random) -> str:
    from pike.search.variants import SINGLES, TaskFacts, render, skip_reason
    from pike.task import load_task

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "scripted_task.py"
        path.write_text(source)
        task = load_task(path)
    tag = f"{rng.getrandbits(48):012x}"
    if kind == "cuda_ext" and device == "cuda":
        return f"{source}\n{_EXT.replace('{tag}', tag)}{_WRAP}"
    if kind == "wrong":
        return f"{source}\n{_WRONG}{_WRAP}"
    if kind == "runtime_error":
        return f"{source}\n{_RUNTIME_ERROR}"
    facts = TaskFacts.of(task)
    pool = [k for k in SINGLES if not skip_reason(k, device, facts)]
    pool = [k for k in pool if k[0].startswith("compile:")] if kind == "compile" else [k for k in pool if not k[0].startswith("compile:")]
    knobs = rng.choice(pool) if pool else ()
    return render(task, knobs, device) + f"\n# scripted candidate {tag}\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--min", type=float, default=20.0, help="shortest reply latency, seconds")
    ap.add_argument("--max", type=float, default=60.0, help="longest reply latency, seconds")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--seed", type=int, default=None, help="fixed draws (default: fresh ones for every reply)")
    a = ap.parse_args()
    prompt = sys.stdin.read()
    # Fresh draws by default: identical prompts (a search's first iterations) must not all get one reply.
    rng = random.Random(hashlib.sha256(f"{a.seed}:{prompt}".encode()).digest() if a.seed is not None else None)
    time.sleep(rng.uniform(a.min, a.max))
    source = reference_of(prompt)
    if source is None:
        print("I could not find the model to optimise.")
        return
    kind = rng.choices(list(MIX), weights=list(MIX.values()))[0]
    print(f"scripted_llm: {kind}", file=sys.stderr)
    print(f"Scripted candidate ({kind}).\n\n```python\n{candidate(source, kind, a.device, rng)}```")


if __name__ == "__main__":
    main()
