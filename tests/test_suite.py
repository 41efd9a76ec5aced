"""The built-in task suite and its registry (CPU, small sizes)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from pike.suites import (
    BUILTIN_DIR,
    TIERS,
    build,
    builtin_names,
    builtin_tasks,
    import_task,
    resolve,
    summarize,
    summarize_target,
)
from pike.suites.cli import suite_app
from pike.task import TaskError, load_task

NAMES = builtin_names()
REQUIRED_SIZES = ("small", "small_alt", "alt")
GPU_MEMORY_LIMIT = 8e9  # parameters + inputs at the GPU sizes, well under an H100's memory


def tolerance(dtype: torch.dtype) -> float:
    """The evaluator's default atol = rtol per output dtype."""
    return 3e-2 if dtype in (torch.bfloat16, torch.float16) else 1e-2


def flat(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    assert isinstance(out, (tuple, list)), f"unexpected output type {type(out).__name__}"
    return [t for item in out for t in flat(item)]


def accepted(candidate: torch.Tensor, reference: torch.Tensor) -> bool:
    """Whether the evaluator's tolerance would accept candidate for reference."""
    tol = tolerance(reference.dtype)
    return torch.allclose(candidate.float(), reference.float(), atol=tol, rtol=tol)


def run(module, init_seed: int = 0, input_seed: int = 1):
    torch.manual_seed(init_seed)
    model = module.Model(*module.get_init_inputs()).eval()
    torch.manual_seed(input_seed)
    inputs = list(module.get_inputs())
    with torch.inference_mode():
        out = flat(model(*inputs))
    return model, inputs, out


def small_task(name: str, size: str = "small"):
    task = load_task(BUILTIN_DIR / f"{name}.py", size=size)
    assert task.size == size, f"{name} has no size set {size!r}"
    return task


# --- suite-level -----------------------------------------------------------------------------------


def test_suite_has_both_tiers_and_enough_tasks():
    tasks = builtin_tasks()
    assert len(tasks) >= 24
    tiers = {summarize(t).tier for t in tasks}
    assert tiers == set(TIERS)
    assert [t.name for t in tasks] == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_task_metadata(name):
    task = load_task(BUILTIN_DIR / f"{name}.py")
    assert name == name.lower() and not name.startswith("_")
    for size in REQUIRED_SIZES:
        assert size in task.sizes, f"{name}: no size set {size!r}"
    title = task.doc.strip().splitlines()[0] if task.doc.strip() else ""
    assert 20 <= len(title) <= 140, f"{name}: first docstring line should say what it models: {title!r}"
    assert summarize(task).tier in TIERS


def test_meta_summaries_at_gpu_sizes():
    """Every task builds on the meta device at its written and alt sizes, within the memory budget."""
    for size in (None, "alt"):
        for task in builtin_tasks(size):
            row = summarize(task)
            assert row.error is None, f"{task.label}: {row.error}"
            assert row.built == "meta", task.label
            assert row.params and row.params > 0 and row.inputs, task.label
            _, model, inputs = build(task, device="meta")
            tensors = list(model.parameters()) + list(model.buffers()) + [x for x in inputs if isinstance(x, torch.Tensor)]
            total = sum(t.numel() * t.element_size() for t in tensors)
            assert total < GPU_MEMORY_LIMIT, f"{task.label}: {total / 1e9:.1f} GB of parameters and inputs"


# --- per task, at the small (CPU) size --------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_task_behaviour(name):
    module = import_task(small_task(name))
    model, inputs, out = run(module)
    before = [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]
    with torch.inference_mode():
        again = flat(model(*inputs))

    # No hidden state: the same call gives the same result; inputs are untouched and not aliased.
    assert len(again) == len(out)
    for a, b in zip(out, again):
        assert torch.equal(a, b), f"{name}: two calls on the same inputs differ"
    for x, x0 in zip(inputs, before):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, x0), f"{name}: forward modified an input in place"
            for o in out:
                assert o.untyped_storage().data_ptr() != x.untyped_storage().data_ptr(), f"{name}: an output aliases an input"

    for i, o in enumerate(out):
        assert o.is_floating_point(), f"{name}: output {i} is {o.dtype}"
        assert torch.isfinite(o).all(), f"{name}: output {i} has NaN/Inf"
        centred = o.float() - o.float().mean()
        assert centred.abs().max() > 0.01, f"{name}: output {i} is near-constant"
        # The tolerance must reject all-zeros and the output's mean broadcast to its shape.
        assert not accepted(torch.zeros_like(o), o), f"{name}: tolerance accepts all-zeros for output {i}"
        assert not accepted(o.float().mean().expand_as(o), o), f"{name}: tolerance accepts the mean for output {i}"

    # The main output depends on the inputs and on the weights, beyond the tolerance.
    _, _, other_inputs = run(module, init_seed=0, input_seed=2)
    assert not accepted(other_inputs[0], out[0]), f"{name}: output does not depend on the inputs"
    _, _, other_init = run(module, init_seed=7, input_seed=1)
    assert [o.shape for o in other_init] == [o.shape for o in out]
    assert not accepted(other_init[0], out[0]), f"{name}: tolerance accepts another init seed's output"


@pytest.mark.parametrize("name", NAMES)
def test_small_alt_size(name):
    small = small_task(name)
    alt = small_task(name, "small_alt")
    assert small.alt_size == "small_alt"
    torch.manual_seed(1)
    small_shapes = [tuple(x.shape) for x in import_task(small).get_inputs() if isinstance(x, torch.Tensor)]
    _, inputs, out = run(import_task(alt))
    alt_shapes = [tuple(x.shape) for x in inputs if isinstance(x, torch.Tensor)]
    assert alt_shapes != small_shapes, f"{name}: small_alt has the same input shapes as small"
    for o in out:
        assert torch.isfinite(o).all()


# --- registry ---------------------------------------------------------------------------------------


def test_resolve_forms(tmp_path, monkeypatch):
    name = NAMES[0]
    assert resolve("builtin") == BUILTIN_DIR
    assert resolve(name) == BUILTIN_DIR / f"{name}.py"
    assert resolve(f"{name}.py") == BUILTIN_DIR / f"{name}.py"
    task_file = tmp_path / "mine.py"
    task_file.write_text((BUILTIN_DIR / f"{name}.py").read_text())
    assert resolve(task_file) == task_file.resolve()
    assert resolve(str(tmp_path)) == tmp_path.resolve()
    # An existing local path wins over the built-in names.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "builtin").mkdir()
    assert resolve("builtin") == (tmp_path / "builtin").resolve()


def test_resolve_unknown_target_suggests_names():
    with pytest.raises(TaskError, match="did you mean mlp_deep_narrow"):
        resolve("mlp_deep_narow")
    with pytest.raises(TaskError, match="not a task file"):
        resolve("no/such/dir")


BROKEN = '''"""Raises when built."""
import torch
def get_inputs():
    return [torch.randn(2)]
def get_init_inputs():
    return []
class Model(torch.nn.Module):
    def __init__(self):
        raise RuntimeError("boom")
'''

META_HOSTILE = '''"""Needs real values at init."""
import torch
N = 64
SIZES = {"small": {"N": 4}}
class Model(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(n))
        self.scale = float(self.w.abs().max().item())
    def forward(self, x):
        return x * self.w / self.scale
def get_inputs():
    return [torch.randn(N)]
def get_init_inputs():
    return [N]
'''


def test_summaries_report_errors_per_task(tmp_path):
    (tmp_path / "broken.py").write_text(BROKEN)
    (tmp_path / "hostile.py").write_text(META_HOSTILE)
    (tmp_path / "syntax.py").write_text("def (:\n")
    (tmp_path / "ok.py").write_text((BUILTIN_DIR / "mlp_shallow_wide.py").read_text())
    rows = {r.name: r for r in summarize_target(str(tmp_path))}
    assert "boom" in rows["broken"].error
    assert "syntax" in rows["syntax"].error
    assert rows["hostile"].error is None and rows["hostile"].built == "small" and rows["hostile"].params == 4
    assert rows["ok"].error is None and rows["ok"].built == "meta" and rows["ok"].tier == "classic"
    assert rows["ok"].inputs == ["f32[4096, 1024]"]


def test_cli_list_and_show(tmp_path):
    runner = CliRunner()
    result = runner.invoke(suite_app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == NAMES and all(r["error"] is None for r in rows)

    (tmp_path / "one.py").write_text((BUILTIN_DIR / f"{NAMES[0]}.py").read_text())
    result = runner.invoke(suite_app, ["list", "--dir", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "one" in result.output

    result = runner.invoke(suite_app, ["show", NAMES[0], "--size", "small"])
    assert result.exit_code == 0, result.output
    assert "small (applied)" in result.output and "class Model" in result.output

    result = runner.invoke(suite_app, ["show", "no_such_task"])
    assert result.exit_code == 2
