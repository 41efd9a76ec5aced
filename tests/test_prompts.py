"""What a model is told: device facts that follow the device (GPU or CPU), the measured times and the
reference's profile from the first prompt on, distinct sibling branches, and a re-ask after a reply
with no usable code. Prompt builders and small pieces only; the engine's side is in test_optimize."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from pike.agents import (
    Branch, Hardware, ParentInfo, PromptFlags, TaskContext, coa_messages, directions, efa_messages, iba_messages,
    optimise, reask,
)
from pike.agents.hardware import gpu_peaks
from pike.evaluate.device_facts import cpu_facts, toolchain_facts
from pike.evaluate.result import EvalResult
from pike.search.pike_b import branch_plan
from pike.store import Store

REFERENCE = "import torch\nimport torch.nn as nn\n\nclass Model(nn.Module):\n    def forward(self, x):\n        return x.relu()\n"
SOLUTION = REFERENCE.replace("class Model(", "class ModelNew(")

CPU_INFO = {  # what the probe and the toolchain checks report on a CPU machine
    "device_name": "x86_64", "torch": "2.13.0", "cuda": None, "triton": "3.6.0", "cpus": 2, "threads": 2,
    "cpu_model": "Intel(R) Xeon(R) Platinum 8488C", "isa": ["AVX2", "FMA", "AVX-512F", "AVX-512 BF16", "AMX", "AMX-BF16"],
    "cpu_capability": "AVX512", "caches": [{"level": 1, "type": "Data", "size": "48K", "shared_by": 1},
                                            {"level": 3, "type": "Unified", "size": "105M", "shared_by": 96}],
    "cxx": "c++ (Debian 12.2.0-14) 12.2.0", "openmp": True,
}
GPU_INFO = {
    "device_name": "NVIDIA H200", "torch": "2.11.0", "cuda": "12.8", "triton": "3.6.0", "cudnn": 91002, "sms": 132,
    "memory_bytes": 150 * 2**30, "l2_bytes": 60 * 2**20, "capability": "9.0", "bandwidth_gbs": 4012.4, "nvcc": "12.8",
    "cxx": "c++ (GCC) 11.4.0", "openmp": True,
}


def _task(kind: str, hw: Hardware, **measured) -> TaskContext:
    return TaskContext("relu_task", REFERENCE, hw.describe(), "fp32 reference", kind, **measured)


def _user(messages) -> str:
    return messages[1]["content"]


# ---- device-true prompts ------------------------------------------------------------------------

def test_cpu_prompts_speak_of_the_cpu_not_a_gpu():
    hw = Hardware.from_info(CPU_INFO, "cpu")
    task = _task("cpu", hw)
    for messages in (iba_messages(task, 4, PromptFlags(gpu_facts=True), hw),
                     coa_messages(task, None, None, PromptFlags(gpu_facts=True), hw),
                     efa_messages(task, SOLUTION, EvalResult("mismatch"), 1, PromptFlags(gpu_facts=True), hw)):
        system, user = messages[0]["content"], messages[1]["content"]
        assert "the CPU (Intel(R) Xeon(R) Platinum 8488C, 2 cores; torch 2.13.0); no GPU" in system
        assert "GPU execution model" not in system and "There is no GPU" in system
        assert "## Target device\nCPU: Intel(R) Xeon(R) Platinum 8488C" in user
        assert "ISA extensions: AVX2, FMA, AVX-512F, AVX-512 BF16, AMX, AMX-BF16 (PyTorch's own kernels use its AVX512" in user
        assert "caches: L1d 48K per core, L3 105M shared by 96 CPUs" in user
        assert "compiler: c++ (Debian 12.2.0-14) 12.2.0), with OpenMP when built with extra_cflags=['-O3', '-fopenmp']" in user
        assert "Triton only under its interpreter" in user and "not available: " not in user  # it has AVX-512 and AMX
        # The requirements (of prompts that ask for code) offer what runs on a CPU: C++ through
        # load_inline, no Triton kernels, no CUDA.
        assert ("This is a CPU: no CUDA, and no Triton" in user) == ("## Requirements" in user)
        assert "@triton.jit" not in user and "CUDA C++ as source strings" not in user
    assert "## Requirements" in _user(coa_messages(task, None, None, PromptFlags()))
    assert "CUDA graphs to remove launch overhead" not in _user(iba_messages(task, 4, PromptFlags()))


def test_cpu_without_avx512_says_what_is_missing_and_without_a_compiler_says_so():
    hw = Hardware.from_info({**CPU_INFO, "isa": ["AVX", "AVX2", "FMA"], "cxx": None, "openmp": False}, "cpu")
    facts = "\n".join(hw.facts())
    assert "not available: AVX-512; AMX; native bf16 arithmetic" in facts
    assert "no C++ compiler was found" in facts and "OpenMP" not in facts


def test_gpu_facts_with_datasheet_peaks_and_the_working_toolchain():
    hw = Hardware.from_info(GPU_INFO, "cuda")
    task = _task("cuda", hw)
    messages = coa_messages(task, None, None, PromptFlags(gpu_facts=True), hw)
    assert "NVIDIA H200 (torch 2.11.0, CUDA 12.8, Triton 3.6.0)" in messages[0]["content"]
    assert "GPU execution model" in messages[0]["content"]
    user = _user(messages)
    for line in ("GPU: NVIDIA H200", "compute capability: 9.0", "streaming multiprocessors: 132", "memory: 150 GB",
                 "L2 cache: 60 MB", "memory bandwidth measured here (device-to-device copy): 4012 GB/s",
                 "peak rates (NVIDIA H200 datasheet (SXM), dense): fp32 67 TFLOP/s, tf32 tensor cores 494.7 TFLOP/s,"
                 " bf16 tensor cores 989.4 TFLOP/s",
                 "toolchain: torch 2.11.0, CUDA runtime 12.8, Triton 3.6.0, cuDNN 91002",
                 "CUDA C++ through torch.utils.cpp_extension.load_inline builds here (nvcc 12.8)"):
        assert line in user, line
    assert "@triton.jit" in user and "Triton only under its interpreter" not in user


def test_unknown_gpu_gets_no_peaks_and_no_nvcc_is_said():
    hw = Hardware.from_info({**GPU_INFO, "device_name": "NVIDIA Future GPU", "nvcc": None}, "cuda")
    facts = "\n".join(hw.facts())
    assert "peak rates" not in facts and "TFLOP/s" not in facts  # unknown: left out, not guessed
    assert "no working nvcc here" in facts and "GPU: NVIDIA Future GPU" in facts


def test_peak_table_rows_are_complete():
    peaks = gpu_peaks()
    assert peaks["nvidia h100 80gb hbm3"]["bf16"] == 989.4 and peaks["tesla t4"].get("bf16") is None
    assert all(p["source"] and p["bandwidth_gbs"] > 0 and p["fp32"] > 0 for p in peaks.values())


def test_cpu_facts_from_cpuinfo_and_sysfs(tmp_path):
    for i, (level, kind, size, shared) in enumerate([(1, "Data", "32K", "0"), (1, "Instruction", "32K", "0"),
                                                      (2, "Unified", "1024K", "0"), (3, "Unified", "32768K", "0-7,16-23")]):
        d = tmp_path / f"index{i}"
        d.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
            (d / name).write_text(f"{value}\n")
    cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 9654\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_bf16\n"
    facts = cpu_facts(cpuinfo, tmp_path)
    assert facts["cpu_model"] == "AMD EPYC 9654"
    assert facts["isa"] == ["SSE4.2", "AVX", "AVX2", "FMA", "AVX-512F", "AVX-512 BF16"]
    assert facts["caches"] == [{"level": 1, "type": "Data", "size": "32K", "shared_by": 1},
                               {"level": 2, "type": "Unified", "size": "1024K", "shared_by": 1},
                               {"level": 3, "type": "Unified", "size": "32768K", "shared_by": 16}]
    arm = cpu_facts("processor\t: 0\nFeatures\t: fp asimd sve bf16\n", tmp_path / "none")
    assert arm["isa"] == ["NEON", "BF16 (Arm)", "SVE"] and "caches" not in arm


def test_toolchain_check_builds_once_per_machine(tmp_path, monkeypatch):
    import pike.evaluate.device_facts as df

    first = toolchain_facts("cpu", tmp_path)
    assert set(first) == {"cxx", "openmp"}
    calls = []
    monkeypatch.setattr(df, "_builds", lambda *a, **k: calls.append(a) or True)
    assert toolchain_facts("cpu", tmp_path) == first and not calls  # cached: no second build
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    assert toolchain_facts("cpu", tmp_path / "other") == {"cxx": None, "openmp": False}


# ---- measured context from the first prompt on ----------------------------------------------------

PROFILE = "op  ms/forward  share\naten::addmm  0.71  71.0%\nunattributed  0.10  10.0%\ntotal  1.00  100%"


def test_brainstorm_and_phase0_carry_eager_compile_and_the_reference_profile():
    hw = Hardware.from_info(CPU_INFO, "cpu")
    task = _task("cpu", hw, eager_ms=1.0, compile_ms=0.8, paired=True, profile=PROFILE, inputs="[16, 48] (size set 'small')")
    flags = PromptFlags.all()
    for user in (_user(iba_messages(task, 4, flags, hw)), _user(coa_messages(task, None, "fuse", flags, hw))):
        assert "PyTorch eager (the reference): 1 ms per forward" in user
        assert "torch.compile (default mode): 0.8 ms per forward\nBoth timed side by side" in user
        assert "Inputs the evaluator uses: [16, 48] (size set 'small')." in user
        assert "## Profile of the reference (where its time goes)\n" + PROFILE in user
        assert "\n\n\n" not in user
    # A parent's prompt shows the parent's own profile, not the reference's.
    parent = ParentInfo(SOLUTION, runtime_ms=0.5, speedup_vs_eager=2.0, profile="aten::relu 100%")
    user = _user(coa_messages(task, parent, None, flags, hw))
    assert "aten::relu 100%" in user and "aten::addmm" not in user and "PyTorch eager (the reference): 1 ms" in user
    # Times measured apart are labelled so; the paper's setting shows none of it.
    apart = _task("cpu", hw, eager_ms=1.0, compile_ms=0.8)
    assert "Each timed on its own." in _user(iba_messages(apart, 4, flags, hw))
    assert "PyTorch eager" not in _user(iba_messages(task, 4, PromptFlags(), hw))
    # The inputs timed and checked are a fact of the task: in the paper's setting too, once, no blank run.
    for user in (_user(iba_messages(task, 4, PromptFlags(), hw)), _user(coa_messages(task, None, None, PromptFlags(), hw))):
        assert user.count("Inputs the evaluator uses: [16, 48] (size set 'small').") == 1 and "\n\n\n" not in user


# ---- distinct branches --------------------------------------------------------------------------

def test_sibling_prompts_of_a_phase_all_differ():
    p1, p2 = SimpleNamespace(id=11), SimpleNamespace(id=12)
    # Later phase: parent 11 has three branches (its own choice, then two ideas), parent 12 one.
    jobs = [(p1, None), (p1, "use bf16"), (p1, "use bf16"), (p2, None)]
    plan = branch_plan(jobs)
    assert plan[3] is None and [b.k for b in plan[:3]] == [1, 2, 3] and all(b.n == 3 for b in plan[:3])
    assert plan[1].others == [(1, None), (3, "use bf16")]
    hw = Hardware.from_info(GPU_INFO, "cuda")
    task = _task("cuda", hw)
    parent = ParentInfo(SOLUTION, runtime_ms=0.5)
    prompts = [_user(coa_messages(task, parent, idea, PromptFlags.all(), hw, branch=b)) for (_, idea), b in zip(jobs[:3], plan)]
    assert len(set(prompts)) == 3
    assert "## Branch 2 of 3" in prompts[1] and "- branch 3: the same optimisation as yours, by another route" in prompts[1]
    assert "- branch 1: the change its author expects to give the largest speedup" in prompts[1]
    assert "- branch 2: use bf16" in prompts[0]
    # Phase 0 from the reference: one group over all branches.
    phase0 = branch_plan([(None, "a"), (None, "b")])
    assert phase0[0].others == [(2, "b")] and phase0[1].others == [(1, "a")]


def test_directions_follow_the_device():
    cpu, gpu = directions("cpu"), directions("cuda")
    assert len(cpu) >= 5 and len(gpu) >= 5 and not set(cpu) & set(gpu)
    assert any("OpenMP" in d for d in cpu) and not any("Triton" in d or "CUDA" in d for d in cpu)
    assert any("Triton" in d for d in gpu)


# ---- unusable replies -----------------------------------------------------------------------------

class FakeLLM:
    def __init__(self, *texts):
        self.texts, self.calls = list(texts), []

    async def ask(self, role, messages):
        self.calls.append((role, messages))
        return SimpleNamespace(text=self.texts.pop(0))


def test_reask_reminds_of_the_format_and_names_what_was_wrong():
    llm = FakeLLM("I would rather describe it: fuse everything.", f"```python\n{SOLUTION}```")
    task = TaskContext("relu_task", REFERENCE, "the CPU", kind="cpu")
    first = asyncio.run(optimise(llm, task, None, None, PromptFlags()))
    assert first.code is None and first.error == "no code block"
    second = asyncio.run(reask(llm, first))
    assert second.ok and second.code == SOLUTION and second.role == "coa"
    messages = llm.calls[1][1]
    assert messages[:2] == llm.calls[0][1]  # the same conversation, continued
    assert messages[2] == {"role": "assistant", "content": "I would rather describe it: fuse everything."}
    assert messages[3]["role"] == "user" and "could not be used: no code block" in messages[3]["content"]
    assert "single ```python block" in messages[3]["content"]
    ideas = asyncio.run(reask(FakeLLM('["a", "b"]'), SimpleNamespace(role="iba", completion=SimpleNamespace(text=""),
                                                                     error="no ideas found", messages=[]), n=2))
    assert ideas.ideas == ["a", "b"]


def test_store_records_unusable_replies_and_upgrades_an_old_store(tmp_path):
    import sqlite3

    path = tmp_path / "run.db"
    old = sqlite3.connect(path)  # an exchanges table as stores had it before these columns
    old.execute("CREATE TABLE exchanges (id INTEGER PRIMARY KEY, task_id INTEGER, solution_id INTEGER, role TEXT,"
                " model TEXT, phase INTEGER, slot INTEGER, prompt TEXT, response TEXT, input_tokens INTEGER,"
                " output_tokens INTEGER, cost_usd REAL, reserved_usd REAL, latency_s REAL, attempts INTEGER,"
                " error TEXT, status TEXT DEFAULT 'pending', created REAL, finished REAL)")
    old.commit()
    old.close()
    store = Store(path)
    first = store.start_exchange("coa", "m", [], 0.0, {"task_id": 1})
    store.mark_unusable(first, "no code block")
    again = store.start_exchange("coa", "m", [], 0.0, {"task_id": 1, "reask_of": first})
    store.start_exchange("iba", "m", [], 0.0, {"task_id": 1})
    assert store.unusable(1) == ["no code block"]
    rows = {r["id"]: r for r in store.exchanges(1)}
    assert rows[again]["reask_of"] == first and rows[first]["unusable"] == "no code block"


def test_final_table_says_how_many_candidates_came_from_how_many_queries():
    from pike.report.tables import final_table, unusable_lines

    row = {"task": "t", "status": "done", "fallback": False, "eager_ms": 2.0, "compile_ms": 1.5, "best_ms": 1.0,
           "speedup_eager": 2.0, "speedup_compile": 1.5, "speedup_best_compile": 1.5, "best_compile_mode": "default",
           "queries": 12, "usd": 0.1, "valid_rate": 0.5, "chains_fixed": 1, "fix_attempts": 2, "candidates": 10,
           "unusable": 2, "unusable_reasons": {"no code block": 1, "code does not parse: line 3: invalid syntax": 1}}
    cols, rows = final_table({"rows": [row]})
    assert rows[0][cols.index("candidates/queries")] == "10/12"
    assert unusable_lines({"rows": [row]}) == [
        "t: 10 candidates from 12 queries; 2 replies had no usable code: no code block (1), "
        "code does not parse: line 3: invalid syntax (1)"]


def test_later_branches_get_untried_ideas_first():
    from pike.search.pike_b import fresh_ideas

    sols = {1: SimpleNamespace(id=1, idea="fuse in C++", parent_id=None, origin="coa"),
            2: SimpleNamespace(id=2, idea="in-place PyTorch", parent_id=None, origin="coa"),
            3: SimpleNamespace(id=3, idea=None, parent_id=1, origin="coa")}
    run = SimpleNamespace(device_kind="cpu", prompt_dir=None, solutions=list(sols.values()), store=SimpleNamespace(solution=sols.get),
                          state=lambda: {"ideas": ["fuse in C++", "in-place PyTorch", "blocked rows"]})
    got = fresh_ideas(run, sols[3], 10)
    # Not the parent's own lineage; never tried before ideas tried elsewhere.
    assert "fuse in C++" not in got and got[0] == "blocked rows" and got[-1] == "in-place PyTorch"
    assert got[1:-1] == directions("cpu")


def test_a_parent_shown_again_lists_what_was_tried_from_it():
    hw = Hardware.from_info(CPU_INFO, "cpu")
    parent = ParentInfo(SOLUTION, runtime_ms=0.5, tried=[("fuse in C++", "correct, 2.55x vs eager"),
                                                         (None, "mismatch after 2 fix(es)")])
    user = _user(coa_messages(_task("cpu", hw), parent, None, PromptFlags.all(), hw))
    assert ("## Already tried from this solution (the result of each attempt)\n- fuse in C++: correct, 2.55x vs eager\n"
            "- the change its author expects to give the largest speedup: mismatch after 2 fix(es)") in user
    assert "Already tried" not in _user(coa_messages(_task("cpu", hw), parent, None, PromptFlags(), hw))


def test_numerical_policy_names_the_outputs_dtypes_and_the_tolerance_applied():
    import torch

    from pike.evaluate.compare import Tolerance, output_dtypes, policy
    assert output_dtypes((torch.zeros(2, dtype=torch.bfloat16), {"n": torch.ones(1, dtype=torch.long)}, torch.zeros(1))) == ["bf16", "fp32"]
    text = policy(Tolerance(), ["bf16"], golden=True)
    assert "bf16 outputs within atol=0.03, rtol=0.03" in text and "fp32 outputs" not in text
    assert "no further from the model run in fp32 than the reference itself is" in text
    assert "fp32 outputs within atol=0.0001, rtol=0.0001" in policy(Tolerance(strict=True), [])
    assert "model run in fp32" not in policy(Tolerance(strict=True), ["bf16"], golden=True)  # strict: no second way
    wide = policy(Tolerance(atol_floor=0.2, rel_norm=0.05), ["fp32"])
    assert "fp32 outputs within atol=0.2, rtol=0.01" in wide and "atol widened" in wide and "relative norm error below 0.05" in wide
    # The best/ header and the verdict name the same tolerance per output dtype.
    assert Tolerance().describe(["bf16"]) == "atol=0.03, rtol=0.03 (bf16)"
    assert Tolerance().describe() == "atol=0.01, rtol=0.01 (fp32)"
    assert Tolerance(strict=True).describe(["fp32", "fp16"]) == "atol=0.0001, rtol=0.0001 (fp32, strict); atol=0.001, rtol=0.001 (fp16, strict)"
