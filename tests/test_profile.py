"""The profile in the prompts accounts for the measured time: custom C++ extension calls included,
host work and an unattributed remainder, so its rows add up to the total."""

from __future__ import annotations

import re

import pytest

import torch
import torch.nn as nn

from pike.evaluate.profiling import HOST, UNATTRIBUTED_CPU, UNATTRIBUTED_GPU, format_profile, profile_forward


def _rows(text: str) -> dict[str, float]:
    """what -> ms per forward, from the formatted table."""
    out = {}
    for line in text.splitlines()[2:]:
        m = re.match(r"\s*[\d.]+%\s+([\d.e+-]+)\s+[\d.e+-]*\s+(.*)$", line)
        if m:
            out[m.group(2)] = float(m.group(1))
    return out


def test_rows_add_up_to_the_measured_total_with_the_rest_unattributed():
    p = {"device": "cpu", "iters": 2, "wall_ms": 20.0, "tracer": True, "rows": [
        ["attention (C++ extension function)", "extension", 2, 12.0], ["aten::addmm", "op", 4, 5.0],
        ["aten::relu", "op", 2, 0.5], [HOST, "host", 9, 1.5]]}
    text = format_profile(p)
    rows = _rows(text)
    assert text.startswith("10 ms per forward while profiled (2 forwards")
    assert rows["attention (C++ extension function)"] == 6.0 and rows["aten::addmm"] == 2.5
    assert rows[HOST] == 0.75 and rows[UNATTRIBUTED_CPU] == 0.5 and rows["total"] == 10.0
    assert abs(sum(v for k, v in rows.items() if k != "total") - rows["total"]) < 1e-9
    assert "60.0%" in text.splitlines()[2]  # the extension leads, with its share
    # The small rows beyond ``top`` are summed, not dropped.
    rows = _rows(format_profile(p, top=1))
    assert rows["(2 other operators)"] == 2.75 and rows["total"] == 10.0


def test_gpu_rows_are_kernels_and_the_rest_is_idle_time():
    p = {"device": "cuda", "iters": 1, "wall_ms": 1.0, "rows": [["triton_poi_fused_add_relu_0", "kernel", 1, 0.3],
                                                               ["my_cuda_kernel(float*)", "kernel", 2, 0.5]]}
    rows = _rows(format_profile(p))
    assert rows["my_cuda_kernel(float*)"] == 0.5 and rows[UNATTRIBUTED_GPU] == 0.2 and rows["total"] == 1.0


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 64)

    def forward(self, x):
        return torch.softmax(self.fc(x), -1)


def test_cpu_profile_of_a_real_forward_accounts_for_its_time():
    model, x = Block(), torch.randn(32, 64)
    with torch.inference_mode():
        model(x)
        p = profile_forward(model, [x], torch.device("cpu"), iters=3)
    names = {r[0] for r in p["rows"]}
    assert {"aten::addmm", "aten::_softmax"} <= names and p["wall_ms"] > 0
    rows = _rows(format_profile(p))
    assert rows["total"] >= p["wall_ms"] / 3 * 0.999
    assert abs(sum(v for k, v in rows.items() if k != "total") - rows["total"]) <= 0.01 * rows["total"] + 1e-3


CPP_PARENT = '''
import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

_src = """
#include <torch/extension.h>
torch::Tensor relu_mm(torch::Tensor a, torch::Tensor b) {
    auto c = a.matmul(b).contiguous();
    auto y = torch::empty_like(c);
    const float* x = c.data_ptr<float>();
    float* out = y.data_ptr<float>();
    for (int64_t i = 0; i < c.numel(); i++) {
        float v = x[i] > 0.f ? x[i] : 0.f;
        for (int r = 0; r < 4000; r++) v = v * 1.0000001f / 1.0000001f;  // deliberately slow, exact enough
        out[i] = v;
    }
    return y;
}
"""
_ext = load_inline(name="pike_test_profile_relu_mm", cpp_sources=_src, functions=["relu_mm"])


class ModelNew(nn.Module):
    def forward(self, a, b):
        return _ext.relu_mm(a, b)
'''


@pytest.mark.slow
def test_profile_of_a_cpp_extension_parent_accounts_for_its_time(tmp_path):
    """The issue's case: a parent whose time is in its C++ extension. A table of operators alone showed
    only the matmul and a copy, as if the extension cost nothing."""
    from pathlib import Path

    from pike.evaluate.evaluator import EvalConfig, Evaluator
    from pike.evaluate.timing import TimingConfig
    from pike.task import load_task

    task = load_task(Path(__file__).parent / "tasks" / "matmul.py")
    cfg = EvalConfig(cache_dir=tmp_path, timeout_s=120, build_timeout_s=600, timing=TimingConfig(warmup_ms=5, max_time_s=0.1))
    with Evaluator(cfg) as ev:
        result = ev.evaluate(task, CPP_PARENT)  # builds the extension, checks the parent
        assert result.ok, (result.message, result.feedback[-2000:])
        text = ev.profile(task, CPP_PARENT)
    rows = _rows(text)
    assert abs(sum(v for k, v in rows.items() if k != "total") - rows["total"]) <= 0.01 * rows["total"] + 1e-3
    ext = rows.get("relu_mm (C++ extension function)")
    # Named when PyTorch's Python tracer works; in the unattributed remainder when it does not: either
    # way the time is in the table, not lost.
    seen = ext if ext is not None else rows[UNATTRIBUTED_CPU]
    assert seen / rows["total"] > 0.5, text
    # The matmul inside it is its own row, or (under min_share) counted in the "other operators" row
    assert "aten::mm" in rows or any(k.endswith(" other operators)") for k in rows), text
