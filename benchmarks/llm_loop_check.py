"""GPU checks of what the LLM loop tells a model (issue #20), for `gpu_session.sh llmloop`:

1. the device facts a prompt gets on this GPU (name, SMs, bandwidth, datasheet peaks, the toolchain
   that built a test kernel);
2. the profile of solutions with custom kernels: a Triton kernel and a CUDA C++ kernel must appear by
   name, and the rows must add up to the measured total;
3. precision tags from run-time dtypes: an fp32 solution, one that only mentions bf16, one computing
   in bf16 through autocast, one with TF32 matmuls.

Writes $OUT/llm_loop.json and prints each part. CPU-only parts of the same behaviour are in the tests.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from pike.agents import Hardware  # noqa: E402
from pike.evaluate.evaluator import EvalConfig, Evaluator  # noqa: E402
from pike.task import load_task  # noqa: E402

TASK = ROOT / "tests" / "tasks" / "matmul.py"  # relu(a @ b)
TRITON = (ROOT / "tests" / "candidates" / "matmul_triton.py").read_text()
CUDA = r'''
import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

_src = """
#include <torch/extension.h>
__global__ void pike_check_relu_kernel(const float* x, float* y, long n) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] > 0.f ? x[i] : 0.f;
}
torch::Tensor relu_cuda(torch::Tensor x) {
    auto y = torch::empty_like(x);
    long n = x.numel();
    pike_check_relu_kernel<<<(n + 255) / 256, 256>>>(x.data_ptr<float>(), y.data_ptr<float>(), n);
    return y;
}
"""
_ext = load_inline(name="pike_check_relu", cpp_sources="torch::Tensor relu_cuda(torch::Tensor x);",
                   cuda_sources=_src, functions=["relu_cuda"])


class ModelNew(nn.Module):
    def forward(self, a, b):
        return _ext.relu_cuda((a @ b).contiguous())
'''
FP32 = "import torch\nimport torch.nn as nn\n\nclass ModelNew(nn.Module):\n    def forward(self, a, b):\n        return torch.relu(a @ b)\n"
MENTIONS = FP32.replace("        return torch.relu", "        if a.dtype in (torch.bfloat16, torch.float16):\n            raise TypeError('fp32 only')\n        return torch.relu")
AUTOCAST = FP32.replace("        return torch.relu(a @ b)", "        with torch.autocast('cuda', dtype=torch.bfloat16):\n            c = a @ b\n        return torch.relu(c.float())")
TF32 = FP32.replace("        return torch.relu(a @ b)", "        torch.backends.cuda.matmul.allow_tf32 = True\n        return torch.relu(a @ b)")


def main() -> int:
    out_dir = Path(os.environ.get("OUT", "gpu-results"))
    out_dir.mkdir(parents=True, exist_ok=True)
    task = load_task(TASK)
    report: dict = {}
    with Evaluator(EvalConfig(device="cuda")) as ev:
        t0 = time.monotonic()
        info = ev.device_info(toolchain=True)
        report["facts_s"] = time.monotonic() - t0
        report["facts"] = Hardware.from_info(info, "cuda").facts()
        print("== device facts", f"({report['facts_s']:.1f} s, compiler checks included)")
        print("\n".join(report["facts"]))
        report["profiles"] = {}
        for name, src, kernel in (("triton", TRITON, "matmul_relu_kernel"), ("cuda", CUDA, "pike_check_relu_kernel")):
            r = ev.evaluate(task, src)
            text = ev.profile(task, src) if r.ok else ""
            total = re.search(r"^\s*100\.0%\s+([\d.e+-]+)\s+total", text, re.M)
            report["profiles"][name] = {"status": r.status, "message": r.message, "profile": text,
                                        "kernel_listed": kernel in text, "total_row": bool(total)}
            print(f"== profile of the {name} solution ({r.status}): kernel {kernel} listed: {kernel in text}")
            print(text or r.message)
        report["tags"] = {}
        for name, src in (("fp32", FP32), ("mentions_bf16", MENTIONS), ("autocast_bf16", AUTOCAST), ("tf32", TF32)):
            r = ev.evaluate(task, src)
            report["tags"][name] = {"status": r.status, "tags": r.tags, "hints": getattr(r, "precision_hints", None)}
            print(f"== {name}: {r.status}, tags {r.tags}, hints {getattr(r, 'precision_hints', None)}")
    (out_dir / "llm_loop.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
