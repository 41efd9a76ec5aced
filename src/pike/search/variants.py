"""The offline portfolio: variants of a task that an informed engineer would try by hand, no LLM.

Each variant is a complete solution file: the task's original source (the evaluator applies size sets
to the whole file), then an appended section defining ``class ModelNew(Model)``. ModelNew adds no
parameters, buffers or submodules (compiled functions and the CUDA-graph runner are plain attributes),
so it loads the reference's ``state_dict``. Names the section binds start with ``_pike`` so that
nothing clashes with the task's own. CUDA work happens lazily in ``forward``: every variant can be
constructed on CPU.

Ingredients (knobs), in the order their names are joined:

- ``channels_last``: 4-D/5-D parameters, buffers and floating inputs in channels-last layout, outputs
  made contiguous again. Only for tasks whose source names a 2-D/3-D convolution.
- ``cudnn_benchmark``: cuDNN autotunes its convolution algorithms (CUDA, convolution tasks).
- ``tf32``: TF32 matmuls and convolutions (CUDA).
- ``bf16_autocast`` / ``fp16_autocast``: ``torch.autocast`` around the forward (bf16 on CPU and CUDA,
  fp16 on CUDA). Floating outputs that come out in the autocast dtype are cast back to float32. That is
  exactly the dtype eager returns: autocast variants are made only for tasks whose source uses neither
  fp16 nor bf16 (their static precision tags), and at run time autocast is left off when a parameter,
  buffer or input already has a floating dtype narrower than 32 bits. So a half-width output can only
  come from autocast, whose inputs were float32 (autocast never narrows float64, and float64 outputs,
  integer outputs and float32 outputs pass through as they are). Casting to "the first input's dtype"
  would be wrong for models that take integer inputs, and "the parameters' dtype" for parameter-free ones.
- ``compile:<mode>``: ``torch.compile`` of Model.forward (CPU: default; CUDA: default,
  max-autotune-no-cudagraphs, reduce-overhead, and max-autotune on request).
- ``cuda_graph``: the eager forward (with the other knobs inside it) captured into a CUDA graph per
  input signature, replayed with inputs copied into static buffers and outputs cloned (see
  ``_PikeCudaGraph`` in a generated file).

The backend flags (TF32, cudnn.benchmark) are set around each call and restored after, not at import:
the interleaved re-timing loads eager, compile and a solution into one process, and eager must keep
PyTorch's defaults there.

Lower-precision variants are kept only when the evaluator finds them within tolerance; ``precision``
feeds the reports. Nothing here looks at a task's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pike.evaluate.baselines import compile_modes
from pike.evaluate.static import check_source
from pike.knobs import KNOB_ORDER, VariantKnobs
from pike.task import Task

AUTOCAST_DTYPES = {"bf16_autocast": "bfloat16", "fp16_autocast": "float16"}
CUDA_ONLY = {
    "cuda_graph": "CUDA graphs need a CUDA device",
    "tf32": "TF32 is a CUDA tensor-core format",
    "fp16_autocast": "fp16 autocast is for CUDA (CPU autocast uses bf16)",
    "cudnn_benchmark": "cudnn.benchmark tunes cuDNN, which runs on CUDA only",
}
CONV_ONLY = ("channels_last", "cudnn_benchmark")
# A 2-D/3-D convolution anywhere in the task: nn.Conv2d, nn.LazyConv3d, F.conv2d, nn.ConvTranspose2d ...
CONV_PATTERN = re.compile(r"(?i)conv(_?transpose)?[23]d")
REDUCED_PRECISION_TAGS = {"fp16", "bf16", "autocast", "fp8"}

# Single knobs, the likeliest winners first (the order a caller with little time would try them in).
# Cheapest first, so that a time limit cuts the costly ones: the knobs cost an evaluation each, the
# compile modes a compile, and max-autotune's took 35-212 s per task on an H200 (5 of 16 tasks
# timed out at 300 s), holding the GPU the whole time.
COMPILE_COST_ORDER = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")
SINGLES = tuple((k,) for k in ("cuda_graph", "tf32", "bf16_autocast", "fp16_autocast", "channels_last",
                               "cudnn_benchmark", *(f"compile:{m}" for m in COMPILE_COST_ORDER)))
# Combinations that compose and that engineers reach for; not the power set.
COMBOS = (
    ("tf32", "compile:default"),
    ("tf32", "compile:max-autotune-no-cudagraphs"),
    ("tf32", "compile:reduce-overhead"),
    ("tf32", "compile:max-autotune"),
    ("tf32", "cuda_graph"),
    ("bf16_autocast", "compile:default"),
    ("bf16_autocast", "compile:max-autotune-no-cudagraphs"),
    ("bf16_autocast", "cuda_graph"),
    ("fp16_autocast", "compile:default"),
    ("fp16_autocast", "cuda_graph"),
    ("channels_last", "compile:default"),
    ("channels_last", "cudnn_benchmark"),
    ("channels_last", "cudnn_benchmark", "tf32"),
    ("channels_last", "cudnn_benchmark", "bf16_autocast"),
    ("channels_last", "cudnn_benchmark", "tf32", "cuda_graph"),
)


@dataclass(frozen=True)
class Variant:
    name: str  # "eager", "compile:default", "bf16_autocast+compile:default", ...
    source: str | None  # a complete solution file; None when skipped
    knobs: tuple[str, ...]  # the ingredients, in KNOB_ORDER
    skipped: str = ""  # why it does not apply on this device / task (source is None then)
    precision: str = "fp32"  # "fp32", "tf32", "bf16", "fp16"

    @property
    def applies(self) -> bool:
        return self.source is not None


def variant_name(knobs: tuple[str, ...]) -> str:
    return "+".join(knobs) if knobs else "eager"


def precision_of(knobs: tuple[str, ...]) -> str:
    return VariantKnobs.of(knobs).precision


@dataclass(frozen=True)
class TaskFacts:
    """What the variants need to know about a task, read statically from its source."""

    has_conv: bool
    reduced_precision: tuple[str, ...]  # precision tags of the task itself (fp16, bf16, autocast, fp8)

    @classmethod
    def of(cls, task: Task) -> "TaskFacts":
        tags = set(check_source(task.source).tags) & REDUCED_PRECISION_TAGS
        return cls(bool(CONV_PATTERN.search(task.source)), tuple(sorted(tags)))


def skip_reason(knobs: tuple[str, ...], device_type: str, facts: TaskFacts, with_max_autotune: bool = False) -> str:
    """Why a combination of knobs does not apply here; "" when it does."""
    for knob in knobs:
        reason = ""
        if device_type != "cuda" and knob in CUDA_ONLY:
            reason = CUDA_ONLY[knob]
        elif knob.startswith("compile:"):
            mode = knob.removeprefix("compile:")
            if mode not in compile_modes(device_type, with_max_autotune):
                reason = (f"torch.compile mode {mode!r} is for CUDA (CPU uses default)" if device_type != "cuda"
                          else f"mode {mode!r} compiles slowly: on request (with_max_autotune)")
        elif knob in AUTOCAST_DTYPES and facts.reduced_precision:
            reason = f"the task already computes in reduced precision ({', '.join(facts.reduced_precision)})"
        elif knob in CONV_ONLY and not facts.has_conv:
            reason = "the task has no 2-D/3-D convolution (this only changes convolutions)"
        if reason:
            return reason if len(knobs) == 1 else f"{knob}: {reason}"
    return ""


def variants(task: Task, device_type: str, *, with_max_autotune: bool = False, combos: bool = True) -> list[Variant]:
    """The portfolio for ``task`` on ``device_type`` ("cpu", "cuda" or "cuda:N"): eager first, then single
    knobs, then (with ``combos``) combinations. Variants that do not apply come back with ``source``
    None and the reason in ``skipped``."""
    device_type = device_type.split(":")[0]
    facts = TaskFacts.of(task)
    out = [Variant("eager", task.source, ())]
    for knobs in SINGLES + (COMBOS if combos else ()):
        knobs = tuple(sorted(knobs, key=KNOB_ORDER.index))
        name, precision = variant_name(knobs), precision_of(knobs)
        reason = skip_reason(knobs, device_type, facts, with_max_autotune)
        if reason:
            out.append(Variant(name, None, knobs, reason, precision))
        else:
            out.append(Variant(name, render(task, knobs, device_type), knobs, "", precision))
    return out


def stages(portfolio: list[Variant]) -> list[list[Variant]]:
    """The order the offline strategy evaluates ``portfolio`` in, cheapest first, so that a time
    limit cuts the costly variants: eager and the knobs that need no compile, then their
    combinations (a few seconds each), then the compile modes (tens of seconds to minutes: 285 s
    for compile:default on mamba_selective_scan on an H200), then the combinations with the fastest
    of them. A combination's stage follows the stage of its knobs alone (``promising`` needs
    them). Without a time limit the same variants run, in a different order."""
    def compiled(v: Variant) -> bool:
        return any(k.startswith("compile:") for k in v.knobs)

    return [[v for v in portfolio if compiled(v) == c and (len(v.knobs) > 1) == combo]
            for c in (False, True) for combo in (False, True)]


SLOWER_ALONE = 1.05  # a knob more than 5% slower than eager on its own is not combined


def promising(knobs: tuple[str, ...], alone: dict[str, tuple[bool, float | None]], eager_ms: float | None) -> str:
    """Why a combination is not worth its evaluation, given how each knob did on its own
    (``alone[name] = (passed, runtime_ms)``); "" when it is. A knob that failed or slowed the task
    alone is left out, and of the compile modes only the fastest single one is combined."""
    compiled = {k: ms for k, (ok, ms) in alone.items() if k.startswith("compile:") and ok and ms}
    best_mode = min(compiled, key=compiled.get) if compiled else None
    for knob in knobs:
        if knob not in alone:
            return f"{knob} was not tried on its own"
        ok, ms = alone[knob]
        if not ok:
            return f"{knob} failed on its own"
        if knob.startswith("compile:") and knob != best_mode:
            return f"{knob} was not the fastest compile mode on its own ({best_mode} was)"
        if eager_ms and ms and ms > SLOWER_ALONE * eager_ms:
            return f"{knob} was {ms / eager_ms:.2f}x eager's time on its own"
    return ""


# ------------------------------------------------------------------------------------------------------
# Rendering: the task source, then one appended section. Helpers go in only where a knob needs them,
# so that a file's static precision tags are those of its knobs.

_MAP = '''
def _pike_map(fn, obj):
    """fn applied to every tensor of a (nested) tuple, list, named tuple or dict; the rest as it is."""
    if isinstance(obj, _pike_torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_pike_map(fn, o) for o in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_pike_map(fn, o) for o in obj)
    if isinstance(obj, dict):
        return type(obj)((k, _pike_map(fn, v)) for k, v in obj.items())
    return obj
'''

_CHANNELS_LAST = '''
def _pike_channels_last(t):
    if t.is_floating_point() and t.dim() == 4:
        return t.contiguous(memory_format=_pike_torch.channels_last)
    if t.is_floating_point() and t.dim() == 5:
        return t.contiguous(memory_format=_pike_torch.channels_last_3d)
    return t
'''

_AUTOCAST = '''
def _pike_narrow(tensors):
    """Whether any tensor has a floating dtype narrower than float32 (fp16, bf16, fp8)."""
    return any(isinstance(t, _pike_torch.Tensor) and t.is_floating_point() and t.element_size() < 4
               for t in tensors)


def _pike_widen(t):
    # Only autocast makes {name} tensors here (see ModelNew._pike_autocast_off): eager's are float32.
    return t.float() if t.dtype == {dtype} else t
'''

_FLAGS = '''
@_pike_contextlib.contextmanager
def _pike_backend_flags():
    """For this model's calls only, restored after (other models in the same process keep PyTorch's
    defaults): {what}."""
    saved = [{saved}]
{set_lines}
    try:
        yield
    finally:
{restore_lines}
'''

_CUDA_GRAPH = '''
_PIKE_SCALARS = (int, float, bool, str, type(None), _pike_torch.dtype, _pike_torch.device)


class _PikeCudaGraph:
    """Replays a CUDA graph of ``fn``, one per input signature.

    A signature is the shape, dtype, device and strides of each tensor argument and the value of each
    other argument (plain scalars only; other arguments, or tensors off the GPU, run eagerly). The first
    call of a signature copies its inputs into static buffers, warms ``fn`` up on a side stream (RNG
    state restored after, so seeded random ops draw as in eager) and captures one call. Every call
    copies its inputs into the buffers, replays, and returns clones of the static outputs: the next
    replay overwrites those, and callers may keep outputs across calls. A signature whose capture fails
    (a host sync, a data-dependent shape) runs eagerly from then on.
    """

    max_graphs = 8  # more signatures than this (changing shapes): new ones run eagerly

    def __init__(self, fn):
        self.fn = fn
        self.graphs = {}  # signature -> (graph, static inputs, static outputs), or None for eager

    def __call__(self, *args, **kwargs):
        names = sorted(kwargs)
        values = [*args, *(kwargs[k] for k in names)]
        key = self._signature(values, names)
        if key is not None and key not in self.graphs:
            fits = len(self.graphs) < self.max_graphs
            self.graphs[key] = self._capture(values, len(args), names) if fits else None
        entry = self.graphs.get(key) if key is not None else None
        if entry is None:
            return self.fn(*args, **kwargs)
        graph, static, out = entry
        for buf, value in zip(static, values):
            if isinstance(buf, _pike_torch.Tensor):
                buf.copy_(value)
        graph.replay()
        return _pike_map(lambda t: t.clone(), out)

    @staticmethod
    def _signature(values, names):
        key, on_gpu = [tuple(names)], False
        for v in values:
            if isinstance(v, _pike_torch.Tensor):
                if v.device.type != "cuda":
                    return None
                on_gpu = True
                key.append((tuple(v.shape), v.dtype, v.device, v.stride()))
            elif isinstance(v, _PIKE_SCALARS):
                key.append((type(v), v))
            else:
                return None
        return tuple(key) if on_gpu else None

    def _capture(self, values, n_args, names):
        static = [_pike_torch.empty_like(v).copy_(v) if isinstance(v, _pike_torch.Tensor) else v for v in values]
        device = next(v.device for v in static if isinstance(v, _pike_torch.Tensor))

        def call():
            return self.fn(*static[:n_args], **dict(zip(names, static[n_args:])))

        with _pike_torch.cuda.device(device):
            with _pike_torch.random.fork_rng(devices=[device], device_type="cuda"):
                side = _pike_torch.cuda.Stream()
                side.wait_stream(_pike_torch.cuda.current_stream())
                mode = _pike_torch.cuda.get_sync_debug_mode()
                try:
                    with _pike_torch.cuda.stream(side):
                        call()  # lazy init, autotuning (a model's own error comes back from the eager call)
                        # A host sync (.item(), nonzero, masked_select) cannot be captured: find it
                        # here, where it costs nothing, rather than by a failed capture.
                        _pike_torch.cuda.set_sync_debug_mode("error")
                        call()
                except RuntimeError:
                    return None
                finally:
                    _pike_torch.cuda.set_sync_debug_mode(mode)
                    _pike_torch.cuda.current_stream().wait_stream(side)
            graph = _pike_torch.cuda.CUDAGraph()
            try:
                with _pike_torch.cuda.graph(graph):
                    out = call()
            except Exception:  # not capturable all the same: this signature runs eagerly
                return None
        return graph, static, out
'''


def _flags(knobs: tuple[str, ...]) -> str:
    settings = []
    if "cudnn_benchmark" in knobs:
        settings.append("_pike_torch.backends.cudnn.benchmark")
    if "tf32" in knobs:
        settings += ["_pike_torch.backends.cuda.matmul.allow_tf32", "_pike_torch.backends.cudnn.allow_tf32"]
    named = (("cudnn_benchmark", "cudnn.benchmark"), ("tf32", "TF32 matmuls and convolutions"))
    what = " and ".join(w for k, w in named if k in knobs)
    return _FLAGS.format(
        what=what, saved=", ".join(settings),
        set_lines="\n".join(f"    {s} = True" for s in settings),
        restore_lines="\n".join(f"        {s} = saved[{i}]" for i, s in enumerate(settings)))


def render(task: Task, knobs: tuple[str, ...], device_type: str) -> str:
    """The solution file for one combination of knobs (no applicability check: see ``skip_reason``)."""
    mode = next((k.removeprefix("compile:") for k in knobs if k.startswith("compile:")), None)
    amp = next((AUTOCAST_DTYPES[k] for k in knobs if k in AUTOCAST_DTYPES), None)
    channels_last, graph = "channels_last" in knobs, "cuda_graph" in knobs
    flags = "tf32" in knobs or "cudnn_benchmark" in knobs

    head = [f"# ==== PIKE offline variant: {variant_name(knobs)} ====",
            "# Generated from the task above, which is left as written. ModelNew subclasses its Model and adds",
            "# no parameters, buffers or submodules, so it loads Model's state_dict.",
            "import torch as _pike_torch"]
    if flags:
        head.append("import contextlib as _pike_contextlib")
    if mode:
        head += ["import torch._inductor.config as _pike_inductor_config", "",
                 "# Inductor draws random numbers its own way; eager's draws keep a random task checkable.",
                 "_pike_inductor_config.fallback_random = True"]
    helpers = []
    if channels_last or amp or graph:
        helpers.append(_MAP)
    if channels_last:
        helpers.append(_CHANNELS_LAST)
    if amp:
        helpers.append(_AUTOCAST.format(dtype=f"_pike_torch.{amp}", name=amp))
    if flags:
        helpers.append(_flags(knobs))
    if graph:
        helpers.append(_CUDA_GRAPH)

    init = ["    def __init__(self, *args, **kwargs):", "        super().__init__(*args, **kwargs)"]
    if channels_last:
        init += ["        # Same tensors (state_dict keys unchanged), channels-last layout.",
                 "        for t in [*self.parameters(), *self.buffers()]:",
                 "            t.data = _pike_channels_last(t.data)"]
    if mode:
        arg = "" if mode == "default" else f", mode={mode!r}"
        init += ["        # A compiled bound method, not a wrapped module: the state_dict keeps Model's keys.",
                 f"        self._pike_compiled = _pike_torch.compile(super().forward{arg})"]
        if amp:
            # Autocast inside the compiled function, so that it is part of the traced graph: around
            # it, the graph is the same for fp16 and bf16, and Inductor's on-disk cache was seen to
            # hand the bf16 graph to an fp16 variant (torch 2.11, H100).
            init.append(f"        self._pike_compiled_amp = _pike_torch.compile(self._pike_amp_forward{arg})")
    if amp:
        init.append("        self._pike_narrow_params = None  # filled at the first call")
    if graph:
        init.append("        self._pike_graph = _PikeCudaGraph(self._pike_run)  # captures at the first call")

    call = "self._pike_compiled(*args, **kwargs)" if mode else "super().forward(*args, **kwargs)"
    run = []
    if channels_last:
        run += ["        args, kwargs = _pike_map(_pike_channels_last, args), _pike_map(_pike_channels_last, kwargs)"]
    if amp and mode:
        run += ["        if self._pike_autocast_off(args, kwargs):",
                f"            out = {call}",
                "        else:",
                "            out = _pike_map(_pike_widen, self._pike_compiled_amp(*args, **kwargs))"]
    elif amp:
        run += ["        if self._pike_autocast_off(args, kwargs):",
                f"            out = {call}",
                "        else:",
                f"            with _pike_torch.autocast({device_type!r}, dtype=_pike_torch.{amp}):",
                f"                out = {call}",
                "            out = _pike_map(_pike_widen, out)"]
    else:
        run.append(f"        out = {call}")
    if channels_last:
        run.append("        out = _pike_map(lambda t: t.contiguous(), out)")
    run.append("        return out")
    if run[-2:] == [f"        out = {call}", "        return out"]:
        run[-2:] = [f"        return {call}"]

    methods = []
    if amp and mode:
        methods += ["    def _pike_amp_forward(self, *args, **kwargs):",
                    f"        with _pike_torch.autocast({device_type!r}, dtype=_pike_torch.{amp}):",
                    "            return super().forward(*args, **kwargs)", ""]
    if amp:
        methods += ["    def _pike_autocast_off(self, args, kwargs):",
                    "        # A model that already computes in fp16/bf16 keeps its own precision.",
                    "        if self._pike_narrow_params is None:",
                    "            self._pike_narrow_params = _pike_narrow([*self.parameters(), *self.buffers()])",
                    "        return self._pike_narrow_params or _pike_narrow([*args, *kwargs.values()])", ""]
    entry = "self._pike_graph(*args, **kwargs)" if graph else None
    if graph:
        methods += ["    def _pike_run(self, *args, **kwargs):", *run, ""]
    forward = ["    def forward(self, *args, **kwargs):"]
    if flags:
        body = [f"        return {entry}"] if entry else run
        forward += ["        with _pike_backend_flags():", *("    " + line for line in body)]
    else:
        forward += [f"        return {entry}"] if entry else run

    cls = "class ModelNew(Model):\n" + "\n".join(init + [""] + methods + forward) + "\n"
    parts = ["\n".join(head), *(h.strip("\n") for h in helpers), cls]
    return task.source.rstrip() + "\n\n\n" + "\n\n\n".join(parts)
