"""LLM agents (IBA brainstorm, COA optimise, EFA fix): prompts, reply parsing, and one-call wrappers."""

from pike.agents.agents import (
    AgentReply,
    brainstorm,
    coa_messages,
    directions,
    efa_messages,
    fix,
    iba_messages,
    optimise,
    reask,
    truncate_middle,
)
from pike.agents.context import Branch, Hardware, HistoryEntry, ParentInfo, PromptFlags, TaskContext
from pike.agents.extract import ExtractionError, extract_code
from pike.agents.ideas import parse_ideas
from pike.agents.templates import PromptError

__all__ = [
    "AgentReply", "Branch", "ExtractionError", "Hardware", "HistoryEntry", "ParentInfo", "PromptError",
    "PromptFlags", "TaskContext", "brainstorm", "coa_messages", "directions", "efa_messages", "extract_code", "fix",
    "iba_messages", "optimise", "parse_ideas", "reask", "truncate_middle",
]
