"""A second shape for every task: where a task has no alternate size set, the reference job varies the
batch dimension of its inputs (when the model accepts it), so a solution hard-wired to the task's
shapes is rejected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pike.evaluate.batch_alt import at_batch, batch_of, follows, other_batch

HERE = Path(__file__).parent
TASK = HERE / "tasks" / "token_mixer.py"  # no SIZES


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("pike-cache")


def reference_metas(cache: Path) -> list[dict]:
    """The meta of every reference entry in the cache (an entry holds its signed manifest)."""
    return [json.loads(m.read_text()) for m in (cache / "references").rglob("meta.json") if (m.parent / "manifest.json").exists()]


def pike_eval(cache: Path, task: Path, solution: Path) -> dict:
    p = subprocess.run([sys.executable, "-m", "pike", "eval", str(task), str(solution), "--json", "--no-time"],
                       capture_output=True, text=True, env={**os.environ, "PIKE_CACHE_DIR": str(cache)}, timeout=300)
    assert p.stdout.strip(), p.stderr[-3000:]
    return json.loads(p.stdout)


@pytest.mark.slow
def test_the_task_itself_passes_at_another_batch_size(cache):
    r = pike_eval(cache, TASK, TASK)
    assert r["status"] == "ok" and "also checked at batch 3" in r["message"], r["message"]
    meta = reference_metas(cache)
    assert meta[0]["batch_alt"]["batch"] == 6 and meta[0]["batch_alt"]["input_shapes"] == [[3, 8, 32]]


@pytest.mark.slow
def test_a_shape_hard_coded_solution_is_rejected(cache):
    r = pike_eval(cache, TASK, HERE / "candidates" / "token_mixer_hardcoded.py")
    assert r["status"] != "ok"
    assert "batch 3" in r["stage"], (r["stage"], r["message"])


@pytest.mark.slow
def test_a_model_tied_to_its_batch_has_no_second_shape_and_still_passes(cache, tmp_path):
    task = tmp_path / "fixed_batch.py"
    task.write_text(TASK.read_text().replace("b, t, d = x.shape", "b, t, d = 6, x.shape[1], x.shape[2]"))
    r = pike_eval(cache, task, task)
    assert r["status"] == "ok" and "also checked" not in r["message"], r["message"]
    metas = reference_metas(cache)
    why = [m["batch_alt"]["why"] for m in metas if "why" in (m.get("batch_alt") or {})]
    assert why and "does not run at batch 3" in why[0]


def test_batch_detection_and_variation():
    x, mask = torch.randn(6, 4), torch.ones(6, 4, dtype=torch.bool)
    assert batch_of([x, mask, 3]) == (6, "")
    assert batch_of([x, torch.randn(4, 4)])[0] is None  # no common first dimension
    assert batch_of([torch.tensor(1.0)])[0] is None
    assert [other_batch(b) for b in (1, 2, 3, 4, 8)] == [2, 3, 4, 2, 4]
    more = at_batch([x[:2], 7], 3, lambda: [x[2:], 7])  # rows of another draw where there are too few
    assert torch.equal(more[0], x[:3]) and more[1] == 7
    assert follows((torch.zeros(6, 2), torch.zeros(5)), (torch.zeros(3, 2), torch.zeros(5)), 6, 3) == ""
    assert "became" in follows(torch.zeros(6, 2), torch.zeros(6, 2), 6, 3)
    assert follows(torch.zeros(5), torch.zeros(5), 6, 3) == "no output has the batch dimension"
