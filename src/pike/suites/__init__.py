"""Task suites: the built-in suite shipped in this package, and resolution of task targets.

A *target* says what to run: a task file, a directory of task files (any directory is a suite, e.g.
a KernelBench checkout), ``builtin`` (the suite in ``suites/builtin/``) or the name of one built-in
task (``mlp_deep_narrow``). :func:`resolve` turns a target into a path; :func:`pike.task.discover`
turns that path into tasks.

:func:`summarize` describes a task for listings (tier, what it models, parameter count, input
shapes). Unlike the rest of the orchestrator it runs task code in this process: the model and its
inputs are built on the ``meta`` device, so no real memory is allocated at GPU sizes. Task files are
the user's own code, so that is acceptable for a listing, but every failure is caught and reported
per task.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import itertools
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

from pike.astparse import parse
from pike.task import Task, TaskError, discover

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
BUILTIN_SUITE = "builtin"
TIERS = ("classic", "modern")
FALLBACK_SIZE = "small"  # real build used for a summary when the meta-device build fails


def builtin_names() -> list[str]:
    """Names of the built-in tasks, sorted."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.py") if not p.name.startswith("_"))


def builtin_tasks(size: str | None = None) -> list[Task]:
    """Every built-in task, at size set ``size`` where the task has it (written constants otherwise)."""
    tasks: list[Task] = []
    for item in discover(BUILTIN_DIR, size=size):
        if isinstance(item, TaskError):  # a broken built-in file is a packaging bug: say so loudly
            raise item
        tasks.append(item)
    return tasks


def resolve(target: str | Path) -> Path:
    """The path a target names: an existing file or directory, the built-in suite, or a built-in task.

    Existing paths win over names, so a local file or folder is never shadowed by the built-in suite.
    Raises :class:`TaskError` with the accepted forms (and near matches) when nothing fits.
    """
    text = str(target)
    path = Path(text).expanduser()
    if path.exists():
        return path.resolve()
    if text == BUILTIN_SUITE:
        return BUILTIN_DIR
    stem = text[:-3] if text.endswith(".py") else text
    names = builtin_names()
    if "/" not in stem and "\\" not in stem and stem in names:
        return BUILTIN_DIR / f"{stem}.py"
    hint = difflib.get_close_matches(stem, names, n=3)
    suggestion = f"; did you mean {', '.join(hint)}?" if hint else f" (`pike suite list` shows the {len(names)} built-in tasks)"
    raise TaskError(
        text,
        f"not a task file, a directory of task files, {BUILTIN_SUITE!r} or the name of a built-in task{suggestion}",
    )


# --- importing task code (listing only; evaluation imports it in sandboxed children) ---------------

_module_ids = itertools.count()


def import_task(task: Task) -> ModuleType:
    """Import a task's resolved source (its size set applied) as a fresh module.

    The source is written to a temporary file so that code which inspects its own source (Triton's
    ``@triton.jit``) works; the module is not left in ``sys.modules``.
    """
    name = f"_pike_task_{task.key}_{next(_module_ids)}"
    with tempfile.TemporaryDirectory(prefix="pike-task-") as tmp:
        file = Path(tmp) / f"{task.path.stem}.py"
        file.write_text(task.resolved_source)
        spec = importlib.util.spec_from_file_location(name, file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look the module up while it executes
        try:
            spec.loader.exec_module(module)
        finally:
            sys.modules.pop(name, None)
    return module


def build(task: Task, device: str | None = None, seed: int = 0):
    """``(module, model, inputs)`` for a task: model built right after ``torch.manual_seed(seed)``,
    inputs drawn after ``torch.manual_seed(seed + 1)``; under ``with torch.device(device)`` if given."""
    import contextlib

    import torch

    module = import_task(task)
    scope = torch.device(device) if device else contextlib.nullcontext()
    with scope:
        torch.manual_seed(seed)
        model = module.Model(*module.get_init_inputs())
        torch.manual_seed(seed + 1)
        inputs = list(module.get_inputs())
    return module, model, inputs


# --- summaries --------------------------------------------------------------------------------------

_SHORT_DTYPES = {
    "float32": "f32", "float64": "f64", "float16": "f16", "bfloat16": "bf16",
    "int64": "i64", "int32": "i32", "int16": "i16", "int8": "i8", "uint8": "u8", "bool": "bool",
}


@dataclass
class TaskSummary:
    name: str
    path: str
    tier: str | None = None
    title: str = ""  # first docstring line: what the task models
    params: int | None = None
    inputs: list[str] = field(default_factory=list)  # e.g. "bf16[4, 1024, 4096]", "int 7"
    sizes: list[str] = field(default_factory=list)
    built: str = ""  # "meta" (written constants, no memory) or the size set of a real fallback build
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def describe_value(value) -> str:
    """A short description of one input: ``f32[8, 1024]``, ``list[f32[2], f32[3]]``, ``int 7``."""
    import torch

    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        return f"{_SHORT_DTYPES.get(dtype, dtype)}[{', '.join(str(d) for d in value.shape)}]"
    if isinstance(value, (list, tuple)):
        kind = "list" if isinstance(value, list) else "tuple"
        return f"{kind}[{', '.join(describe_value(v) for v in value)}]"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 24 else text[:21] + '...'}"


def _static_tier(task: Task) -> str | None:
    """The module-level ``TIER`` literal, read without running the file."""
    for node in parse(task.source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "TIER" for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return None
            return value if isinstance(value, str) else None
    return None


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def summarize(task: Task | TaskError) -> TaskSummary:
    """One listing row for a task (or for a file that failed to load). Never raises on task errors."""
    if isinstance(task, TaskError):
        return TaskSummary(name=Path(task.path).stem, path=task.path, error=task.problem)
    row = TaskSummary(
        name=task.name,
        path=str(task.path),
        tier=_static_tier(task),
        title=task.doc.strip().splitlines()[0] if task.doc.strip() else "",
        sizes=list(task.sizes),
    )
    try:
        _, model, inputs = build(task, device="meta")
        row.built = "meta"
    except Exception as meta_error:  # noqa: BLE001 - task code may raise anything
        small = task.fit_size(FALLBACK_SIZE)
        try:
            _, model, inputs = build(small)
            row.built = small.size or "written constants"
        except Exception as e:  # noqa: BLE001
            row.error = f"meta build: {_error_text(meta_error)}; real build: {_error_text(e)}"
            return row
    try:
        row.params = sum(p.numel() for p in model.parameters())
        row.inputs = [describe_value(v) for v in inputs]
    except Exception as e:  # noqa: BLE001 - a Model that is not an nn.Module, odd inputs
        row.error = _error_text(e)
    return row


def summarize_target(target: str | Path, size: str | None = None) -> list[TaskSummary]:
    """Rows for every task a target names (see :func:`resolve`)."""
    return [summarize(item) for item in discover(resolve(target), size=size)]
