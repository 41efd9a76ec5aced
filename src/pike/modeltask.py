"""A live ``nn.Module`` as a task file: what ``pike.optimize`` hands the evaluator.

The module is saved whole with ``torch.save`` (its classes by their import names, its tensors as they
are: the trained weights) beside a generated task file. The task's ``Model`` wraps the module it is
given and ``get_init_inputs()`` loads it, so the reference is the user's own instance, and every
candidate is built around the same instance: ``ModelNew(model)``. ``get_inputs()`` gives the user's
example inputs for the first input set of a process and inputs drawn like them for the others.
The user's classes, as written, are appended to the task file as comments: the LLM strategies read
the task file, so they see the model's real code.

Evaluation children import the user's classes by name, through the orchestrator's ``sys.path``
(``pike.evaluate.paths``), so a model defined in a script or notebook (``__main__``) cannot be used.
"""

from __future__ import annotations

import inspect
import re
import uuid
from pathlib import Path
from typing import Callable

import torch

SOURCE_LIMIT = 60_000  # characters of the user's classes appended to the task file (the LLM's context)


class ModelTaskError(ValueError):
    """The model or its inputs cannot be handed to the evaluator; the message says why and what to do."""


def qualified_name(obj_or_cls) -> str:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}.{cls.__qualname__}"


def task_name(model: torch.nn.Module) -> str:
    """The class name, as an identifier (it names the task, its file and its modules in children)."""
    return re.sub(r"\W", "_", type(model).__name__) or "model"


def check_importable(model: torch.nn.Module) -> None:
    """Every module class must be importable by name in another process."""
    for m in model.modules():
        cls = type(m)
        if cls.__module__ == "__main__":
            raise ModelTaskError(
                f"class {cls.__qualname__} is defined in __main__ (a script or notebook), which the evaluator's "
                "processes cannot import: move it into a module (say models.py beside your script) and import it from there")
        if "<locals>" in cls.__qualname__:
            raise ModelTaskError(f"class {qualified_name(cls)} is defined inside a function, which the evaluator's processes "
                                 "cannot import: define it at the top level of a module")


def normalise_inputs(example_inputs) -> list | Callable:
    """A tensor, a tuple or list of inputs (called as ``forward(*inputs)``), or a function returning one."""
    if isinstance(example_inputs, torch.Tensor):
        return [example_inputs]
    if isinstance(example_inputs, (tuple, list)):
        if not any(isinstance(x, torch.Tensor) for x in example_inputs):
            raise ModelTaskError("example_inputs hold no tensor: pass the inputs of one forward call, as a tensor or a tuple")
        return list(example_inputs)
    if isinstance(example_inputs, dict):
        raise ModelTaskError("example_inputs is a dict: pass the inputs positionally, as a tuple in forward's order "
                             "(the evaluator calls forward(*inputs))")
    if callable(example_inputs):
        if example_inputs.__module__ == "__main__" or "<" in example_inputs.__qualname__:
            raise ModelTaskError("an example_inputs function must be importable by name (defined at the top level of a "
                                 "module, not in __main__ or as a lambda)")
        return example_inputs
    raise ModelTaskError(f"example_inputs must be a tensor, a tuple or list of inputs, or a function returning one, "
                         f"not a {type(example_inputs).__name__}")


def _cpu(x):
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu")
    if isinstance(x, (list, tuple)):
        return type(x)(_cpu(v) for v in x)
    return x


def write_task(model: torch.nn.Module, example_inputs, directory: Path) -> Path:
    """The task file for ``model`` in ``directory``, with ``model.pt`` and ``inputs.pt`` beside it."""
    if not isinstance(model, torch.nn.Module):
        raise ModelTaskError(f"model must be a torch.nn.Module, not a {type(model).__name__}")
    if type(model).__module__.startswith("torch._dynamo"):
        raise ModelTaskError("model is a torch.compile'd module: pass the original module (model._orig_mod)")
    check_importable(model)
    inputs = normalise_inputs(example_inputs)
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    name = task_name(model)
    try:
        torch.save(model, directory / "model.pt")
    except Exception as e:  # noqa: BLE001 - pickling errors come in many types
        raise ModelTaskError(f"the model cannot be saved with torch.save(model), which the evaluator needs: "
                             f"{type(e).__name__}: {e}") from None
    torch.save({"examples": _cpu(inputs) if isinstance(inputs, list) else None,
                "fn": inputs if callable(inputs) else None}, directory / "inputs.pt")
    path = directory / f"{name}.py"
    path.write_text(task_source(model, directory))
    return path


def task_source(model: torch.nn.Module, directory: Path) -> str:
    qual = qualified_name(model)
    return f'''"""PIKE task made by pike.optimize from a live {qual} (do not edit).

Model wraps the user's module. ModelNew(model) is given the same instance (a {qual} with its
trained weights) and must compute what its forward computes, for the inputs get_inputs() returns.
The user's classes, as written, are at the end of this file (comments, for reading); a solution may
import the user's package. get_inputs() and get_init_inputs() are the evaluator's: a solution
defines ModelNew only.
"""

import torch

from pike.modeltask import stored_inputs, stored_model

PIKE_LIVE_MODEL = {qual!r}
RUN_ID = {uuid.uuid4().hex!r}  # a new task per pike.optimize call: no cached reference of another model is reused
DATA = {str(directory)!r}


class Model(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs):
        return self.model(*inputs)


def get_init_inputs():
    return [stored_model(DATA + "/model.pt")]


def get_inputs():
    return stored_inputs(DATA + "/inputs.pt")
''' + user_source(model)


def user_source(model: torch.nn.Module, limit: int = SOURCE_LIMIT) -> str:
    """The source of the model's own classes (not torch's), outermost first, as comments."""
    seen: list[type] = []
    for m in model.modules():
        cls = type(m)
        if cls not in seen and not cls.__module__.startswith("torch."):
            seen.append(cls)
    parts, left, skipped = [], [], []
    total = 0
    for cls in seen:
        try:
            src = inspect.getsource(cls)
        except (OSError, TypeError):
            skipped.append(qualified_name(cls))
            continue
        if total + len(src) > limit:
            left.append(qualified_name(cls))
            continue
        total += len(src)
        parts.append(f"# ---- {qualified_name(cls)} ({inspect.getsourcefile(cls)}) ----\n" + _comment(src))
    head = "\n\n# ======== The user's classes, as written (for reading: Model above runs the imported module) ========\n"
    tail = ""
    if left:
        tail += f"\n# Left out for length: {', '.join(left)}\n"
    if skipped:
        tail += f"\n# No source found for: {', '.join(skipped)}\n"
    return head + "\n".join(parts) + tail if parts or tail else ""


def _comment(src: str) -> str:
    return "".join(f"# {line}" if line.strip() else "#\n" for line in src.splitlines(keepends=True)).rstrip("\n") + "\n"


# ------------------------------------------------------------------ run time (in evaluation children)

_calls: dict[str, int] = {}


def stored_model(path: str) -> torch.nn.Module:
    """The user's module as saved; memory-mapped, so that a big model is not read into memory twice."""
    try:
        return torch.load(path, weights_only=False, mmap=True, map_location="cpu")
    except (ModuleNotFoundError, AttributeError) as e:
        raise ModuleNotFoundError(f"{e}: the model's classes must be importable in the evaluator's processes, which "
                                  "see the sys.path of the process that called pike.optimize") from None


def stored_inputs(path: str) -> list:
    """The example inputs for the first input set of a process, then inputs drawn like them (the RNG is
    seeded per input set by the evaluator): a held-out set must differ from the ones timed. An
    ``example_inputs`` function is called for every set instead."""
    data = torch.load(path, weights_only=False)
    if data["fn"] is not None:
        return list(normalise_inputs(data["fn"]()))
    n = _calls[path] = _calls.get(path, 0) + 1
    examples = data["examples"]
    return examples if n == 1 else [like(x) for x in examples]


def like(x):
    """A tensor drawn like ``x``: floating values from a normal with its mean and deviation, integers
    uniform over its range (token ids stay valid), booleans and constants as they are."""
    if not isinstance(x, torch.Tensor) or x.numel() < 2 or x.dtype == torch.bool or x.is_complex():
        return x.clone() if isinstance(x, torch.Tensor) else x
    if x.is_floating_point():
        v = x.double()
        mean, std = float(v.mean()), float(v.std())
        if not (std > 0 and abs(std) != float("inf")):
            return x.clone()
        return (torch.randn(x.shape, dtype=torch.float64) * std + mean).to(x.dtype)
    lo, hi = int(x.min()), int(x.max())
    return torch.randint(lo, hi + 1, x.shape, dtype=x.dtype)
