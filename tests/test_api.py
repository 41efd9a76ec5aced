"""The Python API on a live module of a package outside the tool: pike.optimize and pike.load.

The package lives in a temporary directory that only this process's sys.path names (no PYTHONPATH):
the evaluator's children must import it the way the caller does.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import textwrap

import pytest
import torch

import pike
from pike.evaluate.evaluator import EvalConfig, Evaluator
from pike.task import load_task

pytestmark = pytest.mark.slow  # every test here evaluates candidates or runs a search

BLOCKS = """
import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 2 * dim)
        self.down = nn.Linear(2 * dim, dim)

    def forward(self, x):
        return x + self.down(torch.nn.functional.gelu(self.up(self.norm(x))))
"""

NET = """
import torch.nn as nn

from mypkg.blocks import Block


class Net(nn.Module):
    def __init__(self, dim: int = 16, depth: int = 2, classes: int = 5):
        super().__init__()
        self.blocks = nn.Sequential(*[Block(dim) for _ in range(depth)])
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        return self.head(self.blocks(x))
"""

# A solution that ignores the instance it is given and builds a fresh Net (seeded weights only).
FRESH_NET = """
import torch.nn as nn

from mypkg.net import Net


class ModelNew(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = Net()

    def forward(self, *inputs):
        return self.model(*inputs)
"""


@pytest.fixture(scope="module")
def mypkg(tmp_path_factory):
    root = tmp_path_factory.mktemp("userland")
    (root / "mypkg").mkdir()
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "blocks.py").write_text(textwrap.dedent(BLOCKS))
    (root / "mypkg" / "net.py").write_text(textwrap.dedent(NET))
    sys.path.insert(0, str(root))
    from mypkg.net import Net

    yield Net
    sys.path.remove(str(root))
    for name in [n for n in sys.modules if n == "mypkg" or n.startswith("mypkg.")]:
        del sys.modules[name]


def trained(Net):
    """A Net whose weights are not what any seed would give (as after training)."""
    torch.manual_seed(3)
    m = Net()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(1.5).add_(0.3 * torch.randn_like(p))
    return m


@contextlib.contextmanager
def in_workdir(work):
    """The cache in ``work`` and ``work`` as the working directory (not the package's directory:
    children find mypkg through the caller's sys.path)."""
    old_cwd, old_cache = os.getcwd(), os.environ.get("PIKE_CACHE_DIR")
    os.environ["PIKE_CACHE_DIR"] = str(work / "cache")
    os.chdir(work)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        if old_cache is None:
            os.environ.pop("PIKE_CACHE_DIR", None)
        else:
            os.environ["PIKE_CACHE_DIR"] = old_cache


@pytest.fixture(scope="module")
def optimized(mypkg, tmp_path_factory):
    work = tmp_path_factory.mktemp("api")
    with in_workdir(work):
        model = trained(mypkg)
        before = copy.deepcopy(model).eval()
        x = torch.randn(6, 16)
        result = pike.optimize(model, x, out=work / "run", progress=False, trials=3)
    return model, before, x, result, work


def test_optimize_returns_a_drop_in_with_the_trained_weights(optimized, mypkg):
    model, before, x, result, _ = optimized
    assert "PYTHONPATH" not in os.environ or "userland" not in os.environ["PYTHONPATH"]
    assert result.module.model is model  # the caller's instance, not a copy
    with torch.no_grad():
        for inputs in (x, torch.randn(3, 16)):  # another batch size too
            torch.testing.assert_close(result.module(inputs), before(inputs), rtol=1e-2, atol=1e-2)
        # The trained weights matter: a seeded Net gives other outputs.
        assert not torch.allclose(mypkg()(x), before(x), atol=1e-2)
    row = result.summary
    assert row["task"] == "Net" and row["status"] != "error" and row["speedup_eager"] >= 1.0
    assert result.best_file.is_file() and (result.run_dir / "summary.json").is_file()


def test_the_task_shows_the_user_classes_and_checks_the_user_weights(optimized):
    _, _, _, result, work = optimized
    task_file = result.run_dir / "task" / "Net.py"
    text = task_file.read_text()
    # The LLM strategies read the task file: the user's classes are in it, as written.
    assert "# class Block(nn.Module):" in text and "# class Net(nn.Module):" in text
    # A solution that rebuilds the model from its seed instead of using the given instance fails:
    # the reference is the user's instance with its trained weights.
    with Evaluator(EvalConfig(cache_dir=work / "cache", time=False, trials=2)) as ev:
        r = ev.evaluate(load_task(task_file), textwrap.dedent(FRESH_NET))
    assert r.status == "mismatch", (r.status, r.message)


def test_load_applies_the_run_to_a_fresh_instance(optimized, mypkg):
    model, before, x, result, _ = optimized
    fresh = mypkg()
    fresh.load_state_dict(before.state_dict())
    loaded = pike.load(result.run_dir, fresh)
    assert loaded.model is fresh and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), before(x), rtol=1e-2, atol=1e-2)
    with pytest.raises(pike.PikeError, match="made for a mypkg.net.Net"):
        pike.load(result.best_file, torch.nn.Linear(16, 5))


def test_bad_input_is_one_clear_error(mypkg, tmp_path):
    model = mypkg()
    with pytest.raises(pike.PikeError, match="positionally"):
        pike.optimize(model, {"x": torch.randn(2, 16)}, out=tmp_path / "a", progress=False)
    with pytest.raises(pike.PikeError, match="ambiguous"):
        pike.optimize(model, torch.randn(2, 16), out=tmp_path / "b", progress=False, timeout_s=5)
    with pytest.raises(pike.PikeError, match="unknown"):
        pike.optimize(model, torch.randn(2, 16), out=tmp_path / "c", progress=False, no_such_knob=1)

    class Local(torch.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(pike.PikeError, match="inside a function"):
        pike.optimize(Local(), torch.randn(2), out=tmp_path / "d", progress=False)
    Local.__module__, Local.__qualname__ = "__main__", "Local"
    with pytest.raises(pike.PikeError, match="__main__"):
        pike.optimize(Local(), torch.randn(2), out=tmp_path / "e", progress=False)


def test_device_auto_is_the_first_cuda_device_when_there_is_one(monkeypatch):
    from pike import config
    from pike.evaluate.devices import resolve_device

    assert resolve_device("cuda:1") == ("cuda:1", "")
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == ("cuda", "auto: the first of 2 visible CUDA devices")
    assert config.resolve_device(config.load(strategy="offline"))[0].eval.device == "cuda"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert resolve_device("auto") == ("cpu", "auto: no CUDA device visible")


def test_resume_continues_the_run_in_place(optimized):
    model, before, x, result, work = optimized
    with in_workdir(work):
        again = pike.optimize(model, x, out=result.run_dir, resume=True, progress=False)
    # The task was finished: nothing is evaluated again, and the same result comes back.
    assert again.summary["best_ms"] == result.summary["best_ms"] and again.module.model is model
    with pytest.raises(pike.PikeError, match="not a pike.optimize run"):
        pike.optimize(torch.nn.Linear(2, 2), x, out=result.run_dir, resume=True, progress=False)
