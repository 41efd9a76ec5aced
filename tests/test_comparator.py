"""The comparator process and the memory hand-over (``ipc``): on the CPU through shared memory, the
same code path as CUDA IPC on a GPU except for the handle itself."""

from __future__ import annotations

import json
import os
import shutil
import time
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pike.evaluate import ipc
from pike.evaluate.checksums import file_sha256
from pike.evaluate.comparator import Comparator, ComparatorError
from pike.evaluate.evaluator import EvalConfig, Evaluator
from pike.evaluate.timing import TimingConfig
from pike.task import load_task

pytestmark = pytest.mark.slow  # every test here evaluates candidates or runs a search

HERE = Path(__file__).parent
FAST = TimingConfig(warmup_ms=5, max_time_s=0.1)

PRODUCER = """
import json, sys, torch
from pike.evaluate import ipc
held = []
base = torch.arange(24, dtype=torch.float32)
out = (base[4:16].view(3, 4).t(), {"n": 7, "x": torch.ones(2, dtype=torch.bfloat16)}, [None, 2.5, torch.empty(0, 3)],
       torch.tensor([True, False]))
print(json.dumps(ipc.share(out, held)), flush=True)
sys.stdin.readline()  # the tensors stay alive until the reader is done
"""


def test_shared_outputs_are_read_by_another_process():
    p = subprocess.Popen([sys.executable, "-c", PRODUCER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        spec = json.loads(p.stdout.readline())
        got = ipc.open_shared(spec)
    finally:
        p.stdin.write("\n")
        p.stdin.close()
        p.wait(timeout=30)
    base = torch.arange(24, dtype=torch.float32)
    assert torch.equal(got[0], base[4:16].view(3, 4).t()) and got[0].stride() == (1, 4)
    assert got[1]["n"] == 7 and got[1]["x"].dtype == torch.bfloat16 and torch.equal(got[1]["x"], torch.ones(2, dtype=torch.bfloat16))
    assert got[2][0] is None and got[2][1] == 2.5 and got[2][2].shape == (0, 3)
    assert torch.equal(got[3], torch.tensor([True, False]))


def test_descriptions_are_checked_before_use():
    held = []
    spec = ipc.share(torch.arange(6.0), held)
    too_big = json.loads(json.dumps(spec))
    too_big["tensor"]["shape"] = [1000]
    with pytest.raises(RuntimeError):  # a view past its storage is refused, not read
        ipc.open_shared(too_big)
    for bad in ({"tensor": {**spec["tensor"], "dtype": "Tensor"}}, {"object": 1}, {"value": [1]}, [1, 2]):
        with pytest.raises((ValueError, KeyError)):
            ipc.open_shared(bad)
    with pytest.raises(ipc.NotShareable):
        ipc.share([torch.ones(2), object()], held)


def test_comparator_process_compares_and_restarts(tmp_path):
    ref = tmp_path / "ref.pt"
    torch.save((torch.arange(8.0),), ref)
    held = []
    item = {"ref": str(ref), "ref_sha": file_sha256(ref), "gold": None, "strict": False, "rel_norm": None}
    c = Comparator({**os.environ, "CUDA_VISIBLE_DEVICES": ""}, log=tmp_path / "cmp.log")
    try:
        good = ipc.share((torch.arange(8.0) + 1e-4,), held)
        bad = ipc.share((torch.zeros(8),), held)
        diffs = c.compare([{**item, "out": good}, {**item, "out": bad}, {**item, "out": good}])
        assert [d["ok"] for d in diffs] == [True, False]  # stops at the first failure
        assert "values outside" in diffs[1]["reason"]
        c.proc.kill()
        c.proc.wait()
        assert c.compare([{**item, "out": good}])[0]["ok"]  # started again
        with pytest.raises(ComparatorError):  # an error is not a verdict
            c.compare([{**item, "ref": str(tmp_path / "missing.pt"), "out": good}])
        assert c.proc is None and c.failures == 1
        with pytest.raises(ComparatorError, match="checksum"):  # nor is a reference file changed on disk
            c.compare([{**item, "ref_sha": "0" * 64, "out": good}])
    finally:
        c.close()


@pytest.fixture(scope="module")
def evs(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    with Evaluator(EvalConfig(cache_dir=cache, timeout_s=30, timing=FAST, comparator="on")) as on, \
            Evaluator(EvalConfig(cache_dir=cache, timeout_s=30, timing=FAST, comparator="off")) as off:
        yield on, off


CASES = [("ln_mlp", "ln_fused", "ok"), ("ln_mlp", "ln_static_output", "ok"), ("ln_mlp", "ln_drops_affine", "mismatch"), ("ln_mlp", "ln_pointer_cache", "mismatch"),
         ("ln_mlp", "ln_count_cache", "mismatch"), ("ln_mlp", "ln_wrong_shape", "mismatch"), ("ln_mlp", "ln_nan", "mismatch"),
         ("bf16_cancel", "bf16_cancel_fp32", "ok")]


@pytest.mark.parametrize("task_name,cand,status", CASES)
def test_same_verdicts_through_the_comparator(evs, task_name, cand, status):
    on, off = evs
    task = load_task(HERE / "tasks" / f"{task_name}.py", size="small")
    src = (HERE / "candidates" / f"{cand}.py").read_text()
    r_on, r_off = on.evaluate(task, src), off.evaluate(task, src)
    assert (r_on.status, r_off.status) == (status, status), (r_on.message, r_off.message)
    assert on.comparator_fallbacks == []
    if status == "ok":
        assert r_on.trials == r_off.trials and r_on.timing is not None
        # bf16: passed by the same rule (the numbers differ: each evaluation draws its own input sets)
        assert r_on.message.split(" (")[0] == r_off.message.split(" (")[0]


def test_outputs_go_through_files_when_the_comparator_fails(evs, monkeypatch):
    on, _ = evs
    task = load_task(HERE / "tasks" / "ln_mlp.py", size="small")

    def broken(self, items, timeout_s=300.0):
        raise ComparatorError("simulated")

    monkeypatch.setattr(Comparator, "compare", broken)
    on.comparator().failures = 0
    before = len(on.comparator_fallbacks)
    ok = on.evaluate(task, (HERE / "candidates" / "ln_fused.py").read_text())
    wrong = on.evaluate(task, (HERE / "candidates" / "ln_count_cache.py").read_text())
    assert ok.status == "ok" and ok.timing is not None
    assert wrong.status == "mismatch" and wrong.stage == "timing", wrong.message  # a spot or the refill check
    assert any("simulated" in f for f in on.comparator_fallbacks[before:])
    on.comparator_fallbacks.clear()
    on._cmp.failures = 0


def test_a_failing_comparator_is_given_up(evs, monkeypatch):
    on, _ = evs
    task = load_task(HERE / "tasks" / "ln_mlp.py", size="small")
    calls = []

    def broken(self, items, timeout_s=300.0):
        calls.append(1)
        self.failures += 1
        raise ComparatorError("simulated")

    monkeypatch.setattr(Comparator, "compare", broken)
    on.comparator().failures = 0
    src = (HERE / "candidates" / "ln_fused.py").read_text()
    results = [on.evaluate(task, src) for _ in range(Evaluator.COMPARATOR_MAX_FAILURES + 2)]
    assert [r.status for r in results] == ["ok"] * len(results)
    assert len(calls) == Evaluator.COMPARATOR_MAX_FAILURES  # then no more asks: the outputs go through files
    assert not on.uses_comparator
    on._cmp.failures = 0
    on.comparator_fallbacks.clear()


@pytest.mark.parametrize("mode", ["on", "off"])
def test_checks_must_cover_the_plan(evs, mode):
    ev = evs[0] if mode == "on" else evs[1]
    task = load_task(HERE / "tasks" / "ln_mlp.py", size="small")
    r = ev.evaluate(task, (HERE / "candidates" / "ln_drops_checks.py").read_text(), trusted=True)
    assert r.status == "mismatch" and "not the planned" in r.message, r.message


PATCHES_TIMING = """
import torch.nn as nn
import pike.evaluate.timing as t
t.time_forward = lambda *a, **k: None


class ModelNew(nn.Module):
    def forward(self, x):
        return x
"""


def test_patching_the_harness_is_rejected(evs):
    from pike.evaluate.static import check_source

    assert any("PIKE's own evaluator" in v for v in check_source(PATCHES_TIMING).violations)
    task = load_task(HERE / "tasks" / "ln_mlp.py", size="small")
    r = evs[1].evaluate(task, PATCHES_TIMING, trusted=True)  # past the static check: caught at run time
    assert r.status == "rejected" and "pike.evaluate.timing.time_forward" in r.message, r.message



def test_auto_uses_the_comparator_on_a_gpu_only(tmp_path):
    # Evaluator only reads the device's type here: no GPU is touched.
    for device, setting, expected in [("cpu", "auto", False), ("cuda", "auto", True), ("cuda", "off", False), ("cpu", "on", True)]:
        with Evaluator(EvalConfig(cache_dir=tmp_path, device=device, comparator=setting)) as ev:
            assert ev.uses_comparator is expected
    with pytest.raises(ValueError, match="on, off or auto"):
        Evaluator(EvalConfig(cache_dir=tmp_path, comparator="yes"))


def test_a_childs_ipc_files_are_removed(tmp_path):
    from pike.evaluate.child import remove_ipc_files

    mine = ["cuda.shm.0.3d7.1", "cuda.shm.1000.3d7.12", "torch_983_4145540512_0", "torch_983_1_12"]  # pid 983 = 0x3d7
    others = ["cuda.shm.0.3d70.1", "cuda.shm.0.3d.1", "cuda.shm.0.3d7", "other.3d7.1", "torch_9830_1_0", "torch_98_1_0", "torch_983_x_0"]
    for n in mine + others:
        (tmp_path / n).write_text("")
    assert sorted(remove_ipc_files(983, str(tmp_path))) == sorted(mine)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)


def test_a_sandboxed_childs_cuda_ipc_files_are_linked_only_while_opened(tmp_path):
    """CUDA IPC across the sandbox needs the child's driver and reference-count files in this process's
    /dev/shm (the GPU machine's probe): regular files of those names are hard-linked there while a
    handle is opened and removed after; a link the child planted and any other name are not."""
    from pike.evaluate.ipc import _linked_shm

    import tempfile

    tag = f"{os.getpid()}.{time.monotonic_ns()}"
    shm = Path(tempfile.mkdtemp(prefix="pike-test-shm-", dir="/dev/shm"))  # hard links: same file system
    (shm / f"cuda.shm.0.{tag}").write_bytes(b"driver")
    (shm / "torch_99_1").symlink_to("/etc/passwd")
    (shm / "unrelated").write_bytes(b"x")
    with _linked_shm(str(shm)):
        assert os.path.samefile(f"/dev/shm/cuda.shm.0.{tag}", shm / f"cuda.shm.0.{tag}")
        assert not os.path.lexists("/dev/shm/torch_99_1") and not os.path.lexists("/dev/shm/unrelated")
    assert not os.path.lexists(f"/dev/shm/cuda.shm.0.{tag}")
    shutil.rmtree(shm)
