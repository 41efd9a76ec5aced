"""Tasks in the KernelBench format, and size sets.

A task file defines ``class Model(nn.Module)``, ``get_inputs()`` and ``get_init_inputs()``. It may
define a literal module-level ``SIZES = {"small": {"batch": 2, ...}, ...}``: each size set replaces the
right-hand side of the named top-level constants, so constants derived from them follow. The alternate
shape check of a size set ``X`` uses the set ``X_alt`` (the default size's alternate is ``alt``).

Loading here is static (parse and inspect; no task code runs): the orchestrator never executes task or
candidate code in its own process. What needs execution (``get_inputs`` raising, wrong types) is found
by the reference job, which runs in a sandboxed child and reports a :class:`TaskError`.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

from pike.astparse import parse

REQUIRED = ("Model", "get_inputs", "get_init_inputs")


class TaskError(Exception):
    """A task file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str, detail: str = ""):
        self.path = str(path)
        self.problem = problem
        self.detail = detail  # a traceback from the task's own code, shown with --debug
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class Task:
    name: str
    path: Path
    source: str
    sizes: dict = field(default_factory=dict)
    size: str | None = None  # applied size set; None = the constants as written
    doc: str = ""

    @property
    def overrides(self) -> dict:
        return dict(self.sizes.get(self.size, {})) if self.size else {}

    @property
    def resolved_source(self) -> str:
        """The source with the size set's constants substituted."""
        return apply_overrides(self.source, self.overrides, self.path)

    @property
    def alt_size(self) -> str | None:
        """The size set used to check that a solution is not hard-wired to one shape."""
        name = f"{self.size}_alt" if self.size else "alt"
        return name if name in self.sizes else None

    def with_size(self, size: str | None) -> "Task":
        if size is not None and size not in self.sizes:
            raise TaskError(self.path, f"no size set {size!r} (has: {', '.join(self.sizes) or 'none'})")
        return replace(self, size=size)

    def fit_size(self, size: str | None) -> "Task":
        """Like with_size, but a task without that size set keeps its written constants."""
        return self.with_size(size if size in self.sizes else None)

    @property
    def key(self) -> str:
        """Content hash of what runs: resolved source only (the file name does not matter)."""
        return hashlib.sha256(self.resolved_source.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return f"{self.name}[{self.size}]" if self.size else self.name


def _module_level(body: list[ast.stmt]):
    """Statements that run at import, also inside ``if``/``try``/``with`` blocks (``if TYPE_CHECKING:``,
    ``try: import x except ImportError:``), not inside functions or classes."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.With, ast.AsyncWith)):
            yield from _module_level(node.body + getattr(node, "orelse", []))
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            yield from _module_level(node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body])


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in _module_level(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    names.add(t.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.add((alias.asname or alias.name).split(".")[0])
    return names


def _constant_assignments(tree: ast.Module) -> dict[str, ast.expr]:
    """Top-level ``NAME = value`` statements (the last one wins, as at run time)."""
    out: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            out[node.target.id] = node.value
    return out


def apply_overrides(source: str, overrides: dict, path: str | Path = "<source>") -> str:
    """Replace the right-hand side of top-level constants named in ``overrides``.

    Text is edited in place (comments and line numbers survive, which Triton's source inspection and
    tracebacks rely on). A name that the source does not assign at top level is left alone: solution
    files need not define every constant of their task.
    """
    if not overrides:
        return source
    tree = parse(source, filename=str(path))
    consts = _constant_assignments(tree)
    lines = source.splitlines(keepends=True)
    # Edit from the bottom so earlier offsets stay valid.
    edits = sorted(
        ((consts[n], v) for n, v in overrides.items() if n in consts),
        key=lambda e: (e[0].lineno, e[0].col_offset),
        reverse=True,
    )
    for node, value in edits:
        start = _offset(lines, node.lineno, node.col_offset)
        end = _offset(lines, node.end_lineno, node.end_col_offset)
        text = "".join(lines)
        text = text[:start] + repr(value) + text[end:]
        lines = text.splitlines(keepends=True)
    return "".join(lines)


def _offset(lines: list[str], lineno: int, col: int) -> int:
    # ast column offsets are in UTF-8 bytes.
    prefix = lines[lineno - 1].encode()[:col].decode(errors="ignore")
    return sum(len(line) for line in lines[: lineno - 1]) + len(prefix)


def parse_task_source(source: str, path: str | Path) -> tuple[ast.Module, dict, str]:
    """Static checks of a task file; returns (tree, SIZES, docstring)."""
    try:
        tree = parse(source, filename=str(path))
    except SyntaxError as e:
        raise TaskError(path, f"syntax error at line {e.lineno}: {e.msg}") from None
    names = _top_level_names(tree)
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise TaskError(path, f"missing {', '.join(missing)} (a task defines class Model, get_inputs() and get_init_inputs())")
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in ("get_inputs", "get_init_inputs"):
            if node.args.args and len(node.args.defaults) < len(node.args.args):
                raise TaskError(path, f"{node.name}() must take no required arguments")
    sizes: dict = {}
    consts = _constant_assignments(tree)
    if "SIZES" in consts:
        try:
            sizes = ast.literal_eval(consts["SIZES"])
        except ValueError:
            raise TaskError(path, "SIZES must be a literal dict of dicts, e.g. {'small': {'batch': 2}}") from None
        if not isinstance(sizes, dict) or not all(isinstance(v, dict) for v in sizes.values()):
            raise TaskError(path, "SIZES must map size names to dicts of constant overrides")
        for size_name, over in sizes.items():
            unknown = [k for k in over if k not in consts]
            if unknown:
                raise TaskError(path, f"SIZES[{size_name!r}] sets {', '.join(unknown)}, which the file does not assign at top level")
    return tree, sizes, ast.get_docstring(tree) or ""


def load_task(path: str | Path, size: str | None = None, name: str | None = None) -> Task:
    """Load and statically validate a task file. ``size`` falls back to the written constants when the
    task has no such size set (KernelBench files have none)."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(path, "no such file")
    try:
        source = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise TaskError(path, f"cannot read: {e}") from None
    _, sizes, doc = parse_task_source(source, path)
    task = Task(name=name or path.stem, path=path.resolve(), source=source, sizes=sizes, doc=doc)
    return task.fit_size(size)


def discover(target: str | Path, size: str | None = None) -> list[Task | TaskError]:
    """A task file, or every task file of a directory (sorted; files starting with '_' are skipped).

    Errors are returned in place of tasks, so a directory run goes on with the others.
    """
    target = Path(target)
    if target.is_dir():
        files = sorted(p for p in target.glob("*.py") if not p.name.startswith("_"))
        if not files:
            return [TaskError(target, "directory holds no task files (*.py)")]
    else:
        files = [target]
    out: list[Task | TaskError] = []
    for f in files:
        try:
            out.append(load_task(f, size=size))
        except TaskError as e:
            out.append(e)
    return out


def resolve_size(size: str, device: str) -> str | None:
    """``auto``: the "small" size set on CPU (where a task has one), the written constants on GPU."""
    if size == "auto":
        return "small" if not device.startswith("cuda") else None
    return None if size in ("", "default", "full") else size
