"""What the agents are told: the task, the target hardware, the parent, and which extras are on."""

from __future__ import annotations

from dataclasses import dataclass, field

from pike.agents.hardware import Hardware
from pike.evaluate.result import EvalResult

__all__ = ["Branch", "Hardware", "HistoryEntry", "ParentInfo", "PromptFlags", "TaskContext"]


@dataclass
class TaskContext:
    name: str
    reference: str  # source of the task file (Model, get_inputs, get_init_inputs)
    device: str = "cuda"  # free text, e.g. "NVIDIA H100 80GB HBM3, CUDA 12.4, torch 2.5"
    precision: str = "fp32; lower precision allowed within tolerance 1e-2"
    kind: str = "cuda"  # "cuda" or "cpu": the system prompt and the requirements follow it
    policy_measured: bool = False  # ``precision`` read from the task's reference (its dtypes and tolerance)
    # Measured on the target device (None: not measured)
    eager_ms: float | None = None
    compile_ms: float | None = None  # torch.compile, default mode
    paired: bool = False  # eager and compile timed side by side (interleaved, one process)
    inputs: str | None = None  # the shapes they were timed on, e.g. "[16, 48] (size set 'small')"
    profile: str | None = None  # the reference's profile, where the first prompts look for the time


@dataclass
class PromptFlags:
    """Extras beyond the paper's prompts; all False reproduces the paper's setting."""

    gpu_facts: bool = False
    parent_speedups: bool = False
    profile: bool = False
    best_history: bool = False

    @classmethod
    def all(cls) -> "PromptFlags":
        return cls(True, True, True, True)


@dataclass
class ParentInfo:
    code: str
    runtime_ms: float | None = None
    speedup_vs_eager: float | None = None
    speedup_vs_compile: float | None = None
    profile: str | None = None  # top kernels by time, as text
    idea: str | None = None  # the idea whose application produced this code
    tried: list[tuple[str | None, str]] = field(default_factory=list)  # (idea, outcome) of its children so far

    @classmethod
    def from_result(cls, code: str, result: EvalResult, idea: str | None = None,
                    compile_ms: float | None = None, **extra) -> "ParentInfo":
        """Parent from an evaluation; ``compile_ms`` is the torch.compile baseline to compare with."""
        runtime = result.runtime_ms
        vs_compile = compile_ms / runtime if compile_ms and runtime else None
        return cls(code, runtime, result.speedup_vs_eager, vs_compile, idea=idea, **extra)


@dataclass
class Branch:
    """Where a COA query sits among its siblings: the queries of one phase from one parent."""

    k: int  # this branch, from 1
    n: int
    others: list[tuple[int, str | None]]  # (branch, idea) of the others; None: the model's own choice


@dataclass
class HistoryEntry:
    """One of the best solutions so far, as the optimiser is shown it."""

    speedup: float  # vs eager
    idea: str
