"""Where an evaluation child imports the task's own code from, as Python does for a script.

``python my_task.py`` puts the script's directory first on ``sys.path``; a task file that imports a
sibling module (``from blocks import Block``) or the user's package therefore works there, and must
work in every child that imports the task or a candidate of it (reference, candidates, builds,
re-timing), without ``PYTHONPATH``. A child gets, in this order: the task's directory, the root of
the package it sits in (a directory chain holding ``__init__.py``: its relative imports, ``from
.blocks import Block``, resolve against that package), the orchestrator's working directory, and the
orchestrator's own ``sys.path`` (for ``pike.optimize``: the caller's, where its model classes are
importable). Nothing here imports torch.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def task_package(task_path: Path) -> tuple[str | None, Path]:
    """(the dotted package of the task file's directory or None, the directory its top package is in)."""
    d = Path(task_path).resolve().parent
    parts: list[str] = []
    while (d / "__init__.py").is_file() and d.name.isidentifier():
        parts.insert(0, d.name)
        d = d.parent
    return (".".join(parts) or None), d


def task_imports(task_path: Path | None) -> dict:
    """The ``imports`` entry of a child's job: ``sys_path`` (entries to put first) and ``package``."""
    entries: list[str] = []
    package = None
    if task_path is not None:
        entries.append(str(Path(task_path).resolve().parent))
        package, root = task_package(task_path)
        if package:
            entries.append(str(root))
    entries.append(os.getcwd())
    entries += [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
    seen: set[str] = set()
    kept = [p for p in entries if not (p in seen or seen.add(p)) and os.path.isdir(p)]
    return {"sys_path": kept, "package": package}


def task_dirs(task_path: Path | None) -> list[str]:
    """The directories a task's own imports need: its directory and its package's root (a sandboxed
    job sees them read-only where they would be hidden)."""
    if task_path is None:
        return []
    package, root = task_package(task_path)
    return [str(Path(task_path).resolve().parent)] + ([str(root)] if package else [])


def apply_imports(imports: dict | None) -> None:
    """In the child, before any task or candidate code is imported."""
    for p in reversed((imports or {}).get("sys_path", [])):
        if p not in sys.path:
            sys.path.insert(0, p)
