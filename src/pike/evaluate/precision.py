"""Precision tags from what a forward does, not from words in its source.

A candidate that only compares ``x.dtype == torch.bfloat16`` mentions bf16 and computes in fp32;
another casts to bf16 through a variable the source never names. So the child runs one forward of
the checked model under a dispatch mode that records the dtypes the operators actually see: the
inputs of matrix products, convolutions and attention (where lower precision pays), every floating
output, and whether autocast or TF32 matmuls were on when a product ran. A dtype of the task's own
inputs or outputs (a bf16 task; the checks have made the outputs' dtypes the reference's) is no
lowering. Work inside a custom kernel (Triton, CUDA, C++) is invisible to
the dispatcher: its inputs and outputs are seen, its internals are left to the static hints.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# Operators whose inputs' dtype decides the arithmetic precision (matrix units, conv, attention).
PRODUCT_OPS = ("mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "addmv", "mv", "dot", "vdot",
               "convolution", "_convolution", "conv1d", "conv2d", "conv3d", "cudnn_convolution",
               "mkldnn_convolution", "_scaled_mm", "_int_mm", "einsum", "_scaled_dot_product")
LOW = {torch.bfloat16: "bf16", torch.float16: "fp16"}
FP8_PREFIX = "float8"
PRECISION_TAGS = ("bf16", "fp16", "fp8", "tf32", "autocast")


class DtypeRecorder(TorchDispatchMode):
    """Records dtypes during the forward it wraps; changes nothing."""

    def __init__(self):
        super().__init__()
        self.product_dtypes: set[torch.dtype] = set()
        self.output_dtypes: set[torch.dtype] = set()
        self.tf32_matmul = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name.startswith(PRODUCT_OPS):
            dtypes = {t.dtype for t in _tensors((args, kwargs)) if t.is_floating_point()}
            self.product_dtypes |= dtypes
            device = next((t.device.type for t in _tensors((args, kwargs))), "cpu")
            if device == "cuda" and torch.float32 in dtypes and torch.backends.cuda.matmul.allow_tf32 \
                    and "conv" not in name:  # cuDNN's TF32 convolutions are PyTorch's default, eager's own precision
                self.tf32_matmul = True
        self.output_dtypes |= {t.dtype for t in _tensors(out) if t.is_floating_point()}
        return out


class AutocastSeen(TorchFunctionMode):
    """Whether a torch function ran with autocast on (below, in dispatch, autocast reads as off)."""

    def __init__(self):
        super().__init__()
        self.on = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if not self.on:
            self.on = any(_autocast_enabled(d) for d in ("cpu", "cuda"))
        return func(*args, **(kwargs or {}))


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except (TypeError, RuntimeError):  # a torch without the device argument
        return False


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple, dict)):  # the base classes' accessors: no method of a subclass runs
        for o in list.__iter__(obj) if isinstance(obj, list) else tuple.__iter__(obj) if isinstance(obj, tuple) else dict.values(obj):
            yield from _tensors(o)


def observe(model, inputs) -> dict:
    """One forward of ``model`` under the recorders; the observation as plain data."""
    rec, autocast = DtypeRecorder(), AutocastSeen()
    with autocast, rec:
        out = model(*inputs)
    return {"product_dtypes": _names(rec.product_dtypes), "output_dtypes": _names(rec.output_dtypes),
            "io_dtypes": _names({t.dtype for t in _tensors((inputs, out)) if t.is_floating_point()}),
            "autocast": autocast.on, "tf32_matmul": rec.tf32_matmul}


def _names(dtypes) -> list[str]:
    return sorted(_name(d) for d in dtypes)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def runtime_tags(seen: dict) -> list[str]:
    """Precision tags from an observation: a lower floating type that the forward computed with or
    produced and that is not the task's own (its inputs' or outputs'), autocast, TF32 matmuls."""
    used = set(seen.get("product_dtypes", [])) | set(seen.get("output_dtypes", []))
    tags = {_tag(d) for d in used - set(seen.get("io_dtypes", []))} - {None}
    if seen.get("autocast"):
        tags.add("autocast")
    if seen.get("tf32_matmul"):
        tags.add("tf32")
    return sorted(tags)


def _tag(dtype_name: str) -> str | None:
    if dtype_name.startswith(FP8_PREFIX):
        return "fp8"
    return {"bfloat16": "bf16", "float16": "fp16"}.get(dtype_name)


def merge_tags(static: list[str], seen: dict | None) -> tuple[list[str], list[str]]:
    """(tags, hints): without an observation the static tags stand; with one, the precision tags come
    from it and the static precision tags that it did not confirm become hints (they may still hold
    inside a custom kernel, which the dispatcher cannot see)."""
    if seen is None:
        return sorted(static), []
    observed = runtime_tags(seen)
    other = [t for t in static if t not in PRECISION_TAGS]
    hints = [t for t in static if t in PRECISION_TAGS and t not in observed]
    return sorted(set(other) | set(observed)), sorted(hints)
