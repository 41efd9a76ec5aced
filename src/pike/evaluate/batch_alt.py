"""A second shape for a task without an alternate size set: its inputs at another batch size.

A solution hard-wired to the shapes it was tested on (``x.view(16, 8, 64)``) passes every check at
those shapes. Tasks with ``SIZES`` name an alternate size set; for the others (every KernelBench
task, every model handed to ``pike.optimize``) the reference job varies the batch dimension when
the model accepts it: every tensor input has the same first dimension B, and at another B the model
runs and each output whose first dimension was B follows. Otherwise the task has no second shape,
and the reference's meta says why. Runs in the reference job (trusted code only).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from pike.evaluate.harness import TaskFailure, leaves, nbytes, save, seed_all, to_cpu, to_device


def batch_of(inputs: list) -> tuple[int | None, str]:
    """(B, "") when every tensor input of one or more dimensions has first dimension B, else (None, why)."""
    dims = [t.shape[0] for t in inputs if isinstance(t, torch.Tensor) and t.dim() >= 1]
    if not dims:
        return None, "no input has a batch dimension"
    if len(set(dims)) > 1:
        return None, f"the inputs' first dimensions differ ({', '.join(map(str, dims))}): no common batch dimension"
    return dims[0], ""


def other_batch(b: int) -> int:
    """Half the batch where that still leaves a batch of 2 or more, else one more."""
    return b // 2 if b >= 4 else b + 1


def at_batch(inputs: list, b: int, more) -> list:
    """``inputs`` with ``b`` rows: the first ones, then rows of ``more()`` (another draw of the
    task's inputs) where there are not enough."""
    extra = None
    out = []
    for i, t in enumerate(inputs):
        if isinstance(t, torch.Tensor) and t.dim() >= 1:
            if t.shape[0] < b:
                extra = extra if extra is not None else more()
                t = torch.cat([t, extra[i]], 0)
            t = t[:b].clone()
        out.append(t)
    return out


def follows(out_b, out_alt, b: int, alt: int) -> str:
    """"" when the outputs at batch ``alt`` are those at ``b`` with the batch dimension changed, else why not."""
    a = [t for t in leaves(out_b)]
    c = [t for t in leaves(out_alt)]
    if len(a) != len(c):
        return "its outputs have another structure at another batch size"
    batched = 0
    for x, y in zip(a, c):
        if not isinstance(x, torch.Tensor):
            continue
        if not isinstance(y, torch.Tensor) or x.dtype != y.dtype:
            return "its outputs have other types at another batch size"
        if x.dim() >= 1 and x.shape[0] == b:
            if tuple(y.shape) != (alt, *x.shape[1:]):
                return f"an output of shape {tuple(x.shape)} became {tuple(y.shape)} at batch {alt}"
            batched += 1
        elif x.shape != y.shape:
            return f"an output of shape {tuple(x.shape)} became {tuple(y.shape)} at batch {alt}"
    return "" if batched else "no output has the batch dimension"


def second_shape(job, draw, model, first_out, first_inputs: list, golden, flags: list, alt_dir: Path, device,
                 progress) -> dict:
    """In the reference job, where the task has no alternate size set (``job.batch_alt``: the sets
    wanted): its inputs at another batch size (``draw(seed)``: the task's inputs drawn after that
    seed) and the strict-fp32 outputs there, laid out in ``alt_dir`` as an entry's ``given/`` and
    ``answers/``. Returns what the meta says of it: the batch sizes and the sets, or why there are
    none."""
    n = job.batch_alt
    if not n:
        return {"why": "the task has an alternate size set" if job.has_alt_size else "not asked"}
    if "stateful" in flags:
        return {"why": "the model keeps state between calls"}
    b, why = batch_of(first_inputs)
    if b is None:
        return {"why": why}
    alt = other_batch(b)
    given, answers = alt_dir / "given" / "inputs", alt_dir / "answers"
    for sub in (given, answers / "outputs"):
        sub.mkdir(parents=True, exist_ok=True)
    for p in range(n):
        progress("another batch size", p + 1, n)
        try:
            inputs = at_batch(draw(job.input_seed + 10_000 + p), alt, lambda p=p: draw(job.input_seed + 20_000 + p))
            x = to_device(inputs, device)
            seed_all(job.call_seed + p)
            out = to_cpu(model(*x), copy=True)
        except TaskFailure:
            raise
        except Exception as e:  # noqa: BLE001 - a model that only runs at its own batch size
            shutil.rmtree(alt_dir)
            return {"batch": b, "why": f"the model does not run at batch {alt}: {type(e).__name__}: {str(e)[:200]}"}
        if p == 0:
            why = follows(first_out, out, b, alt)
            if why:
                shutil.rmtree(alt_dir)
                return {"batch": b, "why": why}
            shapes = [list(t.shape) if isinstance(t, torch.Tensor) else repr(t) for t in inputs]
            sizes = {"input_bytes": nbytes(inputs), "output_bytes": nbytes(out)}
        save(inputs, given / f"{p}.pt")
        save(out, answers / "outputs" / f"{p}.pt")
        if golden is not None:
            golden.save(x, job.call_seed + p, out, answers / "golden" / f"{p}.pt")
    return {"batch": b, "alt": alt, "sets": n, "input_shapes": shapes, **sizes}
