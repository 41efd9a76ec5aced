"""Reading what a candidate's process handed over, in the orchestrator, with bounds.

A candidate chooses what its outputs are. ``torch.load(weights_only=True)`` already refuses pickled
objects (which would run code here), but a multi-megabyte nested Python list is legal and costs the
orchestrator a minute to unpickle. So before anything is parsed: the file may hold at most four
times the tensor bytes the reference's outputs take (plus room per leaf), its pickled part (in a
``torch.save`` archive everything that is not tensor data: structure and plain values) at most a
few hundred bytes per expected leaf; after parsing, nesting is bounded. The reader's time is counted
against the candidate (``verdict.Checker.parse_s``).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

MAX_DEPTH = 32  # an output's nesting, with the hand-over's own two or three levels


class UnsafeOutputs(Exception):
    """Outputs that are refused unread or unused (the message says why)."""


@dataclass
class Bounds:
    """What the handed-over outputs may take, from what the reference's outputs take."""

    tensor_bytes: int
    leaves: int

    def __add__(self, other: "Bounds") -> "Bounds":
        return Bounds(self.tensor_bytes + other.tensor_bytes, self.leaves + other.leaves)

    def __mul__(self, n: int) -> "Bounds":
        return Bounds(self.tensor_bytes * n, self.leaves * n)

    @property
    def file_bytes(self) -> int:
        return 4 * self.tensor_bytes + 512 * self.leaves + 2**16

    @property
    def structure_bytes(self) -> int:
        return 4096 + 256 * self.leaves


def of_outputs(ref, count: int) -> Bounds:
    """``count`` outputs of ``ref`` (a ``references.Reference``)."""
    return Bounds(ref.meta["output_bytes"], ref.leaves) * count


def load_child_file(path: Path, bounds: Bounds):
    """A file the candidate's process wrote. ``weights_only``: tensors, lists, tuples, dicts and plain
    values only; a pickled object would otherwise run its code here, in the orchestrator (which holds
    the API keys and the store)."""
    path = Path(path)
    size = path.stat().st_size
    if size > bounds.file_bytes:
        raise UnsafeOutputs(f"{path.name} is {_mb(size)}, more than the outputs it should hold can take "
                            f"({_mb(bounds.file_bytes)}: four times the reference's {_mb(bounds.tensor_bytes)} of tensors): not read")
    data = path.read_bytes()
    try:
        pickled = [m.file_size for m in zipfile.ZipFile(io.BytesIO(data)).infolist() if m.filename.endswith("/data.pkl")]
    except zipfile.BadZipFile:
        pickled = []
    if len(pickled) != 1:
        raise UnsafeOutputs(f"{path.name} is not a torch.save archive")
    if pickled[0] > bounds.structure_bytes:
        raise UnsafeOutputs(f"{path.name} holds {_mb(pickled[0])} of Python values and structure besides its tensors, for "
                            f"{bounds.leaves} expected tensors (at most {_mb(bounds.structure_bytes)}): outputs must be tensors, "
                            "not Python lists of numbers: not read")
    try:
        value = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError and friends
        raise UnsafeOutputs(f"{path.name} could not be read as tensors, lists, tuples, dicts and plain values "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
    check_depth(value, path.name)
    return value


def load_description(path: Path, bounds: Bounds):
    """A JSON description of outputs handed over as memory handles (``ipc.share``)."""
    path = Path(path)
    size = path.stat().st_size
    limit = 4096 + 2048 * bounds.leaves
    if size > limit:
        raise UnsafeOutputs(f"{path.name} is {_mb(size)}, for {bounds.leaves} expected tensors (at most {_mb(limit)}): "
                            "outputs must be tensors, not Python lists of numbers: not read")
    try:
        value = json.loads(path.read_bytes())
    except (RecursionError, ValueError) as e:
        raise UnsafeOutputs(f"{path.name} is not a readable description ({type(e).__name__})") from None
    check_depth(value, path.name, 2 * MAX_DEPTH + 8)  # each level of an output is two in its description
    return value


def check_depth(value, name: str, limit: int = MAX_DEPTH) -> None:
    """Raises UnsafeOutputs past ``limit`` levels of lists, tuples and dicts (the comparison recurses)."""
    level = [value]
    for _ in range(limit + 1):
        level = [c for v in level if isinstance(v, (list, tuple, dict)) for c in (v.values() if isinstance(v, dict) else v)]
        if not level:
            return
    raise UnsafeOutputs(f"{name} is nested deeper than {limit} levels")


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MB" if n >= 2**16 else f"{n} bytes"
