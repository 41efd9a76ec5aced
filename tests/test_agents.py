"""Agents: code extraction, idea parsing, prompt rendering, and the async layer (fake LLM, no network)."""

import asyncio
import textwrap
from types import SimpleNamespace

import pytest

from pike.agents import (
    AgentReply, ExtractionError, Hardware, HistoryEntry, ParentInfo, PromptError, PromptFlags,
    TaskContext, brainstorm, coa_messages, efa_messages, extract_code, fix, iba_messages, optimise,
    parse_ideas, truncate_middle,
)
from pike.agents import templates
from pike.evaluate.result import EvalResult, Timing

F = "```"  # keeps fenced replies below readable

SOLUTION = textwrap.dedent("""\
    import torch
    import torch.nn as nn

    class ModelNew(nn.Module):
        def forward(self, x):
            return torch.relu(x)
""")
REFERENCE = SOLUTION.replace("ModelNew", "Model")
HELPER = "import torch\n\ndef helper(x):\n    return x\n"


def reply(*parts: str) -> str:
    return "\n".join(parts)


# ---- extraction ---------------------------------------------------------------------------------

def test_single_fenced_block_with_prose():
    text = reply("Here is the faster version:", F + "python", SOLUTION, F, "It fuses nothing.")
    assert extract_code(text) == SOLUTION


@pytest.mark.parametrize("opening,closing", [
    (F + "python", F), (F + "py", F), (F + "python3", F), (F, F), ("~~~", "~~~"), ("~~~python", "~~~"),
    (F + " python", F), ("````python", "````"),
])
def test_fence_styles(opening, closing):
    assert extract_code(reply("Answer:", opening, SOLUTION, closing, "Done.")) == SOLUTION


def test_unterminated_final_fence():
    assert extract_code(reply("Sure.", F + "python", SOLUTION)) == SOLUTION


def test_crlf_line_endings():
    text = reply("Sure.", F + "python", SOLUTION, F).replace("\n", "\r\n")
    assert extract_code(text) == SOLUTION


def test_indented_block_is_dedented():
    text = reply("1. The code:", F + "python", textwrap.indent(SOLUTION, "   "), "   " + F)
    assert extract_code(text) == SOLUTION


def test_no_fences_leading_and_trailing_prose():
    text = reply("Here's the optimised model, it's simple.", "", SOLUTION,
                 "This works because ReLU is elementwise.", "Note: it's memory bound.")
    assert extract_code(text) == SOLUTION


def test_no_fences_prose_between_kernel_and_module():
    kernel = "import torch\nimport torch.nn as nn\n\ndef fused(x):\n    return x.clamp_min(0)\n"
    module = "class ModelNew(nn.Module):\n    def forward(self, x):\n        return fused(x)\n"
    text = reply("First the kernel:", kernel, "Now the module, which calls it:", module, "That's all.")
    assert extract_code(text) == kernel + "\n" + module


def test_no_fences_module_docstring_kept():
    code = '"""Fast ReLU."""\n' + SOLUTION
    assert extract_code("Here it is:\n" + code) == code


def test_no_fences_code_only():
    assert extract_code(SOLUTION) == SOLUTION


def test_modelnew_preferred_over_reference_block():
    text = reply("The original:", F + "python", REFERENCE, F, "Mine:", F + "python", SOLUTION, F)
    assert extract_code(text) == SOLUTION
    # ...whatever the order
    text = reply("Mine:", F + "python", SOLUTION, F, "The original:", F + "python", REFERENCE, F)
    assert extract_code(text) == SOLUTION


def test_model_only_solution_is_accepted():
    assert extract_code(reply(F + "python", REFERENCE, F)) == REFERENCE


def test_several_complete_modelnew_blocks_take_the_last():
    v2 = SOLUTION.replace("torch.relu(x)", "x.clamp_min(0)")
    text = reply("First try:", F + "python", SOLUTION, F, "Better:", F + "python", v2, F)
    assert extract_code(text) == v2


def test_complete_block_beats_a_later_fragment():
    fragment = "class ModelNew(nn.Module):\n    def forward(self, x):\n        return fused(x)\n"
    text = reply(F + "python", SOLUTION, F, "The key part again:", F + "python", fragment, F)
    assert extract_code(text) == SOLUTION


def test_split_solution_is_joined():
    kernels = "import torch\nimport torch.nn as nn\n\ndef fused_relu(x):\n    return x.clamp_min(0)\n"
    module = "class ModelNew(nn.Module):\n    def forward(self, x):\n        return fused_relu(x)\n"
    usage = "model = ModelNew()\nprint(model(torch.randn(4)))\n"
    text = reply("Kernels:", F + "python", kernels, F, "Module:", F + "python", module, F,
                 "Usage:", F + "python", usage, F)
    code = extract_code(text)
    assert code == kernels + "\n" + module  # usage binds nothing the module needs: left out
    namespace = {}
    exec(compile(code, "<solution>", "exec"), namespace)
    assert "ModelNew" in namespace and "fused_relu" in namespace


def test_split_over_three_blocks_follows_dependencies():
    imports = "import torch\nimport torch.nn as nn\n"
    kernel = "def fused_relu(x):\n    return torch.clamp_min(x, 0)\n"
    module = "class ModelNew(nn.Module):\n    def forward(self, x):\n        return fused_relu(x)\n"
    code = extract_code(reply(*(f"{F}python\n{b}{F}" for b in (imports, kernel, module))))
    assert code == "\n".join([imports, kernel, module])


def test_self_contained_block_is_not_joined():
    helper = "def unrelated():\n    return 1\n"
    assert extract_code(reply(F + "python", helper, F, F + "python", SOLUTION, F)) == SOLUTION


def test_cpp_block_and_python_block():
    cpp = "#include <torch/extension.h>\nclass Model { public: int x; };\ntorch::Tensor relu(torch::Tensor);\n"
    text = reply("The kernel:", F + "cpp", cpp, F, "The module:", F + "python", SOLUTION, F)
    assert extract_code(text) == SOLUTION


def test_cpp_block_then_unfenced_python():
    text = reply(F + "cuda", "__global__ void k(float* x) {}", F, "Then in Python:", SOLUTION)
    assert extract_code(text) == SOLUTION


@pytest.mark.parametrize("text,reason", [
    ("", "no code block"),
    ("I could not find a faster approach; the reference is already optimal.", "no code block"),
    (reply(F + "cpp", "int main() { return 0; }", F), "no code block"),
    (reply(F + "python", HELPER, F), "defines neither ModelNew nor Model"),
    (HELPER, "defines neither ModelNew nor Model"),
])
def test_unusable_replies(text, reason):
    with pytest.raises(ExtractionError) as e:
        extract_code(text)
    assert str(e.value) == reason


def test_syntax_error_is_reported_with_line():
    broken = SOLUTION.replace("return torch.relu(x)", "return torch.relu(x")
    with pytest.raises(ExtractionError, match=r"^code does not parse: line \d+: "):
        extract_code(reply("Here:", F + "python", broken, F))
    # also when a harmless block parses next to the broken answer
    with pytest.raises(ExtractionError, match=r"^code does not parse: line \d+"):
        extract_code(reply(F + "python", broken, F, F + "python", "x = 1\n", F))


def test_unterminated_truncated_reply_is_a_parse_error():
    truncated = SOLUTION[: SOLUTION.index("torch.relu(") + len("torch.relu(")]
    with pytest.raises(ExtractionError, match="code does not parse"):
        extract_code(reply("Here:", F + "python", truncated))


def test_alias_counts_as_definition():
    code = SOLUTION.replace("ModelNew", "Fast") + "\nModelNew = Fast\n"
    assert extract_code(reply(F + "python", code, F)) == code


# ---- ideas --------------------------------------------------------------------------------------

def test_ideas_json_array_in_fence_with_prose():
    text = 'Sure!\n```json\n["Fuse bias and ReLU", "Use CUDA graphs", "bf16 matmul"]\n```\nGood luck.'
    assert parse_ideas(text, 5) == ["Fuse bias and ReLU", "Use CUDA graphs", "bf16 matmul"]


def test_ideas_json_objects():
    text = '{"ideas": [{"title": "Fuse", "description": "bias + relu in one kernel"}, {"idea": "graphs"}]}'
    assert parse_ideas(text, 5) == ["Fuse: bias + relu in one kernel", "graphs"]


def test_ideas_numbered_with_continuations_and_trailing_prose():
    text = textwrap.dedent("""\
        Here are my ideas:

        1. **Fuse** the bias add and ReLU
           into one Triton kernel.
        2) Replace the [fp32] matmul with bf16.

           - keeps accuracy within 1e-2
        3. Capture the forward in a CUDA graph.

        These should help a lot.
    """)
    assert parse_ideas(text, 10) == [
        "Fuse the bias add and ReLU into one Triton kernel.",
        "Replace the [fp32] matmul with bf16. - keeps accuracy within 1e-2",
        "Capture the forward in a CUDA graph.",
    ]


def test_ideas_numbers_inside_text_are_not_items():
    text = "Ideas:\n1. Use bf16 GEMM\n2.5x is possible with\nbetter tiling.\nIdea 2: CUDA graphs\n"
    assert parse_ideas(text, 5) == ["Use bf16 GEMM 2.5x is possible with better tiling.", "CUDA graphs"]


def test_ideas_markdown_headings_and_paragraphs():
    text = "### 1. Fusion\nFuse everything.\n\n### 2. Graphs\nUse CUDA graphs.\n"
    assert parse_ideas(text, 5) == ["Fusion Fuse everything.", "Graphs Use CUDA graphs."]
    assert parse_ideas("**1.** Fuse ops\n**2. Graphs** for launches\n", 5) == ["Fuse ops", "Graphs for launches"]


def test_ideas_bullets_dedupe_and_limit():
    text = "- Fuse ops\n* fuse ops!\n- Use TF32\n- Channels last\n- CUDA graphs\n"
    assert parse_ideas(text, 3) == ["Fuse ops", "Use TF32", "Channels last"]


@pytest.mark.parametrize("text", ["", "No ideas, sorry.", "[1, 2, 3]"])
def test_ideas_none(text):
    assert parse_ideas(text, 5) == []


# ---- prompts ------------------------------------------------------------------------------------

TASK = TaskContext("relu_task", REFERENCE, "NVIDIA H100 80GB HBM3",
                   "fp32; lower precision allowed within tolerance 1e-2")
HW = Hardware("NVIDIA H100", sms=132, memory_gb=80, peaks={"fp32": 67, "bf16": 989}, bandwidth_gbs=3350)
PARENT = ParentInfo("class ModelNew: pass  # {braces} survive\n", runtime_ms=0.25, speedup_vs_eager=1.8,
                    speedup_vs_compile=1.1, profile="triton_fused 70%\ngemm 30%",
                    idea="fuse bias and relu")
HISTORY = [HistoryEntry(1.8, "fuse bias and relu"), (2.5, "cuda graphs")]
OPTIONAL = {  # flag -> text that appears only with it
    "gpu_facts": "## Target device", "parent_speedups": "Speedup over torch.compile: 1.10x",
    "profile": "triton_fused 70%", "best_history": "1. 2.50x: cuda graphs",
}


def user(messages):
    assert [m["role"] for m in messages] == ["system", "user"]
    assert TASK.device in messages[0]["content"]
    return messages[1]["content"]


def test_coa_paper_setting_has_no_optional_sections():
    text = user(coa_messages(TASK, PARENT, "use bf16", PromptFlags(), HW, HISTORY))
    for marker in OPTIONAL.values():
        assert marker not in text
    assert "{braces} survive" in text and "0.25 ms" in text and "use bf16" in text
    assert REFERENCE.strip() in text and "ModelNew" in text and "state_dict" in text
    assert "\n\n\n" not in text  # dropped sections leave no gaps


@pytest.mark.parametrize("flag", list(OPTIONAL))
def test_coa_each_optional_section(flag):
    text = user(coa_messages(TASK, PARENT, "use bf16", PromptFlags(**{flag: True}), HW, HISTORY))
    assert OPTIONAL[flag] in text
    assert all(marker not in text for f, marker in OPTIONAL.items() if f != flag)
    assert "\n\n\n" not in text


def test_coa_flags_on_but_no_data():
    bare = ParentInfo("class ModelNew: pass\n")
    text = user(coa_messages(TASK, bare, None, PromptFlags.all(), Hardware(), history=[]))
    assert all(marker not in text for marker in OPTIONAL.values())
    assert "ms." not in text  # no runtime measured, none claimed


def test_coa_without_parent_optimises_reference():
    text = user(coa_messages(TASK, None, None, PromptFlags.all(), HW, HISTORY))
    assert "start from the reference" in text and "largest speedup" in text
    assert OPTIONAL["gpu_facts"] in text and OPTIONAL["best_history"] in text
    assert "Current solution (the starting point" not in text


def test_iba_prompt():
    text = user(iba_messages(TASK, 7, PromptFlags()))
    assert "7 distinct" in text and "JSON array" in text and REFERENCE.strip() in text
    assert "## Target device" not in text
    assert "132" in user(iba_messages(TASK, 7, PromptFlags(gpu_facts=True), HW))


def test_efa_prompt_keeps_traceback_tail_and_status():
    log = "\n".join(f"ninja: compiling unit {i}" for i in range(3000))
    log = "nvcc -O3 main.cu\n" + log + "\nRuntimeError: CUDA error: illegal memory access at line 42"
    result = EvalResult("runtime_error", "forward raised RuntimeError", feedback=log, stage="forward",
                        tags=["cuda"])
    text = user(efa_messages(TASK, SOLUTION, result, attempt=1, flags=PromptFlags()))
    assert "Status: runtime_error." in text and "forward raised RuntimeError" in text
    assert text.count("illegal memory access at line 42") == 1 and "nvcc -O3 main.cu" in text
    assert "characters cut" in text and len(text) < 12000
    assert "Failed at stage: forward" in text and "cuda" in text and SOLUTION.strip() in text
    assert "Earlier attempts" not in text


def test_efa_mismatch_numbers_and_retry():
    result = EvalResult("mismatch", "trial 2 differs", feedback="max abs err 0.31 at [0, 5]",
                        max_abs_err=0.31, max_rel_err=4.2)
    text = user(efa_messages(TASK, SOLUTION, result, attempt=3, flags=PromptFlags()))
    assert "max abs 0.31, max rel 4.2" in text and "fix attempt 3" in text and "Earlier attempts" in text
    assert "Failed at stage" not in text and "\n\n\n" not in text


@pytest.mark.parametrize("status", ["ok", "rejected", "build_error", "runtime_error", "timeout",
                                    "mismatch", "suspect"])
def test_efa_every_status_renders(status):
    assert f"Status: {status}." in user(efa_messages(TASK, "x = 1", EvalResult(status), 1, PromptFlags()))


def test_truncate_middle():
    assert truncate_middle("short") == "short"
    text = "\n".join(str(i) for i in range(10000))
    out = truncate_middle(text, 500, head=100)
    assert len(out) <= 540 and out.startswith("0\n1\n") and out.endswith("\n9999")


def test_template_missing_key_and_literal_braces():
    with pytest.raises(PromptError, match=r"needs a value for \{code\}"):
        templates.fill("t.txt", "fix {code}\n", {"status": "x"})
    filled = templates.fill("t.txt", "{{literal}} {a}\n{b}\nend\n", {"a": "{x}", "b": ""})
    assert filled == "{literal} {x}\nend\n"  # empty lone placeholder drops its line
    with pytest.raises(PromptError, match="no prompt template"):
        templates.load("nope.txt")


def test_prompt_dir_overrides_one_file(tmp_path):
    (tmp_path / "iba.txt").write_text("Give {n} ideas for {task_name}.\n")
    msgs = iba_messages(TASK, 3, PromptFlags(), prompt_dir=str(tmp_path))
    assert msgs[1]["content"] == "Give 3 ideas for relu_task.\n"
    assert "performance engineer" in msgs[0]["content"]  # system.txt still from the package


def test_parent_from_result():
    result = EvalResult("ok", timing=Timing(median_ms=0.5, iqr_ms=0.01, runs=50), eager_ms=1.0)
    p = ParentInfo.from_result("code", result, idea="x", compile_ms=0.6)
    assert (p.runtime_ms, p.speedup_vs_eager, round(p.speedup_vs_compile, 6), p.idea) == (0.5, 2.0, 1.2, "x")


# ---- async layer --------------------------------------------------------------------------------

class FakeLLM:
    def __init__(self, *texts):
        self.texts, self.calls = list(texts), []

    async def ask(self, role, messages):
        self.calls.append((role, messages))
        return SimpleNamespace(text=self.texts.pop(0), cost=0.01)


def test_brainstorm():
    llm = FakeLLM('["a", "b", "c", "d"]')
    out = asyncio.run(brainstorm(llm, TASK, 3, PromptFlags()))
    assert isinstance(out, AgentReply) and out.ok and out.ideas == ["a", "b", "c"]
    assert llm.calls[0][0] == "iba" and out.completion.cost == 0.01 and out.messages == llm.calls[0][1]
    bad = asyncio.run(brainstorm(FakeLLM("nothing useful"), TASK, 3, PromptFlags()))
    assert not bad.ok and bad.ideas == [] and bad.error == "no ideas found"


def test_optimise_and_fix():
    llm = FakeLLM(reply("Here:", F + "python", SOLUTION, F), "I cannot do that.")
    good = asyncio.run(optimise(llm, TASK, PARENT, "use bf16", PromptFlags(), HW, HISTORY))
    assert good.ok and good.code == SOLUTION and good.role == "coa"
    failed = EvalResult("build_error", "ImportError", feedback="Traceback ...\nImportError: no triton")
    bad = asyncio.run(fix(llm, TASK, SOLUTION, failed, 1, PromptFlags()))
    assert bad.role == "efa" and bad.code is None and bad.error == "no code block"
    assert [role for role, _ in llm.calls] == ["coa", "efa"]
    assert "ImportError: no triton" in llm.calls[1][1][1]["content"]


def test_async_layer_tolerates_missing_text_but_not_llm_errors():
    class NoText:
        async def ask(self, role, messages):
            return SimpleNamespace(text=None)

    assert asyncio.run(optimise(NoText(), TASK, None, None, PromptFlags())).error == "no code block"

    class Broken:
        async def ask(self, role, messages):
            raise RuntimeError("budget spent")

    with pytest.raises(RuntimeError, match="budget spent"):
        asyncio.run(fix(Broken(), TASK, SOLUTION, EvalResult("timeout"), 1, PromptFlags()))
