"""Pull the solution file out of an LLM reply.

Replies are messy: prose around the code, several fenced blocks (the reference repeated, a C++ source
shown on its own, a solution split into "kernels" and "module" blocks), an unterminated fence when the
model ran out of tokens, or no fences at all. The rule that decides is semantic, not typographic: the
answer is Python that parses and defines a top-level ``ModelNew`` (else ``Model``).
"""

from __future__ import annotations

import ast
import builtins
import re
import textwrap
from dataclasses import dataclass

from pike.astparse import parse

TARGETS = ("ModelNew", "Model")  # in order of preference

_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)")
_CLASS_LINE = re.compile(r"^class\s+(?:ModelNew|Model)\b", re.M)
# Lines that can begin a bare (unfenced) solution; prose rarely starts this way and still parses.
_CODE_START = re.compile(
    r"^(?:import |from |class |def |async def |@|#|\"{3}|'{3}|[A-Za-z_][\w.]*\s*(?::[^=]*)?=)"
)
_PY_LANGS = {"", "python", "py", "python3", "py3"}
_MODULE_NAMES = {"__name__", "__file__", "__doc__", "__spec__", "__package__", "__loader__", "__builtins__"}
_KNOWN = set(dir(builtins)) | _MODULE_NAMES
_MAX_PARSES = 300  # bounds the bare-text scan on long prose-heavy replies


class ExtractionError(ValueError):
    """The reply holds no usable solution; ``str(err)`` is the short reason the engine records."""


@dataclass
class _Block:
    index: int
    lang: str
    text: str
    tree: ast.Module | None
    error: str = ""  # "line N: msg" when the block does not parse


def extract_code(text: str) -> str:
    """Return the solution source in ``text`` or raise ExtractionError."""
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n")
    raw, outside = _fenced(text)
    blocks = [_block(i, lang, body) for i, (lang, body) in enumerate(raw) if body.strip()]
    code = _choose(blocks) or _choose(_bare_blocks(outside))
    if code:
        return code
    raise ExtractionError(_reason(blocks, outside))


def _fenced(text: str) -> tuple[list[tuple[str, str]], str]:
    """Split into fenced blocks (lang, body) and the text outside them. A fence left open runs to EOF."""
    blocks, outside, lines, i = [], [], text.split("\n"), 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if not m:
            outside.append(lines[i])
            i += 1
            continue
        fence, body = m.group(1), []
        i += 1
        while i < len(lines) and not _closes(lines[i], fence):
            body.append(lines[i])
            i += 1
        blocks.append((m.group(2).lower(), "\n".join(body)))
        outside.append("")  # keep a line break where the block was, so prose does not merge
        i += 1
    return blocks, "\n".join(outside)


def _closes(line: str, fence: str) -> bool:
    s = line.strip()
    return len(s) >= len(fence) and set(s) == {fence[0]}


def _block(index: int, lang: str, body: str) -> _Block:
    text = textwrap.dedent(body).strip("\n") + "\n"
    tree, error, _ = _parse(text)
    return _Block(index, lang, text, tree, error)


def _parse(text: str) -> tuple[ast.Module | None, str, int]:
    """(tree, "", 0) or (None, "line N: msg", N)."""
    try:
        return parse(text), "", 0
    except SyntaxError as e:
        return None, f"line {e.lineno}: {e.msg}", e.lineno or 1
    except ValueError as e:  # e.g. null bytes in the source
        return None, str(e), 1


def _defines(tree: ast.Module) -> set[str]:
    """Names in TARGETS bound at top level (a class, or an alias such as ``ModelNew = Fast``)."""
    found = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            found.add(node.name)
        elif isinstance(node, ast.Assign):
            found.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return found & set(TARGETS)


def _names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(bound, used) names anywhere in the tree. Scope-blind on purpose: this only has to tell
    whether a block leans on names that another block of the same reply provides."""
    bound, used = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            bound.add(node.name)
    return bound, used


def _missing(tree: ast.Module) -> set[str]:
    bound, used = _names(tree)
    if "*" in bound:  # star import: cannot know what it provides, assume everything
        return set()
    return used - bound - _KNOWN


def _choose(blocks: list[_Block]) -> str | None:
    """The best complete candidate: prefer ModelNew over Model, then a candidate with no
    undefined names (after joining helper blocks), then the last such; failing that the longest."""
    parsed = [b for b in blocks if b.tree is not None]
    for target in TARGETS:
        options = []
        for b in parsed:
            if target in _defines(b.tree):
                code, missing = _with_helpers(b, parsed, target)
                options.append((not missing, b.index if not missing else len(code), code))
        if options:
            return max(options)[2]
    return None


def _with_helpers(main: _Block, parsed: list[_Block], target: str) -> tuple[str, set[str]]:
    """Join ``main`` with the blocks that bind the names it uses but lacks (imports, kernels in an
    earlier block), repeating for the helpers' own needs; keep the join only if it still parses."""
    chosen = {main.index}
    code, missing = main.text, _missing(main.tree)
    while missing:
        helpers = {
            b.index for b in parsed
            if b.index not in chosen and target not in _defines(b.tree) and _names(b.tree)[0] & missing
        }
        if not helpers:
            break
        joined = "\n\n".join(b.text.rstrip("\n") for b in parsed if b.index in chosen | helpers) + "\n"
        tree = _parse(joined)[0]  # can fail, e.g. a `from __future__` import that is no longer first
        if tree is None or len(_missing(tree)) >= len(missing):
            break
        chosen |= helpers
        code, missing = joined, _missing(tree)
    return code, missing


def _bare_blocks(text: str) -> list[_Block]:
    """Cut unfenced text into the longest spans that parse. From each line that can start code, the
    span runs to the end and is cut just before the line a SyntaxError names until it parses; the
    spans are then chosen from (and joined) like fenced blocks, so prose between kernels and the
    module does not lose either."""
    lines, blocks, i, budget = text.split("\n"), [], 0, _MAX_PARSES
    while i < len(lines) and budget > 0:
        if not _CODE_START.match(lines[i]):
            i += 1
            continue
        end, tree = len(lines), None
        while end > i and budget > 0:
            budget -= 1
            chunk = "\n".join(lines[i:end]).strip("\n") + "\n"
            tree, _, lineno = _parse(chunk)
            if tree is not None:
                break
            end = min(i + lineno - 1, end - 1)  # cut just before the offending line
        if tree is not None and end > i:
            blocks.append(_Block(len(blocks), "", chunk, tree))
            i = end
        else:
            i += 1
    return blocks


def _reason(blocks: list[_Block], outside: str) -> str:
    """Short, specific reason for the engine's record (and for the next prompt)."""
    broken = [b for b in blocks if b.tree is None and b.lang in _PY_LANGS]
    answer = [b for b in broken if _CLASS_LINE.search(b.text)]
    if answer:  # the block that looks like the answer says the most about what went wrong
        return f"code does not parse: {answer[-1].error}"
    if any(b.tree is not None for b in blocks):
        return "defines neither ModelNew nor Model"
    if broken:
        return f"code does not parse: {broken[-1].error}"
    if _CLASS_LINE.search(outside):
        lines = outside.split("\n")
        start = next(i for i, line in enumerate(lines) if _CODE_START.match(line))
        error = _parse("\n".join(lines[start:]))[1]
        return f"code does not parse: {error}" if error else "defines neither ModelNew nor Model"
    if any(b.tree.body for b in _bare_blocks(outside)):  # code, but not a solution
        return "defines neither ModelNew nor Model"
    return "no code block"
