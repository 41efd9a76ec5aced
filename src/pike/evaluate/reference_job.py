"""The reference job: the task's own Model, in a child that never imports candidate code.

Strict fp32, a pool of input sets (each set and its output in its own file), the determinism probes
(stateful and random tasks are flagged), another seed's output for the tolerance check, and
re-randomised weights with their outputs. A task with bf16/fp16 outputs also gets the same model
and inputs computed in fp32 (``golden/``): eager's own rounding error against it bounds how far a
more precise candidate may differ from eager (see ``compare``).
"""

from __future__ import annotations

import copy
import shutil
import traceback
from pathlib import Path
from time import perf_counter

import torch

from pike.evaluate import weights as weights_mod
from pike.evaluate.batch_alt import second_shape
from pike.evaluate.compare import deviation, merge_deviations, output_dtypes
from pike.evaluate.harness import (
    TaskFailure, construct, import_file, leaves, load, nbytes, output_devices, pytorch_defaults, same, save, seed_all, strict_fp32, tb,
    to_cpu, to_device, write_json,
)
from pike.evaluate.jobs import ReferenceJob
from pike.evaluate.progress import Progress


def task_failure(what: str, e: BaseException, task_file: Path | None) -> TaskFailure:
    """``what`` raised ``e``: one line naming the line of the task file where it happened (the file
    here is a copy of the user's, at the same line numbers), the traceback as its detail."""
    at = ""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if task_file is not None and Path(f.filename) == task_file]
    if frames:
        at = f" (line {frames[-1].lineno}: {(frames[-1].line or '').strip()})"
    message = str(e).splitlines()[0] if str(e) else ""
    return TaskFailure(f"{what} raised {type(e).__name__}: {message}{at}", tb(3000))


def default_deviation(model, x: list, seed: int, reference_out) -> dict | None:
    """One forward under PyTorch's default precision settings (TF32 convolutions, say), against the
    strict-fp32 output of the same inputs and RNG seed."""
    seed_all(seed)
    with pytorch_defaults():
        out = to_cpu(model(*x))
    return deviation(reference_out, out)


def task_call(fn, name: str, task_file: Path | None = None):
    try:
        value = fn()
    except Exception as e:  # noqa: BLE001
        raise task_failure(f"{name}()", e, task_file) from None
    if not isinstance(value, (list, tuple)):
        raise TaskFailure(f"{name}() must return a list or tuple, got {type(value).__name__}")
    return list(value)


LOW_PRECISION = (torch.bfloat16, torch.float16)


def low_precision(out) -> bool:
    return any(isinstance(t, torch.Tensor) and t.dtype in LOW_PRECISION for t in leaves(out))


def upcast(x: list) -> list:
    return [t.float() if isinstance(t, torch.Tensor) and t.dtype in LOW_PRECISION else t for t in x]


class Golden:
    """The model in fp32 beside the reference, for tasks with bf16/fp16 outputs. Anything that stops
    it (an fp32 forward that raises, a different output structure, memory) leaves the task without
    one: the elementwise tolerance alone then decides, as for every other task."""

    def __init__(self, model):
        self.why_not = ""
        try:
            with torch.inference_mode(False), torch.no_grad():  # normal tensors: weights are loaded into it later
                self.model = copy.deepcopy(model).float()
        except Exception as e:  # noqa: BLE001
            self.model, self.why_not = None, f"the fp32 copy failed: {type(e).__name__}: {e}"[:300]

    @property
    def on(self) -> bool:
        return self.model is not None

    def save(self, x: list, seed: int, like, path: Path) -> None:
        if not self.on:
            return
        try:
            seed_all(seed)
            gold = to_cpu(self.model(*upcast(x)))
            shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else None for t in leaves(gold)]
            if shapes != [tuple(t.shape) if isinstance(t, torch.Tensor) else None for t in leaves(like)]:
                raise ValueError("its outputs are not shaped like the reference's")
            path.parent.mkdir(parents=True, exist_ok=True)
            save(gold, path)
        except Exception as e:  # noqa: BLE001
            self.model, self.why_not = None, f"the fp32 forward failed: {type(e).__name__}: {e}"[:300]

    def load_state_dict(self, sd) -> None:
        if self.on:
            try:
                with torch.no_grad():
                    self.model.load_state_dict(sd)  # copy_ casts the bf16/fp16 values to fp32
            except Exception as e:  # noqa: BLE001
                self.model, self.why_not = None, f"loading re-randomised weights failed: {type(e).__name__}: {e}"[:300]


def memory_estimate(Model, init_inputs: list, device) -> dict:
    """The model's weights, counted on the meta device before it is built (no memory is allocated;
    a module handed over as an init input is counted as it is), against the memory free where it
    will live. ``short`` when the weights alone do not fit."""
    try:
        with torch.device("meta"):
            m = Model(*init_inputs)
        weights = sum(t.numel() * t.element_size() for t in (*m.parameters(), *m.buffers()))
        del m
    except Exception:  # noqa: BLE001 - a model that cannot be built on the meta device
        return {"text": "its size is unknown until it is built"}
    free = free_memory(device)
    text = f"weights {weights / 2**30:.2f} GB" + (f", {free / 2**30:.1f} GB free on {device.type}" if free is not None else "")
    return {"weights_bytes": weights, "free_bytes": free, "text": text, "short": free is not None and weights > free}


def free_memory(device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def run_reference(job: ReferenceJob, job_dir: Path) -> dict:
    """The entry, in ``job.out_dir`` of the job directory: what a candidate's process may be given
    under ``given/`` (input sets, init inputs, re-randomised weights), what only the orchestrator
    reads under ``answers/`` (outputs, fp32 outputs, another seed's output). Each input set and its
    output go to their own file (``given/inputs/<i>.pt``, ``answers/outputs/<i>.pt``) so that
    candidates and the orchestrator load only the sets they use."""
    device = torch.device(job.device)
    out_dir = job_dir / job.out_dir
    given, answers = out_dir / "given", out_dir / "answers"
    for sub in (given / "inputs", answers / "outputs", answers / "random"):
        sub.mkdir(parents=True, exist_ok=True)
    strict_fp32()
    t0 = perf_counter()
    spent: dict[str, float] = {}

    def lap(name: str) -> None:  # where a reference's time goes, kept in meta.json
        nonlocal t0
        now = perf_counter()
        spent[name] = spent.get(name, 0.0) + now - t0
        t0 = now

    progress = Progress(job_dir)
    task_file = job_dir / job.task
    progress("importing the task")
    try:
        mod = import_file(task_file, job.module_name)
    except Exception as e:  # noqa: BLE001
        raise task_failure("importing the task", e, task_file) from None
    # Init inputs may hold instances of the task's own classes: a candidate's process imports this
    # copy of the task to read them (harness.RefData).
    shutil.copyfile(task_file, given / task_file.name)
    Model = getattr(mod, "Model", None)
    if not (isinstance(Model, type) and issubclass(Model, torch.nn.Module)):
        raise TaskFailure("Model must be a subclass of torch.nn.Module")
    seed_all(job.init_seed)
    progress("get_init_inputs()")
    init_inputs = task_call(mod.get_init_inputs, "get_init_inputs", task_file)
    # Saved before any model is built from them: a Model may keep an init input (a module handed over
    # by pike.optimize) and change it in place, moved to the device or given re-randomised weights.
    save(init_inputs, given / "init_inputs.pt")

    def build(seed: int, on: bool):
        seed_all(seed)
        return construct(Model, init_inputs, device, on).to(device)

    memory = memory_estimate(Model, init_inputs, device)
    progress("building the model", note=memory["text"])
    if memory.get("short"):
        raise TaskFailure(f"the model does not fit: {memory['text']}")
    # Built on the device when asked (and possible): candidates are then built there too (harness.construct).
    asked = job.init_on == "device" and device.type != "cpu"
    on_device, built_note = False, ""
    for on in ((True, False) if asked else (False,)):
        try:
            model, on_device = build(job.init_seed, on), on
            break
        except Exception as e:  # noqa: BLE001
            if not on:
                raise task_failure("Model(*get_init_inputs())", e, task_file) from None
            built_note = f"built on the CPU: under torch.device({str(device)!r}) Model(*init_inputs) raised {type(e).__name__}: {e}"[:300]
    lap("import_init_s")
    call_seed = job.call_seed
    keep = max(1, job.random_count)  # sets kept in memory for the probes below
    kept: list[list] = []
    n_pool, mutates, flags = job.pool, False, []
    with torch.inference_mode():
        p = 0
        while p < n_pool:
            progress("input sets", p + 1, n_pool)
            seed_all(job.input_seed + p)
            lap("save_s")
            inputs = to_cpu(task_call(mod.get_inputs, "get_inputs", task_file))
            lap("inputs_s")
            if p == 0 and not any(isinstance(t, torch.Tensor) for t in inputs):
                raise TaskFailure("get_inputs() returned no tensors")
            x = to_device(inputs, device)
            before = [t.clone() if isinstance(t, torch.Tensor) else None for t in x]
            try:
                seed_all(call_seed + p)
                out = model(*x)
            except Exception as e:  # noqa: BLE001
                raise task_failure("Model.forward", e, task_file) from None
            if not any(isinstance(t, torch.Tensor) for t in leaves(out)):
                raise TaskFailure("Model.forward returned no tensor")
            mutates |= any(b is not None and not same(t, b) for t, b in zip(x, before))
            devices = output_devices(out)  # where the task leaves its outputs (before the copy)
            lap("forward_s")
            out = to_cpu(out, copy=True)  # a model may reuse one output buffer across calls
            lap("copy_out_s")
            if p == 0:
                golden = Golden(model) if low_precision(out) else None
            if golden is not None:
                golden.save(x, call_seed + p, out, answers / "golden" / f"{p}.pt")
                lap("golden_s")
            if p == 0:
                first_out = out
                # Bound the pool's disk and memory: big sets get fewer held-out copies.
                per_set = nbytes(inputs) + nbytes(out)
                n_pool = min(n_pool, max(job.min_pool, job.pool_bytes // max(per_set, 1)))
            save(inputs, given / "inputs" / f"{p}.pt")
            save(out, answers / "outputs" / f"{p}.pt")
            if p < keep:
                kept.append(inputs)
            del x, before, out
            p += 1
        lap("save_s")
        # Determinism: same inputs, same RNG seed -> same output, unless the model keeps state.
        progress("determinism probes")
        x0 = to_device(kept[0], device)
        seed_all(call_seed)
        again = to_cpu(model(*x0))
        if not all(same(a, b) for a, b in zip(leaves(again), leaves(first_out)) if isinstance(a, torch.Tensor)):
            flags.append("stateful")
        seed_all(call_seed + 7919)
        other_rng = to_cpu(model(*x0))
        if not all(same(a, b) for a, b in zip(leaves(other_rng), leaves(first_out)) if isinstance(a, torch.Tensor)):
            flags.append("random")
        if mutates:
            flags.append("mutates_inputs")
        del again, other_rng
        lap("probes_s")
        # How far PyTorch's default eager is from this strict-fp32 reference: candidates are judged with
        # a tolerance never tighter (compare.eager_atol). Not measurable when a call changes the
        # model's state or its inputs.
        measurable = not ({"stateful", "mutates_inputs"} & set(flags))
        eager_default = None
        for p in range(n_pool if measurable else 0):
            progress("PyTorch default eager", p + 1, n_pool)
            x = to_device(load(given / "inputs" / f"{p}.pt", weights_only=False), device)
            eager_default = merge_deviations(eager_default, default_deviation(
                model, x, call_seed + p, load(answers / "outputs" / f"{p}.pt", weights_only=False)))
        lap("eager_default_s")

        def draw(seed: int) -> list:
            seed_all(seed)
            return to_cpu(task_call(mod.get_inputs, "get_inputs", task_file))

        second = second_shape(job, draw, model, first_out, kept[0], golden, flags, out_dir / "batch_alt", device, progress)
        lap("batch_alt_s")
    # Another seed's weights on the same inputs: the tolerance must tell them apart.
    progress("another seed's weights")
    other = build(job.init_seed + 1, on_device)
    with torch.inference_mode():
        seed_all(call_seed)
        save(to_cpu(other(*x0)), answers / "other_seed.pt")
    del other
    lap("other_seed_s")
    # Re-randomised weights, loaded into the reference; the candidate gets the same state_dict.
    spec = weights_mod.state_dict_spec(model)
    n_random = min(job.random_count, n_pool, len(kept)) if spec else 0
    if n_random:
        sd = weights_mod.rerandomised_state_dict(model, job.init_seed + 2)
        model.load_state_dict(sd)
        if golden is not None:
            golden.load_state_dict(sd)
        with torch.inference_mode():
            for p in range(n_random):
                progress("re-randomised weights", p + 1, n_random)
                seed_all(call_seed + p)
                x = to_device(kept[p], device)
                out = to_cpu(model(*x))
                save(out, answers / "random" / f"{p}.pt")
                if measurable:
                    eager_default = merge_deviations(eager_default, default_deviation(model, x, call_seed + p, out))
                if golden is not None:
                    golden.save(x, call_seed + p, out, answers / "golden_random" / f"{p}.pt")
        save(to_cpu(sd), given / "random_sd.pt")
    lap("random_weights_s")
    if golden is not None and golden.on:
        golden.model = None  # free it before meta is written
    golden_meta = None if golden is None else (golden.why_not or "ok")
    meta = {
        "pool": n_pool,
        "flags": flags,
        "out_devices": devices,
        "state_dict": spec,
        "random_count": n_random,
        "input_bytes": nbytes(kept[0]),
        "output_bytes": nbytes(first_out),
        "output_dtypes": output_dtypes(first_out),
        "params": sum(p.numel() for p in model.parameters()),
        "input_shapes": [list(t.shape) if isinstance(t, torch.Tensor) else repr(t) for t in kept[0]],
        "init_seed": job.init_seed,
        "built_on": "device" if on_device else "cpu",  # where candidates are built (harness.construct)
        "built_note": built_note,
        "call_seed": call_seed,
        "durations_s": spent,
        # None: full-precision outputs; "ok": golden/ (and golden_random/) hold fp32 outputs; else why not.
        "golden": golden_meta,
        "memory": {k: v for k, v in memory.items() if k != "short"},
        # Init inputs may hold instances of the task's classes: candidates import its copy to read them.
        "task_module": job.module_name, "task_file": task_file.name,
        # PyTorch default eager against this reference (compare.deviation over every input set, the
        # re-randomised weights' too); None when not measurable (a stateful or input-mutating task).
        "eager_default": eager_default,
        # Tasks without an alternate size set: the inputs at another batch size (batch_alt/), or why not.
        "batch_alt": second,
    }
    write_json(out_dir / "meta.json", meta)
    if second.get("alt"):  # an entry of its own inside this one, read like an alternate size set's
        write_json(out_dir / "batch_alt" / "meta.json", {
            **meta, "pool": second["sets"], "random_count": 0, "batch_alt": None, "input_shapes": second["input_shapes"],
            "output_bytes": second["output_bytes"], "input_bytes": second["input_bytes"], "label": f"batch {second['alt']}"})
    return {"status": "ok", "meta": meta}

