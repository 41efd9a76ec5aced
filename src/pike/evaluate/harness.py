"""Shared pieces of the code that runs inside evaluation children (see ``worker``).

Imported before any candidate code: the functions the harness relies on are captured here first, and
a candidate that replaces them is rejected.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import random
import sys
import time
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from pike.evaluate.build import extension_lock
from pike.evaluate.child import TIMING_STARTED
from pike.evaluate.paths import apply_imports

_GUARDED = (
    # (not torch.manual_seed: torch._dynamo wraps it on import; the harness uses its own saved copy)
    "torch.allclose", "torch.equal", "torch.isclose", "torch.save", "torch.load",
    "torch.Tensor.clone", "torch.Tensor.copy_", "torch.Tensor.to", "torch.Tensor.cpu",
    "torch.Tensor.__eq__", "torch.nn.Module.__call__", "torch.nn.Module.load_state_dict",
    "torch.testing.assert_close", "torch.cuda.synchronize", "torch.cuda.Event",
    "torch.cuda.Event.record", "torch.cuda.Event.elapsed_time", "time.perf_counter", "time.time",
    "time.monotonic", "json.dump", "json.dumps", "os.replace",
)
_manual_seed = torch.manual_seed
save = torch.save
load = torch.load
perf_counter = time.perf_counter


class Failure(Exception):
    def __init__(self, status: str, stage: str, message: str, feedback: str = ""):
        super().__init__(message)
        self.status, self.stage, self.message, self.feedback = status, stage, message, feedback


class TaskFailure(Exception):
    """The task itself is broken (reported as a TaskError by the orchestrator): a one-line message,
    and the traceback as ``detail``."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


def _lookup(dotted: str):
    parts = dotted.split(".")
    obj = sys.modules[parts[0]]
    for p in parts[1:]:
        obj = getattr(obj, p)
    return obj


def _pike_functions() -> dict[str, object]:
    """Every function and class of PIKE's own modules loaded in this process: the harness (checks,
    timing, hand-over) runs beside the candidate, and a candidate that patched it could drop its
    checks or fake its timing."""
    out = {}
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not (mod_name == "pike" or mod_name.startswith("pike.")):
            continue
        for attr, obj in list(vars(mod).items()):
            if callable(obj) and not attr.startswith("__"):
                out[f"{mod_name}.{attr}"] = obj
    return out


class Integrity:
    def __init__(self):
        self.saved = {name: _lookup(name) for name in _GUARDED}
        self.pike = _pike_functions()

    def changed(self) -> list[str]:
        out = []
        for name, obj in self.saved.items():
            try:
                now = _lookup(name)
            except AttributeError:
                out.append(name)
                continue
            if now is not obj:
                out.append(name)
        for name, obj in self.pike.items():
            mod_name, _, attr = name.rpartition(".")
            if getattr(sys.modules.get(mod_name), attr, None) is not obj:
                out.append(name)
        return out


# Set by the sandbox's child (``child.py``) from its job request, never from the environment: a
# candidate must find nothing there that exists only under PIKE.
_RUN: dict = {"job_dir": None, "timing_cpus": None, "alive_fd": None, "memory_bytes": None}


def configure(*, job_dir=None, timing_cpus=None, alive_fd=None, memory_bytes=None) -> None:
    _RUN.update(job_dir=job_dir, timing_cpus=timing_cpus, alive_fd=alive_fd, memory_bytes=memory_bytes)


def pin_for_timing() -> None:
    """Tell the sandbox that the timed runs start (it pauses the slot's spare instance, whose torch
    import would otherwise compete for the cores), then move every thread of this process onto the
    slot's timing cores. Import, compilation (Inductor and Triton compile in parallel) and the checks
    ran on those cores and the build cores; only the timing loop must keep clear of compilers."""
    if _RUN["job_dir"] is not None:
        try:
            Path(_RUN["job_dir"], TIMING_STARTED).touch()
        except OSError:
            pass
    cpus = _RUN["timing_cpus"]
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return
    cores = set(cpus)
    for tid in os.listdir("/proc/self/task"):  # sched_setaffinity(0) would move this thread alone
        try:
            os.sched_setaffinity(int(tid), cores)
        except OSError:  # a thread that just ended
            pass
    torch.set_num_threads(len(cores))


def tb(limit: int = 8000) -> str:
    text = traceback.format_exc()
    return text[-limit:]


def seed_all(seed: int) -> None:
    _manual_seed(seed)  # CPU and every CUDA device
    random.seed(seed)
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed(seed % 2**32)


def _precision() -> tuple[str, bool, bool]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def _set_precision(matmul: str, cublas_tf32: bool, cudnn_tf32: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cuda.matmul.allow_tf32 = cublas_tf32
        torch.backends.cudnn.allow_tf32 = cudnn_tf32


# PyTorch's own settings, as every evaluation process starts with them (this module is imported by
# the fork server before any job): TF32 convolutions on, TF32 matmuls off. Eager baselines and
# candidates run under them.
PYTORCH_DEFAULTS = _precision()


def strict_fp32() -> None:
    """No TF32 anywhere: the reference is computed in full fp32."""
    _set_precision("highest", False, False)


@contextmanager
def pytorch_defaults():
    """PyTorch's default precision settings inside, the ones before outside (the reference job
    measures how far default eager is from its strict fp32)."""
    before = _precision()
    _set_precision(*PYTORCH_DEFAULTS)
    try:
        yield
    finally:
        _set_precision(*before)


_package: str | None = None  # the task's package (paths.task_package), set per job by set_imports


def set_imports(imports: dict | None) -> None:
    """Before any task or candidate code is imported: the task's import paths and its package."""
    global _package
    apply_imports(imports)
    _package = (imports or {}).get("package")


def import_file(path: Path, name: str):
    """``path`` as module ``name``; inside the task's package when it has one, so that its relative
    imports (``from .blocks import Block``) resolve as they do where the file lives."""
    if _package:
        name = f"{_package}.{name}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def to_device(obj, device: torch.device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(o, device) for o in obj)
    return obj


def to_cpu(obj, move: bool = True, copy: bool = False):
    """Plain containers (a named tuple or a torch.return_types becomes a tuple; comparisons look at
    the nesting only), so that the orchestrator can read what was saved with ``weights_only``.
    ``move=False``: the tensors stay on their device (handed to the comparator as memory). ``copy``:
    always a copy, also of a CPU tensor on the CPU (a model may write every output into one buffer,
    as a CUDA graph does, overwritten by its next call)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if move:
            return t.to("cpu", copy=copy)
        return t.clone() if copy else t
    if isinstance(obj, (tuple, list)):
        items = [to_cpu(o, move, copy) for o in _items(obj)]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, dict):
        return {k: to_cpu(v, move, copy) for k, v in dict.items(obj)}
    return obj


def _items(obj):
    """A list's or tuple's items, or a dict's values, through the base class's own C accessors: a
    subclass's methods (a container of a model's own, transformers' ModelOutput) never run."""
    if isinstance(obj, list):
        return list.__iter__(obj)
    if isinstance(obj, tuple):
        return tuple.__iter__(obj)
    return dict.values(obj)


def leaves(obj):
    if isinstance(obj, (list, tuple, dict)):
        for o in _items(obj):
            yield from leaves(o)
    else:
        yield obj


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point() or a.is_complex():
        return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())
    return bool(torch.equal(a, b))


def output_devices(out) -> list[str]:
    return [t.device.type for t in leaves(out) if isinstance(t, torch.Tensor)]


PLAIN_VALUES = (int, float, bool, complex, str, type(None))


def unplain(out, path: str = "output") -> str:
    """"" when ``out`` is plain tensors (``type(x) is torch.Tensor``) and plain values in lists,
    tuples and dicts; else what is not. Read without calling any method of the output's own classes:
    a tensor subclass or a container could otherwise do its work when the harness clones, copies or
    saves it, outside the timed region. Containers may subclass list, tuple or dict (named tuples,
    transformers' ModelOutput): they are read through the base class's C accessors, and a dict
    subclass whose attributes (dataclass fields) differ from its items is refused, since its users
    read the attributes while the evaluator checks the items."""
    t = type(out)
    if t is torch.Tensor or t in PLAIN_VALUES:
        return ""
    if issubclass(t, (list, tuple)):
        items = enumerate(_items(out))
    elif issubclass(t, dict):
        items = dict.items(out)
        why = _attributes_differ(out, path)
        if why:
            return why
    else:
        kind = "a torch.Tensor subclass" if isinstance(out, torch.Tensor) else "not a tensor, list, tuple, dict or plain value"
        return f"{path} is a {t.__module__}.{t.__qualname__} ({kind})"
    for k, v in items:
        why = unplain(v, f"{path}[{k!r}]")
        if why:
            return why
    return ""


def _attributes_differ(out: dict, path: str) -> str:
    """For a dict subclass with instance attributes: an attribute named like an item must hold that
    very item. The instance's ``__dict__`` is read through the C descriptor Python gives every class
    with instances dicts; a class that replaces it is refused."""
    if type(out) is dict:
        return ""
    getter = next((c.__dict__["__dict__"] for c in type(out).__mro__ if "__dict__" in c.__dict__), None)
    if getter is None:
        return ""
    if type(getter).__name__ != "getset_descriptor":
        return f"{path} is a {type(out).__qualname__} whose class replaces __dict__"
    attrs = getter.__get__(out)
    for k, v in dict.items(out):
        if isinstance(k, str) and k in attrs and attrs[k] is not v:
            return f"{path}.{k} is not the item {path}[{k!r}] it names"
    return ""


def check_output_types(out, stage: str) -> None:
    why = unplain(out)
    if why:
        raise Failure("rejected", stage, f"forward returned outputs that are not plain: {why}; outputs must be plain "
                      "tensors (and lists, tuples and dicts of them) computed inside forward")


def guarded_call(model, inputs, seed: int, *, check_inputs: bool, stage: str):
    """One forward with the RNG re-seeded; inputs must not change."""
    before = [t.clone() if isinstance(t, torch.Tensor) else None for t in inputs] if check_inputs else None
    seed_all(seed)
    out = model(*inputs)
    check_output_types(out, stage)
    if before is not None:
        for i, (t, b) in enumerate(zip(inputs, before)):
            if b is not None and not same(t, b):
                raise Failure("mismatch", stage, f"forward modified input {i} in place; inputs must be left unchanged")
    return out


ORPHANED = 3  # exit code of a child whose orchestrator is gone


def orchestrator_gone(job_dir: Path) -> bool:
    """The process that would answer is dead (the end of the pipe it holds open), or has removed the
    job (a killed or finished run)."""
    fd = _RUN["alive_fd"]
    if fd is not None:  # never read: in a forked child it is the fork server's request pipe too
        import select

        p = select.poll()
        p.register(fd, select.POLLHUP)
        if any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, ev in p.poll(0)):
            return True
    return not job_dir.exists()


def ask(job_dir: Path, name: str, timeout: float = 3600) -> dict:
    """Ask the orchestrator (see Sandbox.run's on_ask) and wait for its answer. A child whose
    orchestrator was killed leaves at once (exit code ORPHANED) instead of holding its memory, and
    on a GPU its context, for the rest of the hour."""
    (job_dir / f"{name}.ready").write_text("1")
    answer = job_dir / f"{name}.answer"
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + 0.5
    while not answer.exists():
        now = time.monotonic()
        if now > deadline:
            raise Failure("timeout", name, "no answer from the orchestrator")
        if now > next_check:
            if orchestrator_gone(job_dir):
                os._exit(ORPHANED)
            next_check = now + 0.5
        time.sleep(0.002)
    return json.loads(answer.read_text())


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    save(obj, tmp)
    os.replace(tmp, path)


def nbytes(obj) -> int:
    return sum(t.numel() * t.element_size() for t in leaves(obj) if isinstance(t, torch.Tensor))


class RefData:
    """A reference as the candidate's process sees it: copies of the inputs it uses, the init inputs
    and the re-randomised weights in its job directory, and the facts it may know (``meta``: call
    seed, flags, output devices, state_dict spec, where models are built); never the outputs."""

    def __init__(self, data_dir: Path, facts: dict):
        self.dir = Path(data_dir)
        self.meta = facts

    @functools.cached_property
    def init_inputs(self) -> list:
        """Memory-mapped: a model handed over as an init input (pike.optimize) is not read into memory
        again. Init inputs may be instances of the task's own classes (a dataclass of model args),
        pickled under the task module's name in the reference's process: that module is then
        imported here from the copy of the task file given beside them."""
        path = self.dir / "init_inputs.pt"
        try:
            return load(path, weights_only=False, mmap=True)
        except ModuleNotFoundError as e:
            module, file = self.meta.get("task_module"), self.meta.get("task_file")
            if not (module and file and e.name and e.name.split(".")[-1] == module):
                raise
        import_file(self.dir / file, module)
        return load(path, weights_only=False, mmap=True)

    def inputs(self, i: int) -> list:
        return load(self.dir / "inputs" / f"{i}.pt", weights_only=False, mmap=True)

    def random_sd(self):
        return load(self.dir / "random_sd.pt", weights_only=False)


def construct(cls, init_inputs: list, device: torch.device, on_device: bool):
    """``cls(*init_inputs)`` in eval mode, built on ``device`` (``on_device``: under ``torch.device``, so
    parameters are made and initialised there: seconds less for a large model than the CPU's RNG) or on
    the CPU. The reference and every candidate of a task are built the same way, right after the same
    seed, so their seeded weights match either way."""
    if on_device and device.type != "cpu":
        with torch.device(device):
            return cls(*init_inputs).eval()
    return cls(*init_inputs).eval()


def build_model(code: Path, ref: RefData, name: str, device: torch.device, init_seed: int, integrity: Integrity, stage_sfx: str = "",
                cpu_first: bool = False):
    """The model defined in file ``code``, built as ``ref``'s was. ``cpu_first``: built on the CPU and
    left there (the caller moves it once it holds the device). Not for a reference built on the
    device: the model is built there too, and a lane's gate asks for the device at the
    construction's first CUDA call."""
    on_device = ref.meta.get("built_on") == "device"
    cpu_first = cpu_first and not on_device
    with extension_lock():  # extensions compile at import or in __init__
        try:
            mod = import_file(Path(code), name)
        except Exception as e:  # noqa: BLE001
            status = "build_error" if "Error building extension" in str(e) else "runtime_error"
            raise Failure(status, "import" + stage_sfx, f"importing the candidate raised {type(e).__name__}: {e}"[:2000], tb()) from None
        changed = integrity.changed()
        if changed:
            raise Failure("rejected", "import", f"the candidate replaced {', '.join(changed)}; harness functions must not be patched")
        cls = getattr(mod, "ModelNew", None) or getattr(mod, "Model", None)
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            raise Failure("runtime_error", "import", "the candidate defines no ModelNew (or Model) subclass of torch.nn.Module")
        try:
            seed_all(init_seed)
            model = construct(cls, ref.init_inputs, device, on_device)
            if not cpu_first:
                model = model.to(device)
        except Exception as e:  # noqa: BLE001
            where = (f" (built under torch.device({str(device)!r}), as the reference was, so that seeded weights match; "
                     "a task whose Model can only be built on the CPU sets eval.init_on=cpu)") if on_device else ""
            raise Failure("runtime_error", "init" + stage_sfx, f"ModelNew(*init_inputs) raised {type(e).__name__}: {e}{where}"[:2000], tb()) from None
    return model


def run_trials(model, ref: RefData, ids: list[int], device, call_seed: int, stage: str, check_inputs: bool,
               keep: bool = False) -> dict:
    """Outputs per input set, on the CPU, or where they are with ``keep`` (for the comparator)."""
    out = {}
    with torch.inference_mode():
        for i in ids:
            x = to_device(ref.inputs(i), device)
            try:
                y = guarded_call(model, x, call_seed + i, check_inputs=check_inputs, stage=stage)
            except Failure:
                raise
            except Exception as e:  # noqa: BLE001
                raise Failure("runtime_error", stage, f"forward raised {type(e).__name__}: {e}"[:2000], tb()) from None
            if device.type == "cuda":
                torch.cuda.synchronize()
            devs = output_devices(y)
            if devs != ref.meta["out_devices"]:
                raise Failure("mismatch", stage, f"outputs on {devs}, the reference's on {ref.meta['out_devices']}")
            out[i] = to_cpu(y, move=not keep, copy=True)
    return out
