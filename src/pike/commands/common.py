"""Shared pieces of the command line: consoles, errors, task loading."""

from __future__ import annotations

import os

import typer
from rich.console import Console

from pike.commands import exit_codes
from pike.task import resolve_size  # noqa: F401 - the commands' size sets, where they import it from

console = Console()
err_console = Console(stderr=True)
for _c in (console, err_console):
    if not _c.is_terminal and not os.environ.get("COLUMNS"):  # logs and pipes: no wrapping at 80 columns
        _c.width = 160

STATUS_STYLE = {"ok": "bold green", "mismatch": "bold red", "rejected": "bold red", "build_error": "bold red", "runtime_error": "bold red", "timeout": "bold yellow", "suspect": "bold yellow"}


def sandbox_text(cfg) -> str:
    """What confines candidate code under EvalConfig ``cfg`` (fails with one line where
    ``eval.sandbox = bwrap`` cannot run)."""
    from pike.evaluate.confine import SandboxUnavailable
    from pike.evaluate.sandbox import sandbox_summary

    try:
        return sandbox_summary(cfg.sandbox, cfg.limits, cfg.device_type)["text"]
    except SandboxUnavailable as e:
        fail(str(e))


DEBUG = False  # pike --debug: tracebacks of the task's own code with its errors


def fail(msg: str, code: int = exit_codes.USAGE, detail: str = "") -> None:
    """One clear line (and ``detail``, a traceback, with --debug)."""
    err_console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)  # one line, whatever the width
    if detail:
        if DEBUG:
            err_console.print(detail, highlight=False, markup=False)
        else:
            err_console.print("(pike --debug ... shows the traceback)", highlight=False)
    raise typer.Exit(code)


def usable_device(spec: str) -> tuple[str, str]:
    """(device, how auto chose it) for ``--device``; one line and exit where it cannot run here."""
    from pike.evaluate.devices import device_problem, resolve_device

    device, how = resolve_device(spec)
    problem = device_problem(device)
    if problem:
        fail(problem)
    return device, how


def writable_dir(path, flag: str) -> None:
    """Fails with one line when directory ``path`` could not be made or written (nothing is made)."""
    from pathlib import Path

    path = Path(path)
    there = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not there.is_dir():
        fail(f"{flag} {path}: {there} is a file, not a directory: choose another path")
    if not os.access(there, os.W_OK | os.X_OK):
        fail(f"{flag} {path}: cannot write in {there} (read-only or not yours): choose a writable directory")


def writable_file(path, flag: str) -> None:
    """Fails with one line when file ``path`` could not be written."""
    writable_dir(path.parent, flag)
    if path.is_dir() or (path.exists() and not os.access(path, os.W_OK)):
        fail(f"{flag} {path}: {'a directory' if path.is_dir() else 'not writable'}: choose another file")


def load_one_task(target: str, size: str | None):
    from pike.suites import resolve
    from pike.task import TaskError, load_task

    try:
        path = resolve(target)
    except (ValueError, FileNotFoundError, TaskError) as e:
        fail(str(e))
    if path.is_dir():
        fail(f"{target} is a directory; `pike eval` takes one task file")
    try:
        return load_task(path, size=size)
    except TaskError as e:
        fail(str(e))


def load_tasks(target: str, size: str | None) -> list:
    """Every task a target names (file, directory, built-in name or suite); errors in place of tasks."""
    from pike.suites import resolve
    from pike.task import TaskError, discover

    try:
        path = resolve(target)
    except (ValueError, FileNotFoundError, TaskError) as e:
        fail(str(e))
    return discover(path, size=size)


def progress_bar():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err_console, transient=True)
