"""Start-up of a task before its search: the reference job reports its stages and checks the model's
size against free memory before building it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pike.evaluate.progress import Progress, Watcher, describe

HUGE = '''
import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(2**20, 2**20)  # 4 TiB of fp32 weights

    def forward(self, x):
        return self.proj(x)


def get_inputs():
    return [torch.randn(2, 2**20)]


def get_init_inputs():
    return []
'''


@pytest.mark.slow
def test_a_model_that_cannot_fit_is_one_clear_error_before_it_is_built(tmp_path):
    task = tmp_path / "huge.py"
    task.write_text(HUGE)
    p = subprocess.run([sys.executable, "-m", "pike", "eval", str(task), str(task)], capture_output=True, text=True,
                       env={**os.environ, "PIKE_CACHE_DIR": str(tmp_path / "cache")}, timeout=300)
    text = " ".join(p.stderr.split())
    assert p.returncode == 2 and "the model does not fit: weights 4096.00 GB" in text and "free on cpu" in text, p.stderr


def test_progress_is_seen_by_a_watcher(tmp_path):
    seen = []
    with Watcher(tmp_path, seen.append, every_s=0.05) as w:
        progress = Progress(tmp_path)
        progress("input sets", 3, 9)
        for _ in range(100):
            if seen:
                break
            w._stop.wait(0.05)
    assert seen and seen[-1]["stage"] == "input sets" and w.last["done"] == 3
    assert describe(w.last).startswith("input sets 3/9")
