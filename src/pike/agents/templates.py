"""Prompt templates: plain text files in ``prompts/`` filled with ``str.format_map``.

Conventions the templates follow:
- ``{name}`` is a placeholder; ``{{`` and ``}}`` are literal braces.
- A line holding nothing but one placeholder disappears when that value is empty, so optional
  sections leave no gap. Block sections are given with a trailing newline, which leaves one blank
  line after them; inline snippets are given without.
- ``sections.txt`` holds the small snippets (optional sections, status explanations), each starting
  at a line ``=== name ===``.
A researcher can point ``prompt_dir`` (``llm.prompt_dir``) at a directory holding any of these files
to override them; files it lacks come from the package.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

_SECTION_HEADER = re.compile(r"^=== (\w+) ===[ \t]*$", re.M)
_LONE_PLACEHOLDER = re.compile(r"^\{(\w+)\}[ \t]*\n", re.M)


class PromptError(LookupError):
    """A template is missing, malformed, or needs a value that was not given."""


class _Values(dict):
    def __init__(self, template: str, values: dict):
        super().__init__(values)
        self.template = template

    def __missing__(self, key):
        have = ", ".join(sorted(self)) or "nothing"
        raise PromptError(f"template {self.template!r} needs a value for {{{key}}}; given: {have}")


@lru_cache(maxsize=64)
def load(name: str, prompt_dir: str | None = None) -> str:
    """Text of template ``name`` (e.g. "coa.txt"), from ``prompt_dir`` if it has it, else the package."""
    if prompt_dir and (Path(prompt_dir) / name).is_file():
        return (Path(prompt_dir) / name).read_text(encoding="utf-8")
    resource = files(__package__) / "prompts" / name
    if not resource.is_file():
        raise PromptError(f"no prompt template {name!r}")
    return resource.read_text(encoding="utf-8")


def check_prompt_dir(prompt_dir: str) -> None:
    """ValueError unless ``prompt_dir`` is a directory whose files are all template names (a
    misspelt file would otherwise be ignored without a word)."""
    path = Path(prompt_dir)
    if not path.is_dir():
        raise ValueError(f"llm.prompt_dir: {prompt_dir} is not a directory")
    shipped = sorted(p.name for p in (files(__package__) / "prompts").iterdir() if p.name.endswith(".txt"))
    stray = sorted(p.name for p in path.iterdir() if p.name not in shipped and not p.name.startswith("."))
    if stray:
        raise ValueError(f"llm.prompt_dir: {', '.join(stray)} in {prompt_dir} override no template "
                         f"(the templates: {', '.join(shipped)})")


def fill(name: str, text: str, values: dict) -> str:
    """Fill ``text`` (the template called ``name``, for error messages) with ``values``."""
    # Drop lines that hold only an empty placeholder; a missing key is left to raise below.
    text = _LONE_PLACEHOLDER.sub(lambda m: "" if values.get(m.group(1), None) == "" else m.group(0), text)
    try:
        return text.format_map(_Values(name, values))
    except (ValueError, IndexError) as e:  # stray brace, positional "{}" in the template
        raise PromptError(f"template {name!r} is malformed: {e}") from None


def render(name: str, values: dict, prompt_dir: str | None = None) -> str:
    return fill(name, load(name, prompt_dir), values)


@lru_cache(maxsize=8)
def _sections(prompt_dir: str | None) -> dict[str, str]:
    parts = _SECTION_HEADER.split(load("sections.txt", prompt_dir))
    return {parts[i]: parts[i + 1].strip("\n") for i in range(1, len(parts) - 1, 2)}


def section(name: str, values: dict | None = None, prompt_dir: str | None = None) -> str:
    """Snippet ``name`` from sections.txt, filled, without a trailing newline."""
    snippets = _sections(prompt_dir)
    if name not in snippets:
        raise PromptError(f"sections.txt has no section {name!r}")
    return fill(f"sections.txt:{name}", snippets[name], values or {}).rstrip("\n")
