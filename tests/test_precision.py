"""Precision tags follow the dtypes a forward really uses (a dispatch mode in the child), not the
words in its source; the static tags stay as hints only where the forward could not show them."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pike.evaluate.precision import merge_tags, observe, runtime_tags


class MentionsOnly(nn.Module):
    """Checks for bf16 and fp16 in its dispatch but computes in fp32."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 8)

    def forward(self, x):
        if x.dtype in (torch.bfloat16, torch.float16):
            raise TypeError("fp32 only")
        return self.fc(x)


class HiddenCast(nn.Module):
    """Computes in bf16 through a dtype its source never spells out."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 8)
        self.low = getattr(torch, "bfloat" + "16")

    def forward(self, x):
        return F.linear(x.to(self.low), self.fc.weight.to(self.low), self.fc.bias.to(self.low)).float()


class Autocast(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 8)

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.fc(x).float()


def _seen(model, x=None):
    x = torch.randn(4, 16) if x is None else x
    with torch.inference_mode():
        return observe(model, [x])


def test_tags_follow_runtime_dtypes_not_mentions():
    seen = _seen(MentionsOnly())
    assert runtime_tags(seen) == [] and seen["product_dtypes"] == ["float32"]
    # Its static tags (from the words) become hints, the non-precision ones stay.
    assert merge_tags(["bf16", "fp16", "tf32", "triton"], seen) == (["triton"], ["bf16", "fp16", "tf32"])
    assert runtime_tags(_seen(HiddenCast())) == ["bf16"]
    assert merge_tags([], _seen(HiddenCast())) == (["bf16"], [])
    assert runtime_tags(_seen(Autocast())) == ["autocast", "bf16"]


def test_the_tasks_own_dtype_is_no_lowering():
    model = nn.Linear(16, 8).to(torch.bfloat16)
    seen = _seen(model, torch.randn(4, 16, dtype=torch.bfloat16))
    assert seen["product_dtypes"] == ["bfloat16"] and runtime_tags(seen) == []


def test_without_an_observation_the_static_tags_stand():
    assert merge_tags(["fp16", "cuda"], None) == (["cuda", "fp16"], [])


MATMUL_FP32 = "import torch\nimport torch.nn as nn\n\nclass ModelNew(nn.Module):\n    def forward(self, a, b):\n        return torch.relu(a @ b)\n"
MATMUL_MENTIONS = MATMUL_FP32.replace(
    "        return torch.relu", "        if a.dtype in (torch.bfloat16, torch.float16):\n            raise TypeError('fp32 only')\n        return torch.relu")
# Compiled with fullgraph: torch.compile refuses to run under a dispatch mode and, once it has skipped
# the frame, raises on every later call; observed before the timing, it failed there.
MATMUL_FULLGRAPH = (
    "import torch\nimport torch.nn as nn\n\n_f = torch.compile(lambda a, b: torch.relu(a @ b), fullgraph=True)\n\n"
    "class ModelNew(nn.Module):\n    def forward(self, a, b):\n        return _f(a, b)\n")
MATMUL_AUTOCAST = MATMUL_FP32.replace(
    "        return torch.relu(a @ b)", "        with torch.autocast('cpu', dtype=torch.bfloat16):\n            c = a @ b\n        return torch.relu(c.float())")


@pytest.mark.slow
def test_the_evaluator_tags_what_the_child_saw(tmp_path):
    from pathlib import Path

    from pike.evaluate.evaluator import EvalConfig, Evaluator
    from pike.evaluate.timing import TimingConfig
    from pike.task import load_task

    task = load_task(Path(__file__).parent / "tasks" / "matmul.py")
    cfg = EvalConfig(cache_dir=tmp_path, timeout_s=300, timing=TimingConfig(warmup_ms=5, max_time_s=0.1))  # a compile under load
    with Evaluator(cfg) as ev:
        mentions = ev.evaluate(task, MATMUL_MENTIONS)
        autocast = ev.evaluate(task, MATMUL_AUTOCAST)
        compiled = ev.evaluate(task, MATMUL_FULLGRAPH)
    assert mentions.ok, mentions.message
    # The observation comes after the timing and changes nothing it measures.
    assert compiled.ok and compiled.runtime_ms, (compiled.status, compiled.message)
    # The static check read bf16 and fp16 in its source; the forward computed in fp32.
    assert not {"bf16", "fp16"} & set(mentions.tags) and {"bf16", "fp16"} <= set(mentions.precision_hints)
    # Whether or not bf16 stays within the tolerance here, what it computed with is reported.
    assert {"autocast", "bf16"} <= set(autocast.tags), (autocast.status, autocast.tags)
