"""The three agents of the paper: IBA brainstorms ideas, COA writes a new solution from a parent and
an idea, EFA repairs a failed candidate. Prompt builders and reply parsers are pure functions; the
async layer only adds one LLM call and never raises on bad LLM text (the LLM's own errors, such as a
spent budget, do propagate)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

from pike.agents.context import Branch, Hardware, HistoryEntry, ParentInfo, PromptFlags, TaskContext
from pike.agents.extract import ExtractionError, extract_code
from pike.agents.ideas import parse_ideas
from pike.agents.templates import render, section
from pike.evaluate.result import EvalResult

FEEDBACK_LIMIT = 6000  # chars of evaluator output shown to the fixer
MESSAGE_LIMIT = 1500
PROFILE_LIMIT = 3000
HISTORY_LIMIT = 5  # best solutions listed in the optimiser prompt
IDEA_LIMIT = 300  # chars per idea in that list
TRIED_LIMIT = 8  # children of the parent listed (the latest)

__all__ = ["AgentReply", "brainstorm", "coa_messages", "directions", "efa_messages", "fix", "iba_messages",
           "optimise", "parse_ideas", "reask", "truncate_middle"]


class LLM(Protocol):
    async def ask(self, role: str, messages: list[dict]) -> Any: ...


@dataclass
class AgentReply:
    role: str  # "iba", "coa" or "efa"
    completion: Any = None  # what llm.ask returned (text, tokens, cost: the llm layer's business)
    code: str | None = None
    ideas: list[str] = field(default_factory=list)
    error: str | None = None  # why the reply is unusable, e.g. "no code block"
    messages: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def truncate_middle(text: str, limit: int = FEEDBACK_LIMIT, head: int = 1000) -> str:
    """Cut long output in the middle, on line boundaries. The tail holds the end of a traceback and
    the last compiler errors; the head holds the command and often the first (root) error."""
    text = (text or "").strip("\n")
    if len(text) <= limit:
        return text
    first = text[:head]
    first = first[: first.rfind("\n")] if "\n" in first else first
    last = text[-(limit - head):]
    last = last[last.find("\n") + 1:] if "\n" in last else last
    return f"{first}\n[... {len(text) - len(first) - len(last)} characters cut ...]\n{last}"


# ---- prompt builders ------------------------------------------------------------------------------

def _messages(task: TaskContext, user: str, prompt_dir: str | None) -> list[dict]:
    expertise = section(f"expertise_{task.kind}", {}, prompt_dir)
    system = render("system.txt", {"device": task.device, "expertise": expertise}, prompt_dir)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _block(name: str, values: dict, prompt_dir: str | None) -> str:
    """An optional section as it sits in a main template: followed by one blank line."""
    return section(name, values, prompt_dir) + "\n"


def _task_values(task: TaskContext, flags: PromptFlags, hardware: Hardware | None, prompt_dir) -> dict:
    facts = hardware.facts() if hardware and flags.gpu_facts else []
    return {
        "task_name": task.name,
        "device": task.device,
        "precision": task.precision,
        "reference": task.reference.strip("\n"),
        "gpu_facts": _block("gpu_facts", {"facts": "\n".join(facts)}, prompt_dir) if facts else "",
        "requirements": section("requirements", {"code_forms": section(f"code_forms_{task.kind}", {}, prompt_dir)},
                                prompt_dir),
        "idea_examples": section(f"idea_examples_{task.kind}", {}, prompt_dir),
        # The inputs timed and checked are a fact of the task, shown whatever the flags.
        "measured": (_measured_section(task, prompt_dir) if flags.parent_speedups and task.eager_ms
                     else _block("measured_inputs", {"inputs": task.inputs}, prompt_dir) if task.inputs else ""),
        "profile": _profile_section(task.profile, "profile_reference", prompt_dir) if flags.profile else "",
    }


def _measured_section(task: TaskContext, d: str | None) -> str:
    compile_line = section("measured_compile", {"ms": _ms(task.compile_ms)}, d) if task.compile_ms else ""
    how = section("measured_paired" if task.paired and task.compile_ms else "measured_apart", {}, d)
    inputs = section("measured_inputs", {"inputs": task.inputs}, d) if task.inputs else ""
    return _block("measured", {"eager": _ms(task.eager_ms), "compile": compile_line, "how": how, "inputs": inputs}, d)


def _profile_section(profile: str | None, name: str, d: str | None) -> str:
    if not profile or not profile.strip():
        return ""
    return _block(name, {"profile": truncate_middle(profile, PROFILE_LIMIT, head=PROFILE_LIMIT - 500)}, d)


def _ms(ms: float) -> str:
    return f"{ms:.4g} ms"


def iba_messages(task: TaskContext, n: int, flags: PromptFlags, hardware: Hardware | None = None,
                 *, prompt_dir: str | None = None) -> list[dict]:
    values = _task_values(task, flags, hardware, prompt_dir) | {"n": n}
    return _messages(task, render("iba.txt", values, prompt_dir), prompt_dir)


def coa_messages(task: TaskContext, parent: ParentInfo | None, idea: str | None, flags: PromptFlags,
                 hardware: Hardware | None = None,
                 history: Iterable[HistoryEntry | tuple[float, str]] | None = None,
                 *, branch: Branch | None = None, prompt_dir: str | None = None) -> list[dict]:
    """Optimiser prompt. ``parent=None`` optimises the reference directly; ``idea=None`` lets the
    model choose the change; ``branch`` says what the sibling queries try."""
    d = prompt_dir
    values = _task_values(task, flags, hardware, d) | {
        "parent": _parent_section(parent, d) if parent else _block("no_parent", {}, d),
        "parent_speedups": "", "best_history": "", "parent_tried": "",
        "idea": idea.strip() if idea and idea.strip() else section("no_idea", {}, d),
        "branch": _branch_section(branch, idea, d) if branch else "",
    }
    if parent and flags.parent_speedups and (parent.speedup_vs_eager or parent.speedup_vs_compile):
        values["parent_speedups"] = _block("parent_speedups", {
            "eager": _x(parent.speedup_vs_eager), "compile": _x(parent.speedup_vs_compile)}, d)
    if parent and flags.profile:  # the parent's own profile instead of the reference's
        values["profile"] = _profile_section(parent.profile, "profile", d)
    if parent and flags.best_history and parent.tried:
        lines = [f"- {_one_line(i) if i else section('branch_own_choice', {}, d)}: {outcome}" for i, outcome in parent.tried]
        values["parent_tried"] = _block("parent_tried", {"entries": "\n".join(lines[-TRIED_LIMIT:])}, d)
    entries = _history_lines(history) if flags.best_history and history else []
    if entries:
        values["best_history"] = _block("best_history", {"entries": "\n".join(entries)}, d)
    return _messages(task, render("coa.txt", values, d), d)


def _parent_section(parent: ParentInfo, d: str | None) -> str:
    return _block("parent", {
        "code": parent.code.strip("\n"),
        "origin": section("parent_origin", {"idea": _one_line(parent.idea)}, d) if parent.idea else "",
        "measured": (section("parent_measured", {"runtime": _ms(parent.runtime_ms)}, d)
                     if parent.runtime_ms is not None else ""),
    }, d)


def _branch_section(branch: Branch, idea: str | None, d: str | None) -> str:
    def what(other: str | None) -> str:
        if other is None:
            return section("branch_own_choice", {}, d)
        return section("branch_same_idea", {}, d) if other == idea else _one_line(other)

    others = "\n".join(f"- branch {k}: {what(i)}" for k, i in branch.others)
    return _block("branch", {"k": branch.k, "n": branch.n, "others": others}, d)


def _history_lines(history: Iterable[HistoryEntry | tuple[float, str]]) -> list[str]:
    items = [h if isinstance(h, HistoryEntry) else HistoryEntry(*h) for h in history]
    items.sort(key=lambda h: h.speedup, reverse=True)
    return [f"{i}. {_x(h.speedup)}: {_one_line(h.idea, IDEA_LIMIT)}"
            for i, h in enumerate(items[:HISTORY_LIMIT], 1)]


def efa_messages(task: TaskContext, code: str, result: EvalResult, attempt: int, flags: PromptFlags,
                 hardware: Hardware | None = None, *, prompt_dir: str | None = None) -> list[dict]:
    """Fixer prompt: the failing code plus what the evaluator saw (status, message, feedback tail)."""
    d = prompt_dir
    errors = ", ".join(f"{label} {v:.3g}" for label, v in
                       (("max abs", result.max_abs_err), ("max rel", result.max_rel_err)) if v is not None)
    values = _task_values(task, flags, hardware, d) | {
        "code": code.strip("\n"),
        "status": result.status,
        "status_meaning": section(f"status_{result.status}", {}, d),
        "stage": section("stage", {"stage": result.stage}, d) if result.stage else "",
        "message": truncate_middle(result.message, MESSAGE_LIMIT, head=MESSAGE_LIMIT // 2) or "(none)",
        "errors": section("errors", {"errors": errors}, d) if errors else "",
        "tags": section("tags", {"tags": ", ".join(result.tags)}, d) if result.tags else "",
        "feedback": truncate_middle(result.feedback) or "(no output was captured)",
        "attempt": attempt,
        "retry": section("retry", {}, d) if attempt > 1 else "",
    }
    return _messages(task, render("efa.txt", values, d), d)


def directions(kind: str, prompt_dir: str | None = None) -> list[str]:
    """Broad optimisation directions for a device kind ("cuda" or "cpu"), one per sibling branch
    that no brainstormed idea is left for."""
    text = section(f"directions_{kind}", {}, prompt_dir)
    return [line.lstrip("- ").strip() for line in text.splitlines() if line.strip()]


def _x(speedup: float | None) -> str:
    return f"{speedup:.2f}x" if speedup else "unknown"


def _one_line(text: str | None, limit: int = IDEA_LIMIT) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


# ---- async layer --------------------------------------------------------------------------------

def _text(completion: Any) -> str:
    text = getattr(completion, "text", None)
    return text if isinstance(text, str) else ""


async def brainstorm(llm: LLM, task: TaskContext, n: int, flags: PromptFlags,
                     hardware: Hardware | None = None, *, prompt_dir: str | None = None) -> AgentReply:
    return await _ideas_reply(llm, iba_messages(task, n, flags, hardware, prompt_dir=prompt_dir), n)


async def _ideas_reply(llm: LLM, messages: list[dict], n: int) -> AgentReply:
    completion = await llm.ask("iba", messages)
    ideas = parse_ideas(_text(completion), n)
    return AgentReply("iba", completion, ideas=ideas, error=None if ideas else "no ideas found",
                      messages=messages)


async def _code_reply(llm: LLM, role: str, messages: list[dict]) -> AgentReply:
    completion = await llm.ask(role, messages)
    try:
        return AgentReply(role, completion, code=extract_code(_text(completion)), messages=messages)
    except ExtractionError as e:
        return AgentReply(role, completion, error=str(e), messages=messages)


async def reask(llm: LLM, first: AgentReply, *, n: int = 0, prompt_dir: str | None = None) -> AgentReply:
    """The same question once more, after a reply with nothing usable in it: the conversation so far
    plus a reminder of the answer's format that says what was wrong (``n``: ideas wanted, for IBA)."""
    said = _text(first.completion).strip() or "(an empty reply)"
    reminder = section("reminder_ideas" if first.role == "iba" else "reminder_code",
                       {"reason": first.error or "nothing usable", "n": n}, prompt_dir)
    messages = [*first.messages, {"role": "assistant", "content": said}, {"role": "user", "content": reminder}]
    if first.role == "iba":
        return await _ideas_reply(llm, messages, n)
    return await _code_reply(llm, first.role, messages)


async def optimise(llm: LLM, task: TaskContext, parent: ParentInfo | None, idea: str | None,
                   flags: PromptFlags, hardware: Hardware | None = None,
                   history: Iterable[HistoryEntry | tuple[float, str]] | None = None,
                   *, branch: Branch | None = None, prompt_dir: str | None = None) -> AgentReply:
    messages = coa_messages(task, parent, idea, flags, hardware, history, branch=branch, prompt_dir=prompt_dir)
    return await _code_reply(llm, "coa", messages)


async def fix(llm: LLM, task: TaskContext, code: str, result: EvalResult, attempt: int,
              flags: PromptFlags, hardware: Hardware | None = None,
              *, prompt_dir: str | None = None) -> AgentReply:
    messages = efa_messages(task, code, result, attempt, flags, hardware, prompt_dir=prompt_dir)
    return await _code_reply(llm, "efa", messages)
