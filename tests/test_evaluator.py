"""Evaluator internals: behavioural defences behind the static check, isolation, tasks, tolerances."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import torch

from pike.evaluate.compare import Tolerance, compare, weak_tolerance
from pike.evaluate.build import Builder
from pike.evaluate.evaluator import EvalConfig, Evaluator
from pike.evaluate.timing import TimingConfig
from pike.evaluate.weights import compatible, rerandomised_state_dict
from pike.task import TaskError, apply_overrides, discover, load_task

pytestmark = pytest.mark.slow  # every test here evaluates candidates or runs a search

HERE = Path(__file__).parent
TASKS = HERE / "tasks"
CANDS = HERE / "candidates"
FAST = TimingConfig(warmup_ms=5, max_time_s=0.1)


@pytest.fixture(scope="module")
def ev(tmp_path_factory):
    cfg = EvalConfig(cache_dir=tmp_path_factory.mktemp("cache"), timeout_s=20, timing=FAST)
    with Evaluator(cfg) as e:
        yield e


@pytest.fixture(scope="module")
def ln_task():
    return load_task(TASKS / "ln_mlp.py", size="small")


def cand(name: str) -> str:
    return (CANDS / name).read_text()


# ---------------------------------------------------------------- behaviour behind the static check


def test_patched_allclose_caught_at_run_time_too(ev, ln_task):
    # trusted=True skips the static check: the run-time integrity guard must still catch the patch.
    r = ev.evaluate(ln_task, cand("ln_patch_allclose.py"), trusted=True)
    assert r.status == "rejected" and "torch.allclose" in r.message


def test_patched_timer_caught_at_run_time_too(ev, ln_task):
    r = ev.evaluate(ln_task, cand("ln_patch_timer.py"), trusted=True)
    assert r.status == "rejected" and "time.perf_counter" in r.message


def test_background_thread_gives_wrong_output(ev, ln_task):
    r = ev.evaluate(ln_task, cand("ln_thread.py"), trusted=True)
    assert r.status != "ok"


def test_outputs_cannot_run_code_in_the_orchestrator(ev, ln_task, tmp_path):
    """The child's saved outputs are read by the orchestrator: a pickled object there must not run.
    (trusted=True skips the static check, as an obfuscated call would.)"""
    marker = tmp_path / "ran-in-orchestrator"
    evil = ln_task.source + textwrap.dedent(f"""

        import os as _os


        class _Payload:
            def __reduce__(self):
                return (_os.system, ("touch {marker} && test $PPID != {os.getpid()} || touch {marker}.orchestrator",))


        class ModelNew(Model):
            def forward(self, *args):
                return super().forward(*args), _Payload()
        """)
    r = ev.evaluate(ln_task, evil, trusted=True)
    assert r.status != "ok"
    assert not marker.exists() and not Path(f"{marker}.orchestrator").exists(), r.message


def test_named_tuple_outputs_are_compared_as_tuples(ev, tmp_path):
    # torch.return_types and named tuples are saved as plain tuples, which the orchestrator can read safely.
    path = tmp_path / "max_task.py"
    path.write_text(textwrap.dedent("""
        import torch
        import torch.nn as nn


        class Model(nn.Module):
            def forward(self, x):
                return torch.max(x * 2, dim=-1)


        def get_inputs():
            return [torch.randn(8, 16)]


        def get_init_inputs():
            return []
        """))
    task = load_task(path)
    assert ev.evaluate(task, task.source, trusted=True).status == "ok"
    wrong = task.source + "\n\nclass ModelNew(Model):\n    def forward(self, x):\n        return torch.min(x * 2, dim=-1)\n"
    assert ev.evaluate(task, wrong, trusted=True).status == "mismatch"


SECRET_READER = """
import os, re
import torch
import torch.nn as nn

def _secrets():
    found = [k for k in os.environ if re.search("KEY|TOKEN|SECRET", k)]
    for pid in ("self", str(os.getppid())):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                found += [kv.split(b"=")[0].decode() for kv in f.read().split(b"\\0") if re.search(b"KEY|TOKEN|SECRET", kv.split(b"=")[0])]
        except OSError:
            pass
    return found

class ModelNew(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        found = _secrets()
        if found:
            raise RuntimeError("found " + ",".join(found))
        return self.fc2(torch.relu(self.norm(self.fc1(x))))
"""


def test_no_secrets_in_process_environment_blocks(tmp_path, ln_task, monkeypatch):
    # The fork server is exec'd with a scrubbed environment, so even the kernel's copy of the initial
    # environment (/proc/<pid>/environ, which os.environ edits do not change) holds no secrets.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("SOME_TOKEN", "t")
    with Evaluator(EvalConfig(cache_dir=tmp_path, timing=FAST)) as e:
        r = e.evaluate(ln_task, SECRET_READER, trusted=True)
    assert r.status == "ok", (r.message, r.feedback)


def test_spawn_start_method(tmp_path, ln_task):
    with Evaluator(EvalConfig(cache_dir=tmp_path, start_method="spawn", timing=FAST)) as e:
        assert e.evaluate(ln_task, cand("ln_fused.py")).status == "ok"
        assert e.evaluate(ln_task, cand("ln_abort.py")).status == "runtime_error"


def test_timeout_kills_process_group_and_pool_recovers(ev, ln_task):
    spawner = textwrap.dedent(
        """
        import os, time
        import torch.nn as nn
        class ModelNew(nn.Module):
            def __init__(self, dim, hidden):
                super().__init__()
            def forward(self, x):
                if os.fork() == 0:
                    time.sleep(1000)
                time.sleep(1000)
        """
    )
    r = ev.evaluate(ln_task, spawner, trusted=True, timeout_s=3)
    assert r.status == "timeout"
    assert ev.evaluate(ln_task, cand("ln_fused.py")).status == "ok"


def test_pointer_cache_that_activates_only_while_timed(tmp_path, ln_task):
    # Computes honestly until an input pointer has come back more often than the correctness checks
    # can make it (at most 9 calls; freed inputs' addresses are often reused), which only the timing
    # loop's reused buffers do, then serves the cached output: spot checks of timed runs agree (the
    # buffers' values did not change), and the in-place refill after timing catches it.
    src = cand("ln_fused.py").replace(
        "    def forward(self, x):\n",
        "    def forward(self, x):\n"
        "        hits = SEEN.setdefault(x.data_ptr(), [0, None])\n"
        "        hits[0] += 1\n"
        "        if hits[0] > 12 and hits[1] is not None:\n"
        "            return hits[1]\n"
        "        hits[1] = self._forward(x)\n"
        "        return hits[1]\n\n"
        "    def _forward(self, x):\n",
    ).replace("class ModelNew", "SEEN = {}\n\n\nclass ModelNew")
    many_runs = TimingConfig(warmup_ms=5, min_runs=40, max_time_s=0.2)
    with Evaluator(EvalConfig(cache_dir=tmp_path, timing=many_runs)) as e:
        r = e.evaluate(ln_task, src)
    assert r.status == "mismatch", r.message
    assert r.stage == "timing"


def test_not_timed_when_incorrect(ev, ln_task):
    r = ev.evaluate(ln_task, cand("ln_nan.py"))
    assert r.status == "mismatch" and r.timing is None
    assert "timing_s" not in r.durations_s


def test_seeded_only_allowed_by_config(tmp_path, ln_task):
    with Evaluator(EvalConfig(cache_dir=tmp_path, require_state_dict=False, timing=FAST)) as e:
        r = e.evaluate(ln_task, cand("ln_drops_norm_module.py"))
    # Without the re-randomised check the dropped affine cannot be seen: this is why user-facing runs
    # require state-dict compatibility by default.
    assert r.status == "ok" and r.state_dict_compatible is False


def test_alternate_size_catches_hard_wired_shapes(ev, ln_task):
    src = cand("ln_fused.py").replace("return torch.addmm(self.fc2.bias, h, self.fc2.weight.t())", "return torch.addmm(self.fc2.bias, h, self.fc2.weight.t()).view(16, -1)")
    r = ev.evaluate(ln_task, src)
    assert r.status == "mismatch" and "at size small_alt" in r.message, r.message


# ---------------------------------------------------------------- tasks


BROKEN = {
    "syntax": ("def get_inputs(:\n", "syntax error"),
    "missing": ("import torch\nclass Model(torch.nn.Module):\n    pass\ndef get_inputs():\n    return []\n", "missing get_init_inputs"),
    "raises": (
        "import torch\nclass Model(torch.nn.Module):\n    def forward(self, x):\n        return x\n"
        "def get_inputs():\n    raise ValueError('boom')\ndef get_init_inputs():\n    return []\n",
        "get_inputs() raised ValueError: boom",
    ),
    "wrongtype": (
        "import torch\nclass Model(torch.nn.Module):\n    def forward(self, x):\n        return x\n"
        "def get_inputs():\n    return torch.randn(3)\ndef get_init_inputs():\n    return []\n",
        "get_inputs() must return a list or tuple",
    ),
    "notmodule": ("class Model:\n    pass\ndef get_inputs():\n    return []\ndef get_init_inputs():\n    return []\n", "subclass of torch.nn.Module"),
}


def test_malformed_tasks_named_with_problem_and_directory_goes_on(tmp_path, ev):
    for name, (src, _) in BROKEN.items():
        (tmp_path / f"{name}.py").write_text(src)
    (tmp_path / "good.py").write_text((TASKS / "ln_mlp.py").read_text())
    found = discover(tmp_path, size="small")
    assert len(found) == len(BROKEN) + 1
    by_name = {}
    for item in found:
        if isinstance(item, TaskError):
            by_name[Path(item.path).stem] = str(item)
            continue
        try:
            ev.reference(item)
            by_name[item.name] = "ok"
        except TaskError as e:
            by_name[item.name] = str(e)
    assert by_name["good"] == "ok"
    for name, (_, expected) in BROKEN.items():
        assert expected in by_name[name], (name, by_name[name])
        assert f"{name}.py" in by_name[name]


def test_sizes_rewrite_constants_and_keep_lines():
    src = "a = 4  # comment\nb = a * 2\nSIZES = {'small': {'a': 1}}\n"
    out = apply_overrides(src, {"a": 1})
    assert out.splitlines()[0] == "a = 1  # comment" and out.count("\n") == src.count("\n")
    with pytest.raises(TaskError, match="does not assign"):
        from pike.task import parse_task_source

        parse_task_source("SIZES = {'small': {'zz': 1}}\nclass Model: pass\ndef get_inputs(): pass\ndef get_init_inputs(): pass\n", "t.py")


def test_stateful_task_flagged(tmp_path, ev):
    (tmp_path / "stateful.py").write_text(
        "import torch\nclass Model(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.calls = 0\n"
        "    def forward(self, x):\n        self.calls += 1\n        return x * self.calls\n"
        "def get_inputs():\n    return [torch.randn(8)]\ndef get_init_inputs():\n    return []\n"
    )
    ref = ev.reference(load_task(tmp_path / "stateful.py"))
    assert "stateful" in ref.flags


# ---------------------------------------------------------------- comparison and weights


def test_compare_rules():
    tol = Tolerance()
    r = torch.randn(4, 5)
    assert compare(r, r + 1e-4, tol).ok
    assert not compare(r, r[:1], tol).ok
    assert not compare(r, r.double(), tol).ok
    assert not compare((r, r), r, tol).ok
    n = r.clone()
    n[0, 0] = float("nan")
    assert not compare(r, n, tol).ok
    assert compare(n, n.clone(), tol).ok
    assert not compare(torch.tensor([1, 2]), torch.tensor([1, 3]), tol).ok
    assert not compare(r, r * 1.05 + 0.05, tol).ok


def test_weak_tolerance_detected_for_tiny_outputs():
    ref = torch.randn(100) * 1e-3
    weak = weak_tolerance(ref, torch.randn(100) * 1e-3, Tolerance())
    assert any("zeros" in w for w in weak)
    strong = weak_tolerance(torch.randn(100), torch.randn(100), Tolerance())
    assert strong == []
    # With the norm check added, zeros no longer pass.
    assert not compare(ref, torch.zeros(100), Tolerance(rel_norm=0.02)).ok


def _cancelling_bf16(n=4096, seed=0):
    """(eager-style bf16 result, fp32 truth) of a near-cancelling sum of large terms."""
    g = torch.Generator().manual_seed(seed)
    big, b = torch.randn(n, generator=g) * 32, torch.randn(n, generator=g)
    eager = ((big.bfloat16() + b.bfloat16()) - big.bfloat16()).bfloat16()
    gold = (big + b) - big
    return eager, gold


def test_bf16_leaf_within_eager_error_against_fp32_passes():
    tol = Tolerance()
    eager, gold = _cancelling_bf16()
    precise = gold.bfloat16()  # fp32 intermediates, rounded once
    assert not compare(eager, precise, tol).ok  # the elementwise tolerance alone rejects it
    d = compare(eager, precise, tol, gold)
    assert d.ok and "eager's own error" in d.note
    assert compare(eager, precise, tol, lambda: gold).ok  # a loader: read only when needed
    # Impostors and wrong answers stay wrong: zeros, a small bias everywhere, a few grossly wrong values.
    assert not compare(eager, torch.zeros_like(eager), tol, gold).ok
    assert not compare(eager, (gold + 0.1).bfloat16(), tol, gold).ok
    spikes = precise.clone()
    spikes[::512] += 4
    assert not compare(eager, spikes, tol, gold).ok
    # Not in --strict mode, not with a golden of another shape.
    assert not compare(eager, precise, Tolerance(strict=True), gold).ok
    assert not compare(eager, precise, tol, gold[:-1]).ok
    # An fp32 leaf of such a task (a state computed from bf16 activations) is judged the same way.
    eager32 = eager.float()
    assert not compare(eager32, gold, tol).ok and compare(eager32, gold, tol, gold).ok
    assert not compare(eager32, gold + 0.1, tol, gold).ok


def test_bf16_task_candidate_more_precise_than_eager_passes(ev):
    task = load_task(TASKS / "bf16_cancel.py")
    ref = ev.reference(task)
    assert ref.meta["golden"] == "ok" and ref.get_golden("golden", 0) is not None and ref.get_golden("golden_random", 0) is not None
    r = ev.evaluate(task, cand("bf16_cancel_fp32.py"))
    assert r.status == "ok" and "within 2x eager's own error" in r.message, (r.status, r.message)
    assert r.trials >= 5  # seeded and re-randomised weights, both against their fp32 outputs
    biased = task.source + "\n\nclass ModelNew(Model):\n    def forward(self, x, b):\n        return super().forward(x, b) + 0.1\n"
    r = ev.evaluate(task, biased)
    assert r.status == "mismatch", r.message
    # A full-precision task has no fp32 twin.
    assert ev.reference(load_task(TASKS / "ln_mlp.py", size="small")).meta["golden"] is None


def test_rerandomised_weights_move_constants_and_keep_structure():
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.BatchNorm1d(4))
    m.register_buffer("mask", torch.tril(torch.ones(4, 4)))
    sd = rerandomised_state_dict(m, 0)
    assert not torch.equal(sd["1.weight"], m.state_dict()["1.weight"])  # ones moved
    assert not torch.equal(sd["1.bias"], m.state_dict()["1.bias"])  # zeros moved
    assert torch.equal(sd["mask"], m.mask)  # structural buffer kept
    assert (sd["2.running_var"] > 0).all()
    assert torch.equal(sd["2.num_batches_tracked"], m.state_dict()["2.num_batches_tracked"])
    ok, _ = compatible({k: (list(v.shape), str(v.dtype)) for k, v in sd.items()}, m)
    assert ok


CPP_CANDIDATE = """
import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

_ext = load_inline(
    name="pike_test_relu_mm",
    cpp_sources="torch::Tensor relu_mm(torch::Tensor a, torch::Tensor b) { return torch::relu(a.matmul(b)); }",
    functions=["relu_mm"],
)


class ModelNew(nn.Module):
    def forward(self, a, b):
        return _ext.relu_mm(a, b)
"""


@pytest.mark.slow
def test_killed_extension_build_does_not_block_the_next_build(tmp_path):
    task = load_task(TASKS / "matmul.py")
    with Evaluator(EvalConfig(cache_dir=tmp_path, timing=FAST, build_timeout_s=240)) as e:
        killed = e.builder.build(CPP_CANDIDATE, tmp_path / "killed-build", timeout=4)
        assert killed.status == "timeout"
        # torch's own lock file is left behind by the killed build: with torch's cache alone, the
        # next build of this source would wait on it forever.
        assert list((tmp_path / "extensions").glob("*/pike_test_relu_mm/lock"))
        r = e.evaluate(task, CPP_CANDIDATE)
        assert r.status == "ok", (r.message, r.feedback[-2000:])
        assert "cpp_ext" in r.tags and r.durations_s["build_s"] < 240
        # The run stage imported the build; it did not build again (torch re-runs ninja at import).
        [so] = (tmp_path / "extensions").glob("*/pike_test_relu_mm/*.so")
        built_at = so.stat().st_mtime_ns
        # A second candidate with the same source reuses the build.
        again = e.evaluate(task, CPP_CANDIDATE)
        assert again.status == "ok" and again.durations_s["build_s"] < 1
        assert so.stat().st_mtime_ns == built_at


def test_run_stage_sees_the_build_flags(tmp_path):
    """Everything that goes into torch's ninja file must be the same at build and at import: a run
    stage that picked the CUDA arch from its GPU instead rebuilt every extension in the GPU slot."""
    b = Builder(tmp_path, arch_list="9.0")
    try:
        env = b.env(CPP_CANDIDATE)
        assert env["TORCH_CUDA_ARCH_LIST"] == "9.0" and b.sandbox.env["CUDA_VISIBLE_DEVICES"] == ""
        assert env["TORCH_EXTENSIONS_DIR"].startswith(str(tmp_path))
        assert "TORCH_CUDA_ARCH_LIST" not in Builder(tmp_path).env(CPP_CANDIDATE)  # CPU: nothing to pin
    finally:
        b.close()


def test_over_ten_times_faster_triggers_extra_trials(ev):
    task = load_task(TASKS / "redundant.py")
    eager = ev.eager(task)
    once = (
        "import torch\nimport torch.nn as nn\n\n"
        "class ModelNew(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.proj = nn.Linear(128, 128)\n\n"
        "    def forward(self, x):\n        return self.proj(x)\n"
    )
    r = ev.evaluate(task, once, eager_ms=eager.runtime_ms)
    # Over 10x in the search: checked on new inputs, then re-timed side by side with eager (the
    # reported speedup is that one: on a loaded machine it can be lower than the search's).
    assert r.ok and "confirmed on" in r.message and r.trials >= 2 * ev.config.trials, (r.status, r.message)
    assert r.speedup_vs_eager > 5


def test_fresh_input_probe_is_for_candidates_only(ev):
    """PIKE's own code (baselines, offline variants) is not probed: on a busy CPU a probe of a tiny
    eager model could only add noise. A candidate is."""
    task = load_task(TASKS / "wide_mlp.py")
    cheat = (HERE / "candidates" / "wide_content_cache.py").read_text()
    assert ev.evaluate(task, cheat, trusted=True).status == "ok"
    r = ev.evaluate(task, cheat)
    assert r.status == "suspect" and "cached by input content" in r.message, (r.status, r.message)


# ---------------------------------------------------------------- where models are built

def test_models_are_built_under_the_device_context():
    from pike.evaluate.harness import construct

    m = construct(torch.nn.Linear, [4, 3], torch.device("meta"), True)
    assert m.weight.device.type == "meta" and not m.training
    assert construct(torch.nn.Linear, [4, 3], torch.device("meta"), False).weight.device.type == "cpu"


def test_the_reference_records_where_models_are_built(ev, ln_task):
    assert ev.reference(ln_task).meta["built_on"] == "cpu"  # a CPU device: always on the CPU
    with pytest.raises(ValueError, match="init_on"):
        Evaluator(EvalConfig(init_on="gpu"))


CPU_ONLY_INIT = '''
import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.lin = nn.Linear(n, n)
        self.register_buffer("table", torch.tensor(torch.arange(n).numpy()))  # .numpy(): CPU tensors only

    def forward(self, x):
        return self.lin(x) + self.table


def get_inputs():
    return [torch.randn(8, 16)]


def get_init_inputs():
    return [16]
'''


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_models_are_built_on_the_gpu_like_the_reference(tmp_path, ln_task):
    with Evaluator(EvalConfig(device="cuda", cache_dir=tmp_path, timing=FAST)) as e:
        assert e.reference(ln_task).meta["built_on"] == "device"
        assert e.evaluate(ln_task, cand("ln_fused.py")).ok
        assert e.evaluate(ln_task, cand("ln_drops_affine.py")).status == "mismatch"
        # A Model that can only be built on the CPU: the reference falls back, and candidates follow.
        (tmp_path / "cpu_init.py").write_text(CPU_ONLY_INIT)
        t = load_task(tmp_path / "cpu_init.py")
        meta = e.reference(t).meta
        assert meta["built_on"] == "cpu" and "numpy" in meta["built_note"]
        assert e.evaluate(t, t.source, trusted=True).ok
