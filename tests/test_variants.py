"""The offline portfolio (pike.search.variants): every variant is a real solution file.

CPU: each CPU-applicable variant of a small Linear+LayerNorm task and a Conv2d+BatchNorm task passes the
real evaluator (torch.compile variants on the conv task only: each compile costs seconds); CUDA-only
variants come back skipped with a reason; every CUDA variant parses, passes the static check with the
tags of its knobs, constructs on CPU with Model's state_dict keys, and (no GPU here) runs its eager
fallback on CPU tensors. With a GPU, the CUDA variants go through the evaluator too.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from pike.evaluate.evaluator import EvalConfig, Evaluator
from pike.evaluate.static import check_source
from pike.evaluate.timing import TimingConfig
from pike.search.variants import KNOB_ORDER, Variant, variants
from pike.task import load_task

LINEAR = """
import torch
import torch.nn as nn

batch = 8
dim = 16
hidden = 32


class Model(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        h = self.norm(self.fc1(x))
        return self.fc2(torch.relu(h)), h


def get_inputs():
    return [torch.randn(batch, dim)]


def get_init_inputs():
    return [dim, hidden]
"""

CONV = """
import torch
import torch.nn as nn

batch = 2
channels = 3
features = 8
size = 8


class Model(nn.Module):
    def __init__(self, channels, features):
        super().__init__()
        self.conv = nn.Conv2d(channels, features, 3, padding=1)
        self.bn = nn.BatchNorm2d(features)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


def get_inputs():
    return [torch.randn(batch, channels, size, size)]


def get_init_inputs():
    return [channels, features]
"""

# Outputs of mixed kinds: autocast must give back float32 where eager does, and leave the rest alone.
MIXED = """
import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x, scale=1.0):
        y = self.fc(x) * scale
        return {"y": y, "idx": x.argmax(-1), "wide": x.double().sum(-1)}, [y.relu()]


def get_inputs():
    return [torch.randn(4, 8)]


def get_init_inputs():
    return [8]
"""

HALF = """
import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8).half()

    def forward(self, x):
        return self.fc(x.half()).float()


def get_inputs():
    return [torch.randn(4, 8)]


def get_init_inputs():
    return []
"""

# Capture fails (nonzero has a data-dependent shape): the CUDA-graph variants must fall back to eager.
NONZERO = """
import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x):
        y = self.fc(x)
        return y[torch.nonzero(y > 0, as_tuple=True)].sum().reshape(1) + y.mean()


def get_inputs():
    return [torch.randn(16, 32)]


def get_init_inputs():
    return [32]
"""

FAST = TimingConfig(warmup_ms=5, max_time_s=0.1)
ON_GPU = torch.cuda.is_available()


def _task(tmp_path: Path, name: str, source: str):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source).lstrip())
    return load_task(path)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    d = tmp_path_factory.mktemp("tasks")
    return {name: _task(d, name, src) for name, src in
            {"linear": LINEAR, "conv": CONV, "mixed": MIXED, "half": HALF, "nonzero": NONZERO}.items()}


@pytest.fixture(scope="module")
def ev(tmp_path_factory):
    device = "cuda" if ON_GPU else "cpu"
    cfg = EvalConfig(device=device, cache_dir=tmp_path_factory.mktemp("cache"), timeout_s=300, timing=FAST)
    with Evaluator(cfg) as e:
        yield e


def _by_name(vs: list[Variant]) -> dict[str, Variant]:
    names = [v.name for v in vs]
    assert len(names) == len(set(names)), "variant names are unique"
    return {v.name: v for v in vs}


def _load(source: str, name: str = "pike_variant_under_test") -> dict:
    ns = {"__name__": name}
    exec(compile(source, f"<{name}>", "exec"), ns)
    return ns


# ---------------------------------------------------------------- the portfolio


def test_cpu_portfolio(tasks):
    lin = _by_name(variants(tasks["linear"], "cpu"))
    conv = _by_name(variants(tasks["conv"], "cpu"))
    applied = {n for n, v in lin.items() if v.source is not None}
    assert applied == {"eager", "compile:default", "bf16_autocast", "bf16_autocast+compile:default"}
    conv_applied = {n for n, v in conv.items() if v.source is not None}
    assert conv_applied == applied | {"channels_last", "channels_last+compile:default"}
    assert lin["eager"].source == tasks["linear"].source and lin["eager"].knobs == ()
    for vs in (lin, conv):
        for v in vs.values():
            assert (v.source is None) == bool(v.skipped), v
        for name in ("cuda_graph", "tf32", "fp16_autocast", "tf32+cuda_graph", "compile:reduce-overhead"):
            assert vs[name].source is None and vs[name].skipped
        assert "CUDA" in vs["cuda_graph"].skipped and "CUDA" in vs["tf32"].skipped
    assert "convolution" in lin["channels_last"].skipped
    assert "convolution" in _by_name(variants(tasks["linear"], "cuda"))["cudnn_benchmark"].skipped
    assert "CUDA" in conv["cudnn_benchmark"].skipped
    assert conv["bf16_autocast"].precision == "bf16" and conv["channels_last"].precision == "fp32"


def test_cuda_portfolio(tasks):
    for key, low, high in (("linear", 15, 20), ("conv", 20, 25)):
        vs = variants(tasks[key], "cuda")
        n = sum(v.source is not None for v in vs)
        assert low <= n <= high, (key, n)
        more = variants(tasks[key], "cuda:0", with_max_autotune=True)
        assert sum(v.source is not None for v in more) == n + 2
        assert _by_name(more)["tf32+compile:max-autotune"].source is not None
        assert "with_max_autotune" in _by_name(vs)["compile:max-autotune"].skipped
        singles = variants(tasks[key], "cuda", combos=False)
        assert all(len(v.knobs) <= 1 for v in singles) and len(singles) == len(KNOB_ORDER) + 1
        # Cheapest first: a time limit cuts the compile modes, and max-autotune's long compile last.
        order = [v.name for v in singles if v.source is not None]
        compiled = [i for i, n in enumerate(order) if n.startswith("compile:")]
        assert order[0] == "eager" and compiled == list(range(len(order) - len(compiled), len(order)))
        assert order[-1] == "compile:max-autotune-no-cudagraphs" and order[compiled[0]] == "compile:default"
    conv = _by_name(variants(tasks["conv"], "cuda"))
    for name in ("channels_last+cudnn_benchmark+tf32", "bf16_autocast+cuda_graph", "fp16_autocast",
                 "tf32+compile:max-autotune-no-cudagraphs", "channels_last+cudnn_benchmark+tf32+cuda_graph"):
        assert conv[name].source is not None
    assert conv["fp16_autocast+cuda_graph"].precision == "fp16" and conv["tf32+cuda_graph"].precision == "tf32"


def test_stages_put_every_compile_after_the_cheap_knobs_and_their_combinations(tasks):
    from pike.search.variants import stages

    portfolio = [v for v in variants(tasks["conv"], "cuda") if v.applies]
    cheap, cheap_combos, compiles, compile_combos = stages(portfolio)
    # Every variant once, in the portfolio's own order within a stage.
    assert sorted(v.name for st in (cheap, cheap_combos, compiles, compile_combos) for v in st) == sorted(v.name for v in portfolio)
    for st in (cheap, cheap_combos, compiles, compile_combos):
        assert [portfolio.index(v) for v in st] == sorted(portfolio.index(v) for v in st)
    assert cheap[0].name == "eager" and all(len(v.knobs) <= 1 for v in cheap)
    # The seconds-long combinations (fp16 CUDA graph: 1.82x on unet_resblock_attention, where the
    # best compile mode gave 1.35x) come before any compile, which took minutes on recurrent tasks.
    assert {"fp16_autocast+cuda_graph", "tf32+cuda_graph", "channels_last+cudnn_benchmark"} <= {v.name for v in cheap_combos}
    assert not any(k.startswith("compile:") for v in cheap + cheap_combos for k in v.knobs)
    assert [v.name for v in compiles] == ["compile:default", "compile:reduce-overhead", "compile:max-autotune-no-cudagraphs"]
    assert compile_combos and all(len(v.knobs) > 1 and any(k.startswith("compile:") for k in v.knobs) for v in compile_combos)


def test_autocast_skipped_for_reduced_precision_task(tasks):
    for device in ("cpu", "cuda"):
        vs = _by_name(variants(tasks["half"], device))
        for name in ("bf16_autocast", "bf16_autocast+compile:default"):
            assert vs[name].source is None and "reduced precision" in vs[name].skipped
        assert vs["compile:default"].source is not None
    assert "reduced precision" in _by_name(variants(tasks["half"], "cuda"))["fp16_autocast"].skipped


def test_no_special_casing_by_name(tasks, tmp_path):
    renamed = _task(tmp_path, "something_else", tasks["conv"].source)
    a, b = variants(tasks["conv"], "cuda"), variants(renamed, "cuda")
    assert [(v.name, v.source, v.skipped) for v in a] == [(v.name, v.source, v.skipped) for v in b]


# ---------------------------------------------------------------- every source, statically and on CPU


def _expected_tags(v: Variant) -> set[str]:
    tags = set()
    if "cuda_graph" in v.knobs:
        tags |= {"cuda_graphs", "custom_stream"}  # the side stream that warms up before capture
    if {"compile:reduce-overhead", "compile:max-autotune"} & set(v.knobs):
        tags.add("cuda_graphs")
    if any(k.startswith("compile:") for k in v.knobs):
        tags.add("torch_compile")
    if "tf32" in v.knobs:
        tags.add("tf32")
    if "bf16_autocast" in v.knobs:
        tags |= {"bf16", "autocast"}
    if "fp16_autocast" in v.knobs:
        tags |= {"fp16", "autocast"}
    return tags


@pytest.mark.parametrize("key", ["linear", "conv", "mixed"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_sources_parse_tag_and_keep_state_dict(tasks, key, device):
    task = tasks[key]
    init_inputs = _load(task.source)["get_init_inputs"]()
    for v in variants(task, device, with_max_autotune=True):
        if v.source is None:
            continue
        assert v.source.startswith(task.source.rstrip())
        compile(v.source, v.name, "exec")
        report = check_source(v.source)
        assert report.ok, (v.name, report.violations)
        assert report.defines == ("Model" if v.name == "eager" else "ModelNew")
        assert set(report.tags) == _expected_tags(v), v.name
        ns = _load(v.source)
        torch.manual_seed(0)
        ref = ns["Model"](*init_inputs)
        torch.manual_seed(0)
        new = ns[report.defines](*init_inputs)  # no CUDA is touched at construction
        want, got = ref.state_dict(), new.state_dict()
        assert list(got) == list(want), v.name
        for k in want:
            assert got[k].shape == want[k].shape and got[k].dtype == want[k].dtype and torch.equal(got[k], want[k])
        assert [n for n, _ in new.named_modules()] == [n for n, _ in ref.named_modules()]  # no added submodule
        new.load_state_dict(want)  # strict: the reference's weights load as they are
        if "channels_last" in v.knobs:
            assert new.conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.filterwarnings("ignore:CUDA is not available:UserWarning")  # autocast("cuda") on a CPU-only build
@pytest.mark.parametrize("key", ["linear", "conv"])
def test_cuda_variants_fall_back_to_eager_on_cpu_tensors(tasks, key):
    """Without a GPU, the CUDA variants' code still runs: graphs fall back to eager for CPU tensors,
    autocast("cuda") leaves CPU ops alone, backend flags are restored after each call."""
    task = tasks[key]
    ns = _load(task.source)
    x = ns["get_inputs"]()
    def flags():
        b = torch.backends
        return b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark

    before = flags()
    for v in variants(task, "cuda"):
        if v.source is None or any(k.startswith("compile:") for k in v.knobs):
            continue
        ns = _load(v.source)
        torch.manual_seed(0)
        ref = ns["Model"](*ns["get_init_inputs"]()).eval()
        torch.manual_seed(0)
        new = ns["ModelNew" if v.knobs else "Model"](*ns["get_init_inputs"]()).eval()
        with torch.inference_mode():
            want, got = ref(*x), new(*x)
        for a, b in zip(want if isinstance(want, tuple) else [want], got if isinstance(got, tuple) else [got]):
            assert b.dtype == a.dtype and b.is_contiguous()
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        assert flags() == before, v.name


def test_autocast_output_dtypes_follow_eager(tasks):
    task = tasks["mixed"]
    v = _by_name(variants(task, "cpu"))["bf16_autocast"]
    ns = _load(v.source)
    torch.manual_seed(0)
    model = ns["ModelNew"](*ns["get_init_inputs"]()).eval()
    x = ns["get_inputs"]()[0]
    with torch.inference_mode():
        (d, [r]) = model(x, scale=2.0)
        dtypes = (d["y"].dtype, d["idx"].dtype, d["wide"].dtype, r.dtype)
        assert dtypes == (torch.float32, torch.int64, torch.float64, torch.float32)
        # A model that already runs in bf16 keeps its precision: autocast stays off, nothing is widened.
        (d, [r]) = model.to(torch.bfloat16)(x.to(torch.bfloat16))
        assert d["y"].dtype == r.dtype == torch.bfloat16


# ---------------------------------------------------------------- through the real evaluator


def _cpu_cases():
    # compile variants on the conv task only (each torch.compile costs seconds on CPU)
    return [("linear", "eager"), ("linear", "bf16_autocast"), ("mixed", "bf16_autocast"), ("conv", "eager"),
            ("conv", "bf16_autocast"), ("conv", "channels_last"), ("conv", "compile:default"),
            ("conv", "bf16_autocast+compile:default"), ("conv", "channels_last+compile:default")]


@pytest.mark.slow
@pytest.mark.skipif(ON_GPU, reason="the CPU portfolio is checked on CPU")
@pytest.mark.parametrize("key,name", _cpu_cases())
def test_cpu_variants_pass_the_evaluator(tasks, ev, key, name):
    task = tasks[key]
    v = _by_name(variants(task, "cpu"))[name]
    r = ev.evaluate(task, v.source, trusted=True)
    assert r.status == "ok", (name, r.message, r.feedback[-2000:])
    assert r.state_dict_compatible, r


def _gpu_cases():
    names = {"linear": [], "conv": []}
    for key, src in (("linear", LINEAR), ("conv", CONV)):
        for knobs in [()] + [v.knobs for v in variants(_FakeTask(src), "cuda") if v.source is not None and v.knobs]:
            names[key].append("+".join(knobs) or "eager")
    return [(k, n) for k, ns in names.items() for n in ns] + [("nonzero", "cuda_graph"), ("nonzero", "tf32+cuda_graph")]


class _FakeTask:
    """Enough of a Task for listing variant names at collection time."""

    def __init__(self, source):
        self.source = textwrap.dedent(source).lstrip()


@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device")
@pytest.mark.parametrize("key,name", _gpu_cases())
def test_cuda_variants_pass_the_evaluator(tasks, ev, key, name):
    v = _by_name(variants(tasks[key], "cuda"))[name]
    r = ev.evaluate(tasks[key], v.source, trusted=True)
    print(f"\n{key} {name}: {r.status} {r.runtime_ms} ms, max abs err {r.max_abs_err}, tags {r.tags}")
    assert r.status == "ok", (name, r.message, r.feedback[-3000:])
    assert r.state_dict_compatible, r


# ---------------------------------------------------------------- which combinations are worth trying

def test_promising_combines_only_knobs_that_helped_alone():
    from pike.search.variants import promising

    alone = {"compile:default": (True, 0.8), "compile:max-autotune-no-cudagraphs": (True, 0.7),
             "compile:reduce-overhead": (False, None), "tf32": (True, 0.9), "bf16_autocast": (False, 0.5),
             "channels_last": (True, 1.2), "cudnn_benchmark": (True, 1.04)}
    eager = 1.0
    assert promising(("tf32", "compile:max-autotune-no-cudagraphs"), alone, eager) == ""
    assert "fastest compile mode" in promising(("tf32", "compile:default"), alone, eager)
    assert "failed on its own" in promising(("bf16_autocast", "compile:max-autotune-no-cudagraphs"), alone, eager)
    assert "1.20x eager" in promising(("channels_last", "cudnn_benchmark"), alone, eager)
    assert promising(("cudnn_benchmark", "tf32"), alone, eager) == ""  # within 5% of eager alone: kept
    assert "not tried on its own" in promising(("fp16_autocast", "cuda_graph"), alone, eager)
    # No eager time (eager itself failed): only failures and the compile-mode rule apply.
    assert promising(("channels_last", "cudnn_benchmark"), alone, None) == ""
