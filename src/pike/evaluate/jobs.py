"""What a child process is asked to do: one typed job per kind, written to ``job.json`` in its job
directory by the orchestrator and read back by the worker (``load``).

- ``ProbeJob``: versions and device facts.
- ``ReferenceJob``: the task's own Model on a pool of input sets (never imports candidate code).
- ``BuildJob``: import a candidate so that its extensions compile, with no GPU.
- ``CandidateJob``: build, check (one ``Part`` per size) and, if the orchestrator says so, time.
- ``RetimeJob``: verified sources timed interleaved in one process; ``ProfileJob``: top kernels.

Plain data only (ints, strings, lists, dicts and nested jobs' parts), so that ``to_json`` and
``from_json`` round-trip exactly. Every file a job names is inside its job directory, named relative
to it: a child is given copies of the inputs it uses (``references.Reference.give``), never a path
into the reference cache or the evaluator's work directory.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar


class _Json:
    """``to_json``/``from_json`` for a dataclass whose fields are plain values, other such dataclasses,
    optional ones, or lists of them."""

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        kind = getattr(type(self), "kind", None)
        return {"kind": kind, **d} if kind else d

    @classmethod
    def from_json(cls, d: dict):
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in d:
                kwargs[f.name] = _decode(hints[f.name], d[f.name])
        return cls(**kwargs)


def _decode(hint, value):
    if value is None:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is list:
        return [args[0].from_json(v) for v in value] if args and _is_json_class(args[0]) else value
    for t in (hint, *args):  # X, or X | None
        if _is_json_class(t):
            return t.from_json(value)
    return value


def _is_json_class(t) -> bool:
    return isinstance(t, type) and not typing.get_args(t) and issubclass(t, _Json)


@dataclass
class ProbeJob(_Json):
    kind: ClassVar[str] = "probe"
    device: str
    bandwidth: bool = False  # measure the device's copy bandwidth (GPU)


@dataclass
class ReferenceJob(_Json):
    kind: ClassVar[str] = "reference"
    device: str
    task: str  # the task's source file
    module_name: str
    out_dir: str  # where the entry is written (the orchestrator signs it and moves it into the cache)
    init_seed: int
    input_seed: int
    call_seed: int
    pool: int  # input sets wanted
    min_pool: int  # at least this many, however large a set is
    pool_bytes: int  # bound on the pool's inputs and outputs
    random_count: int  # input sets also run with re-randomised weights
    init_on: str = "cpu"  # device: build the model under torch.device (harness.construct)
    imports: dict = field(default_factory=dict)  # the task's import paths and package (paths.task_imports)
    batch_alt: int = 0  # input sets at another batch size (a task without an alternate size set)
    has_alt_size: bool = False


@dataclass
class BuildJob(_Json):
    kind: ClassVar[str] = "build"
    code: str
    module_name: str
    imports: dict = field(default_factory=dict)


@dataclass
class Part(_Json):
    """One model a candidate's process builds and checks: the task's size, or its alternate size."""

    code: str  # the candidate's source with this size's constants
    data: str  # its reference's inputs, init inputs and re-randomised state dict (Reference.give)
    facts: dict  # what its process may know of the reference (Reference.facts)
    trials: list[int]  # input sets whose outputs are checked
    random_trials: list[int] = field(default_factory=list)  # input sets checked with re-randomised weights
    same_model: bool = False  # the task's inputs at another batch size: checked with the main part's model


@dataclass
class TimingPlan(_Json):
    config: dict  # TimingConfig.to_json()
    sets: list[int]  # input sets rotated while timing
    refill: list[int]  # held-out sets written into the timing buffers afterwards (one per timing set)
    seed: int  # which timed runs are spot-checked
    # fresh-content probe (candidates only): held-out sets timed against the repeated ones, a group for
    # the probe and one for its confirmation; None: no probe
    probe: list[list[int]] | None = None


@dataclass
class CandidateJob(_Json):
    kind: ClassVar[str] = "candidate"
    device: str
    module_name: str
    init_seed: int
    main: Part
    alt: Part | None = None
    timing: TimingPlan | None = None  # None: correctness only
    gpu_gate: bool = False  # ask for the device before its first use (lanes)
    ipc: bool = False  # hand outputs over as memory handles (the comparator compares them)
    imports: dict = field(default_factory=dict)


@dataclass
class RetimeEntry(_Json):
    name: str
    code: str
    env: dict = field(default_factory=dict)  # its extension build's environment


@dataclass
class RetimeJob(_Json):
    kind: ClassVar[str] = "retime"
    device: str
    module_name: str
    init_seed: int
    data: str
    facts: dict
    entries: list[RetimeEntry]
    sets: list[int]
    config: dict  # TimingConfig.to_json()
    max_time_s: float
    imports: dict = field(default_factory=dict)
    interval_target: float = 0.0  # stop once every speedup over the first entry is this tight (0: at the cap)


@dataclass
class ProfileJob(_Json):
    kind: ClassVar[str] = "profile"
    device: str
    module_name: str
    code: str
    data: str
    facts: dict
    init_seed: int
    rows: int = 10
    iters: int = 5
    imports: dict = field(default_factory=dict)


JOBS = {cls.kind: cls for cls in (ProbeJob, ReferenceJob, BuildJob, CandidateJob, RetimeJob, ProfileJob)}
Job = ProbeJob | ReferenceJob | BuildJob | CandidateJob | RetimeJob | ProfileJob


def load(job_dir: Path) -> Job:
    """The job in ``job_dir/job.json``."""
    d = json.loads((Path(job_dir) / "job.json").read_text())
    return JOBS[d.pop("kind")].from_json(d)
