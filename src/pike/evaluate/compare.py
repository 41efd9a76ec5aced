"""Comparing a candidate's outputs with the reference's (evaluator step 6).

Runs in the orchestrator, on tensors the children saved, or in the comparator process, on their
memory: candidate code runs in neither, so it cannot patch the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# (atol, rtol) per dtype. fp32 1e-2 is the paper's (KernelBench's) setting.
DEFAULT_TOL = {torch.float64: (1e-2, 1e-2), torch.float32: (1e-2, 1e-2), torch.float16: (1e-2, 1e-2), torch.bfloat16: (3e-2, 3e-2)}
DTYPE_NAMES = {torch.float64: "fp64", torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
DTYPES_BY_NAME = {v: k for k, v in DTYPE_NAMES.items()}
STRICT_TOL = {torch.float64: (1e-4, 1e-4), torch.float32: (1e-4, 1e-4), torch.float16: (1e-3, 1e-3), torch.bfloat16: (1e-2, 1e-2)}


@dataclass
class Tolerance:
    strict: bool = False
    # Set per task when the elementwise tolerance cannot tell the reference from zeros, its mean or
    # another seed's output: then ||out - ref|| / ||ref|| must also be below this.
    rel_norm: float | None = None
    # atol is at least this where PyTorch's own default eager (TF32 convolutions, say) is further
    # from the strict-fp32 reference than atol + rtol * |ref| allows (see ``eager_atol``).
    atol_floor: float = 0.0

    def for_dtype(self, dtype: torch.dtype) -> tuple[float, float]:
        table = STRICT_TOL if self.strict else DEFAULT_TOL
        atol, rtol = table.get(dtype, table[torch.float32])
        return max(atol, self.atol_floor), rtol

    def describe(self, dtypes: list[str] | None = None) -> str:
        """The tolerance of each output dtype named (``["bf16"]``; default fp32), e.g. for a header."""
        parts = []
        for name in [d for d in dtypes or [] if d in DTYPES_BY_NAME] or ["fp32"]:
            atol, rtol = self.for_dtype(DTYPES_BY_NAME[name])
            parts.append(f"atol={atol:.3g}, rtol={rtol:.3g} ({name}{', strict' if self.strict else ''})")
        text = "; ".join(parts)
        if self.atol_floor > Tolerance(self.strict).for_dtype(torch.float32)[0]:
            text += f"; atol is {EAGER_ERROR_FACTOR:g}x how far PyTorch's default eager is from strict fp32 on this task"
        return text + (f"; relative norm {self.rel_norm:.3g}" if self.rel_norm is not None else "")


def policy(tol: Tolerance, dtypes: list[str], golden: bool = False) -> str:
    """The numerical policy a prompt states: what the reference is and the tolerance the evaluator
    applies to each output dtype the task has (``dtypes``: e.g. ``["bf16"]``; empty: fp32's); with
    ``golden``, the second way a low-precision output passes (``within_eager_error``)."""
    kinds = [d for d in dtypes if d in DTYPES_BY_NAME] or ["fp32"]
    judged = "; ".join(f"{d} outputs within atol={a:.3g}, rtol={r:.3g}" for d in kinds for a, r in [tol.for_dtype(DTYPES_BY_NAME[d])])
    text = ("the reference is the task's Model as written, run with TF32 and reduced-precision reductions off; "
            f"candidates' outputs must match it elementwise: {judged}")
    if golden and not tol.strict:
        text += ", or be no further from the model run in fp32 than the reference itself is"
    text += "; lower precision inside is allowed within that"
    if tol.atol_floor > Tolerance(tol.strict).for_dtype(torch.float32)[0]:
        text += f" (atol widened to {EAGER_ERROR_FACTOR:g}x how far PyTorch's default eager is from the reference here)"
    return text + (f"; also a relative norm error below {tol.rel_norm:.3g}" if tol.rel_norm is not None else "")


def output_dtypes(out) -> list[str]:
    """The floating dtypes among a task's outputs, by name, in order of first appearance."""
    seen = [DTYPE_NAMES.get(v.dtype, str(v.dtype)) for _, v in flatten(out) if isinstance(v, torch.Tensor) and v.is_floating_point()]
    return list(dict.fromkeys(seen))


def deviation(ref, out) -> dict | None:
    """How far ``out`` is from ``ref``, over every leaf: ``atol_needed`` is the smallest atol with which
    ``out`` passes, rtol as it is (per tolerance table: the largest ``|out - ref| - rtol * |ref|``);
    with the largest absolute error, the largest relative norm error, and integer values that differ
    (no tolerance covers those). NaN and Inf where both have them count as equal; elsewhere they make
    ``atol_needed`` infinite. Structures that differ give None: there is nothing to measure."""
    if structure(ref) != structure(out):
        return None
    tables = {"default": DEFAULT_TOL, "strict": STRICT_TOL}
    acc = {"atol_needed": {k: 0.0 for k in tables}, "max_abs": 0.0, "rel_norm": 0.0, "integer_mismatch": 0}
    for (_, r), (_, o) in zip(flatten(ref), flatten(out)):
        if not (isinstance(r, torch.Tensor) and isinstance(o, torch.Tensor) and r.shape == o.shape and r.dtype == o.dtype):
            continue
        if not r.is_floating_point():
            acc["integer_mismatch"] += 0 if r.is_complex() else int((r != o).sum())
            continue
        wide = torch.float64 if r.dtype == torch.float64 else torch.float32
        r, o = r.detach().reshape(-1), o.detach().reshape(-1)
        err_sq = ref_sq = 0.0
        step = _chunk(r)
        for start in range(0, r.numel(), step):
            rc, oc = r[start : start + step].to(wide), o[start : start + step].to(wide)
            both = torch.isfinite(rc) & torch.isfinite(oc)
            same_special = ~both & ((rc == oc) | (torch.isnan(rc) & torch.isnan(oc)))
            if not bool((both | same_special).all()):
                acc["atol_needed"] = {k: float("inf") for k in tables}
            rc, oc = rc.masked_fill(~both, 0.0), oc.masked_fill(~both, 0.0)
            err = (oc - rc).abs_()
            acc["max_abs"] = max(acc["max_abs"], float(err.max()))
            err_sq, ref_sq = err_sq + float(err.square().sum()), ref_sq + float(rc.square().sum())
            for name, table in tables.items():
                rtol = table.get(r.dtype, table[torch.float32])[1]
                acc["atol_needed"][name] = max(acc["atol_needed"][name], float((err - rtol * rc.abs()).max()))
        if ref_sq > 0:
            acc["rel_norm"] = max(acc["rel_norm"], (err_sq / ref_sq) ** 0.5)
    return acc


def merge_deviations(a: dict | None, b: dict | None) -> dict | None:
    if a is None or b is None:
        return a or b
    return {"atol_needed": {k: max(a["atol_needed"][k], b["atol_needed"][k]) for k in a["atol_needed"]},
            "max_abs": max(a["max_abs"], b["max_abs"]), "rel_norm": max(a["rel_norm"], b["rel_norm"]),
            "integer_mismatch": a["integer_mismatch"] + b["integer_mismatch"]}


def eager_atol(measured: dict | None, strict: bool) -> float:
    """The atol floor a task's candidates are judged with: EAGER_ERROR_FACTOR times the atol PyTorch's
    default eager needs against the strict-fp32 reference, so that eager never fails against itself
    (0 when it needs none, or when no atol would do: a NaN where the reference has none)."""
    need = (measured or {}).get("atol_needed", {}).get("strict" if strict else "default", 0.0)
    return EAGER_ERROR_FACTOR * need if 0 < need < float("inf") else 0.0


@dataclass
class Diff:
    ok: bool
    reason: str = ""
    max_abs: float = 0.0
    max_rel: float = 0.0
    note: str = ""  # how a passing leaf passed, when not by the elementwise tolerance

    def merge(self, other: "Diff") -> "Diff":
        return Diff(
            ok=self.ok and other.ok,
            reason=self.reason or other.reason,
            max_abs=max(self.max_abs, other.max_abs),
            max_rel=max(self.max_rel, other.max_rel),
            note=self.note or other.note,
        )


def flatten(obj, path: str = "output") -> list[tuple[str, object]]:
    """Leaves of nested tuples/lists/dicts with a readable path each."""
    if isinstance(obj, (tuple, list)):
        out = []
        for i, v in enumerate(list.__iter__(obj) if isinstance(obj, list) else tuple.__iter__(obj)):
            out += flatten(v, f"{path}[{i}]")
        return out or [(path, obj)]
    if isinstance(obj, dict):
        out = []
        for k, v in sorted(dict.items(obj), key=lambda kv: str(kv[0])):
            out += flatten(v, f"{path}[{k!r}]")
        return out or [(path, obj)]
    return [(path, obj)]


def structure(obj):
    """The nesting shape of an output (to compare structures before values)."""
    if isinstance(obj, (tuple, list)):
        return [structure(v) for v in (list.__iter__(obj) if isinstance(obj, list) else tuple.__iter__(obj))]
    if isinstance(obj, dict):
        return {k: structure(v) for k, v in dict.items(obj)}
    return type(obj).__name__


def _compare_tensor(path: str, ref: torch.Tensor, out: torch.Tensor, tol: Tolerance, gold=None) -> Diff:
    d = _compare_elementwise(path, ref, out, tol)
    # Any floating leaf of such a task (an fp32 state computed from bf16 activations carries their rounding too).
    if d.ok or gold is None or tol.strict or not ref.is_floating_point() or "values outside" not in d.reason:
        return d
    gold = gold() if callable(gold) else gold
    if not isinstance(gold, torch.Tensor) or gold.shape != ref.shape:
        return d
    g = within_eager_error(ref.detach().reshape(-1), out.detach().reshape(-1), gold.detach().reshape(-1), tol)
    return g if g.ok else d


# A bf16/fp16 reference carries eager's own rounding: where a sum cancels to near zero, eager and a
# more precise candidate (fused ops with fp32 intermediates, as torch.compile makes) differ by an ulp
# of the summands, far outside the elementwise tolerance of the small result. Both are then measured
# against the same model run in fp32: the candidate passes if its error is at most EAGER_ERROR_FACTOR
# times eager's, in the worst element and on average (the criterion FlashAttention's tests use).
EAGER_ERROR_FACTOR = 2.0


def within_eager_error(ref: torch.Tensor, out: torch.Tensor, gold: torch.Tensor, tol: Tolerance) -> Diff:
    atol, _ = tol.for_dtype(ref.dtype)
    n = ref.numel()
    max_c = max_r = max_g = sum_c = sum_r = 0.0
    step = _chunk(ref)
    for start in range(0, n, step):
        r = ref[start : start + step].float()
        o = out[start : start + step].float()
        g = gold[start : start + step].float()
        if not (bool(torch.isfinite(o).all()) and bool(torch.isfinite(g).all()) and bool(torch.isfinite(r).all())):
            return Diff(False, "non-finite values")
        e_c, e_r = (o - g).abs_(), (r - g).abs_()
        max_c, max_r, max_g = max(max_c, float(e_c.max())), max(max_r, float(e_r.max())), max(max_g, float(g.abs().max()))
        sum_c, sum_r = sum_c + float(e_c.sum()), sum_r + float(e_r.sum())
    k = EAGER_ERROR_FACTOR
    # Only where the bound still tells the output from zeros (an output that small says nothing).
    discriminating = max_g > k * max_r + atol
    if discriminating and max_c <= k * max_r and sum_c <= k * sum_r:
        return Diff(True, "", note=(f"{ref.dtype} outputs within {k:g}x eager's own error against the model in fp32 "
                                    f"(max {max_c:.3g} vs eager's {max_r:.3g}, mean {sum_c / n:.3g} vs {sum_r / n:.3g})"))
    return Diff(False, "outside eager's own error against fp32")


def _compare_elementwise(path: str, ref: torch.Tensor, out: torch.Tensor, tol: Tolerance) -> Diff:
    if type(out) is not torch.Tensor:
        return Diff(False, f"{path}: a {type(out).__name__}, not a plain torch.Tensor")
    if out.shape != ref.shape:
        return Diff(False, f"{path}: shape {tuple(out.shape)}, expected {tuple(ref.shape)}")
    if out.dtype != ref.dtype:
        return Diff(False, f"{path}: dtype {out.dtype}, expected {ref.dtype}")
    if out.is_sparse or ref.is_sparse:
        out, ref = out.to_dense(), ref.to_dense()
    if not (ref.is_floating_point() or ref.is_complex()):
        if torch.equal(out, ref):
            return Diff(True)
        bad = int((out != ref).sum())
        return Diff(False, f"{path}: {bad} of {ref.numel()} values differ (exact match required for {ref.dtype})")
    return _compare_values(path, ref.detach().reshape(-1), out.detach().reshape(-1), tol)


CHUNK = 1 << 20  # elements per pass: big outputs are compared chunk by chunk, in cache
DEVICE_CHUNK = 1 << 24  # on a GPU (the comparator): fewer passes, each a sync; 64 MB temporaries


def _chunk(t: torch.Tensor) -> int:
    return CHUNK if t.device.type == "cpu" else DEVICE_CHUNK


def _compare_values(path: str, ref: torch.Tensor, out: torch.Tensor, tol: Tolerance) -> Diff:
    # float32 arithmetic: exact for bf16/fp16 values, rounding far below any tolerance for fp32.
    wide = torch.float64 if ref.dtype == torch.float64 else torch.float32
    atol, rtol = tol.for_dtype(ref.dtype)
    n = ref.numel()
    max_abs = max_rel = 0.0
    n_bad = 0
    worst = (-float("inf"), 0.0, 0.0)  # (excess, got, expected)
    err_sq = ref_sq = 0.0
    step = _chunk(ref)
    for start in range(0, n, step):
        r = ref[start : start + step].to(wide)
        o = out[start : start + step].to(wide)
        if not (bool(torch.isfinite(r).all()) and bool(torch.isfinite(o).all())):
            r_nan, o_nan = torch.isnan(r), torch.isnan(o)
            if not torch.equal(r_nan, o_nan):
                return Diff(False, f"{path}: NaN at {int(torch.isnan(out).sum())} positions, reference has {int(torch.isnan(ref).sum())}")
            r_inf, o_inf = torch.isinf(r), torch.isinf(o)
            if not torch.equal(r_inf, o_inf) or not torch.equal(r[r_inf], o[o_inf]):
                return Diff(False, f"{path}: Inf pattern differs from the reference")
            special = r_nan | r_inf
            r = r.masked_fill(special, 0.0)
            o = o.masked_fill(special, 0.0)
        err = (o - r).abs_()
        r_abs = r.abs()
        max_abs = max(max_abs, float(err.max()))
        # Relative to |ref|, floored at atol: near-zero references do not blow it up.
        max_rel = max(max_rel, float((err / r_abs.clamp_min(atol)).max()))
        if tol.rel_norm is not None:
            err_sq += float(err.square().sum())
            ref_sq += float(r.square().sum())
        excess = err.sub_(r_abs.mul_(rtol).add_(atol))  # > 0 where outside atol + rtol * |ref|
        bad = int((excess > 0).sum())
        if bad:
            n_bad += bad
            i = int(torch.argmax(excess))
            if float(excess[i]) > worst[0]:
                worst = (float(excess[i]), float(o[i]), float(r[i]))
    if n_bad:
        return Diff(
            False,
            f"{path}: {n_bad} of {n} values outside atol={atol:g}, rtol={rtol:g}; "
            f"max abs error {max_abs:.3g}, max rel error {max_rel:.3g}; worst: got {worst[1]:.6g}, expected {worst[2]:.6g}",
            max_abs,
            max_rel,
        )
    if tol.rel_norm is not None:
        rn = (err_sq / max(ref_sq, 1e-60)) ** 0.5
        if rn > tol.rel_norm:
            return Diff(False, f"{path}: relative norm error {rn:.3g} > {tol.rel_norm:g}", max_abs, max_rel)
    return Diff(True, "", max_abs, max_rel)


def compare(ref, out, tol: Tolerance, golden=None) -> Diff:
    """Structure first, then each leaf: exact shape and dtype, NaN/Inf pattern, atol/rtol. A floating
    leaf that fails only on values may still pass by ``golden``, the task's model run in fp32 (tasks
    with bf16/fp16 outputs have one; see ``within_eager_error``)."""
    if structure(ref) != structure(out):
        return Diff(False, f"output structure {structure(out)}, expected {structure(ref)}")
    diff = Diff(True)
    ref_leaves = flatten(ref)
    golds: list | None = None

    def gold(j: int):  # read only when a leaf needs it (``golden`` may be a loader: big files)
        nonlocal golds
        if golds is None:
            value = golden() if callable(golden) else golden
            golds = [g for _, g in flatten(value)] if value is not None else []
            if len(golds) != len(ref_leaves):
                golds = []
        return golds[j] if golds else None

    for j, ((path, r), (_, o)) in enumerate(zip(ref_leaves, flatten(out))):
        if isinstance(r, torch.Tensor):
            d = _compare_tensor(path, r, o, tol, (lambda j=j: gold(j)) if golden is not None else None)
        elif r == o or (isinstance(r, float) and isinstance(o, float) and abs(r - o) <= 1e-6 * max(1.0, abs(r))):
            d = Diff(True)
        else:
            d = Diff(False, f"{path}: {o!r}, expected {r!r}")
        diff = diff.merge(d)
    return diff


def weak_tolerance(ref, other_seed, tol: Tolerance) -> list[str]:
    """Which impostors the elementwise tolerance fails to reject: zeros, the mean, another seed's output."""
    weak = []
    leaves = [(p, r) for p, r in flatten(ref) if isinstance(r, torch.Tensor) and r.is_floating_point()]
    others = dict(flatten(other_seed)) if other_seed is not None else {}
    for path, r in leaves:
        plain = Tolerance(strict=tol.strict, atol_floor=tol.atol_floor)
        impostors = {"zeros": torch.zeros_like(r), "mean": torch.full_like(r, float(r.float().mean()) if r.numel() else 0.0)}
        # A model without weights gives the same output for every seed: nothing to reject then.
        if path in others and isinstance(others[path], torch.Tensor) and not torch.equal(others[path], r):
            impostors["another seed's output"] = others[path]
        for name, fake in impostors.items():
            if _compare_tensor(path, r, fake, plain).ok:
                weak.append(f"{path}: {name}")
    return weak
