"""The Python API: ``pike.optimize(model, example_inputs)`` on a live module, ``pike.load(run, model)``.

``optimize`` turns the module into a task file (``pike.modeltask``: the module saved whole, its
trained weights included, beside a generated task whose ``Model`` wraps it), runs the same search as
``pike optimize`` on it, and returns the winner applied to the caller's instance. The result's
``module`` is the winning solution's ``ModelNew`` built around that instance: called like it, with
its outputs (within the evaluator's tolerance) and its weights (shared, not copied); it is a wrapper
(``result.module.model is model``), as ``torch.compile`` returns one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pike.modeltask import ModelTaskError, qualified_name, task_name, write_task


class PikeError(Exception):
    """A problem the caller can fix; the message says what and how."""


@dataclass
class Result:
    module: torch.nn.Module  # the winner around the caller's instance, on the run's device, in eval mode
    summary: dict  # the task's row of the final table (eager_ms, best_ms, speedup_eager, ...)
    run_dir: Path
    best_file: Path

    @property
    def speedup(self) -> float | None:
        """Over eager PyTorch, re-timed side by side (None when the task failed)."""
        return self.summary.get("speedup_eager")

    def __repr__(self) -> str:
        s = self.summary
        sp = f"{s['speedup_eager']:.2f}x vs eager" if s.get("speedup_eager") else "no speedup measured"
        return f"<pike.Result {s['task']}: {sp}, best {s.get('best_ms') or 0:.4f} ms; {self.best_file}>"


def optimize(model: torch.nn.Module, example_inputs, *, device: str = "auto", llm: str | None = None,
             budget: int | None = None, time_limit: float | str | None = None, out: str | Path | None = None,
             strategy: str | None = None, config: str | Path | None = None, resume: bool = False,
             progress: bool = True, **settings) -> Result:
    """Search for a faster, verified version of ``model`` (a live module with its weights).

    ``example_inputs``: the inputs of one ``model(*inputs)`` call (a tensor or a tuple), or an
    importable function returning them. ``device``: auto (the first CUDA device when there is one),
    cpu, cuda or cuda:N. ``llm``: as ``--llm`` (none: the offline portfolio). ``budget``: LLM queries.
    ``time_limit``: minutes, or text such as ``"90s"``, ``"2h"``. ``out``: the run directory (default ``runs/<Class>-<time>``);
    ``resume=True`` continues the run in ``out`` (after a kill or a time limit) with the model as it
    was saved by the first call and that call's settings.
    ``settings``: any config key, as ``trials=3``, ``search__pike_b__num_branches=4`` or
    ``**{"eval.timeout_s": 600}`` (``--set`` equivalents).
    """
    from pike import config as cfgmod
    from pike.llm.base import ConfigError
    from pike.search.engine import Engine, check_config, discard_run, run_started
    from pike.search.strategies import strategy_class
    from pike.task import TaskError, load_task

    if resume:
        return _resume(model, out, time_limit, progress)
    strategy = strategy or (None if llm else "offline")
    try:
        cfg = cfgmod.load(config, strategy=strategy)
        values = {"eval.device": device, **settings}
        if llm:
            values["llm.model"] = llm
        if budget is not None:
            values["search.budget"] = budget
        if time_limit is not None:
            values["search.time_limit_min"] = time_limit
        cfg = cfgmod.apply_values(cfg, values)
        if strategy_class(cfg).needs_llm and not cfg.llm.model:
            raise ValueError(f"strategy {cfg.search.strategy!r} needs an LLM: pass llm=...")
        cfg, how = cfgmod.resolve_device(cfg)
        check_config(cfg)
    except ValueError as e:
        raise PikeError(str(e)) from None
    run_dir = Path(out) if out is not None else Path("runs") / f"{task_name(model)}-{time.strftime('%Y%m%d-%H%M%S')}"
    if run_started(run_dir):
        raise PikeError(f"{run_dir} already holds a run: pass another out= (or resume it: pike optimize --resume {run_dir})")
    discard_run(run_dir)  # a start that failed before its task began: nothing there to keep
    existed = run_dir.exists()
    try:
        task = load_task(write_task(model, example_inputs, run_dir / "task"))
        engine = Engine(cfg, run_dir)
    except (ModelTaskError, TaskError, ConfigError) as e:
        _discard_start(run_dir, existed)
        raise PikeError(str(e)) from None
    return _run(engine, task, model, f"device {cfg.eval.device}{f' ({how})' if how else ''}", progress)


def _discard_start(run_dir: Path, existed: bool) -> None:
    """What a failed start wrote (the saved model and its task), so that the corrected call may reuse
    ``out``."""
    import shutil

    shutil.rmtree(run_dir / "task", ignore_errors=True)
    if not existed:
        shutil.rmtree(run_dir, ignore_errors=True)


def _run(engine, task, model: torch.nn.Module, device_text: str, progress: bool) -> Result:
    from pike.commands.common import err_console
    from pike.search.engine import run_to_end

    console = err_console if progress else _quiet_console()
    console.print(f"pike.optimize {qualified_name(model)}: run directory {engine.run_dir}  strategy {engine.cfg.search.strategy}  "
                  f"{device_text}", highlight=False)
    from pike.llm.rounds import RoundDeferred

    try:
        doc = run_to_end(engine, [task], console)
    except RoundDeferred as r:  # file rounds (llm.batch_dir): the run waits for this round's replies
        raise PikeError(f"batch round {r.round_n}: {r.count} requests in {r.requests}; put their replies (OpenAI batch output"
                        f" format) in {r.responses}, then resume (resume=True, out={str(engine.run_dir)!r})") from None
    row = doc["rows"][0]
    if row["status"] == "error":
        raise PikeError(f"{task.name}: {row['error']}")
    best = engine.run_dir / "best" / f"{task.name}.py"
    module = load(best, model).to(engine.cfg.eval.device)
    return Result(module=module, summary=row, run_dir=engine.run_dir, best_file=best)


def _resume(model: torch.nn.Module, out, time_limit: float | str | None, progress: bool) -> Result:
    from pike.config import apply_values
    from pike.search.engine import Engine, resume_config, stored_tasks

    run_dir = Path(out) if out is not None else None
    if run_dir is None or not (run_dir / "run.db").exists():
        raise PikeError(f"resume=True needs out= naming a run directory (got {out})")
    cfg = resume_config(run_dir)
    if time_limit is not None:
        try:
            cfg = apply_values(cfg, {"search.time_limit_min": time_limit})
        except ValueError as e:
            raise PikeError(str(e)) from None
    tasks = stored_tasks(run_dir)
    live = [t for t in tasks if f"PIKE_LIVE_MODEL = {qualified_name(model)!r}" in t.source]
    if len(tasks) != 1 or not live:
        raise PikeError(f"{run_dir} is not a pike.optimize run of a {qualified_name(model)}")
    return _run(Engine(cfg, run_dir, resume=True), live[0], model, f"device {cfg.eval.device} (as the run started)", progress)


def load(run_or_file: str | Path, model: torch.nn.Module) -> torch.nn.Module:
    """A stored result applied to ``model``: the best solution of a run directory (or a ``best/*.py``
    file) built around that instance when the run came from ``pike.optimize``; for a task file's run,
    built from the task's ``get_init_inputs()`` with ``model``'s ``state_dict`` loaded into it. On the
    model's device, in eval mode."""
    path = _best_file(Path(run_or_file))
    mod = _import_solution(path)
    cls = getattr(mod, "ModelNew", None) or getattr(mod, "Model", None)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise PikeError(f"{path}: defines no ModelNew (or Model) module class")
    live = getattr(mod, "PIKE_LIVE_MODEL", None)
    if live is not None:
        if qualified_name(model) != live:
            raise PikeError(f"{path} was made for a {live}, not a {qualified_name(model)}")
        solution = cls(model)
    else:
        init = getattr(mod, "get_init_inputs", None)
        if init is None:
            raise PikeError(f"{path}: no get_init_inputs() to build the solution with")
        solution = cls(*init())
        try:
            solution.load_state_dict(model.state_dict())
        except RuntimeError as e:
            raise PikeError(f"{path}: the model's state_dict does not load into the solution: {str(e).splitlines()[0]}") from None
    where = next((t.device for t in model.parameters()), None) or next((t.device for t in model.buffers()), None)
    return (solution.to(where) if where is not None else solution).eval()


def _best_file(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise PikeError(f"{path}: no such run directory or file")
    found = sorted((path / "best").glob("*.py"))
    if len(found) != 1:
        what = f"holds {len(found)} best files ({', '.join(p.name for p in found)}): pass one of them" if found else "has no best/ files (was the run finished?)"
        raise PikeError(f"{path} {what}")
    return found[0]


def _import_solution(path: Path):
    source = path.read_text()
    name = f"pike_solution_{hashlib.sha256(source.encode()).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses and pickling look their module up there
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001
        del sys.modules[name]
        raise PikeError(f"{path}: importing it raised {type(e).__name__}: {e}") from None
    return mod


def _quiet_console():
    import io

    from rich.console import Console

    return Console(file=io.StringIO())
