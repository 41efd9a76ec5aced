"""The reference stage (evaluator step 6's references): the task's own Model run by a reference job on
this device, cached on disk under a key of everything the outputs depend on, loaded once per process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from pike.evaluate.compare import Tolerance, weak_tolerance
from pike.evaluate.jobs import ReferenceJob
from pike.evaluate.verdict import UnsafeOutputs, load_child_file
from pike.task import Task, TaskError

# Bumped whenever what the cache holds changes shape or meaning, so that stale entries are never read.
CACHE_FORMAT = 4


@dataclass
class Reference:
    task: Task
    dir: Path
    meta: dict
    tolerance: Tolerance
    flags: list[str]
    _cache: dict = field(default_factory=dict)

    def path(self, sub: str, i: int) -> Path:
        return self.dir / sub / f"{i}.pt"

    def get(self, sub: str, i: int):
        # Small references stay in memory; large ones are read per use (one set is tens of MB).
        key = (sub, i)
        if key in self._cache:
            return self._cache[key]
        value = load_child_file(self.path(sub, i))  # tensors and plain values only, as for candidates
        if self.meta["output_bytes"] <= 4 * 2**20:
            self._cache[key] = value
        return value

    @property
    def has_golden(self) -> bool:
        """The model was also run in fp32 (bf16/fp16 tasks): ``golden/`` and ``golden_random/``."""
        return self.meta.get("golden") == "ok"

    def get_golden(self, sub: str, i: int):
        return self.get(sub, i) if self.has_golden else None


class ReferenceCache:
    """One evaluator's references. ``run_job(job, kind, timeout)`` runs a job in a child and returns
    its outcome and job directory; ``device_info()`` names the device (part of the key)."""

    def __init__(self, root: Path, config, run_job, device_info, cleanup):
        self.root, self.config = Path(root), config
        self._run_job, self._device_info, self._cleanup = run_job, device_info, cleanup
        self._loaded: dict[str, Reference] = {}

    def get(self, task: Task, *, pool: int | None = None, input_seed: int = 1000) -> Reference:
        """Reference outputs for ``task`` on this device, computed once and cached on disk."""
        c = self.config
        info = self._device_info()
        pool = pool or (c.trials + 2 * c.timing_sets)
        init_on = c.init_on if c.device_type != "cpu" else "cpu"
        key_src = json.dumps([CACHE_FORMAT, task.resolved_source, info.get("device_name"), info.get("torch"), c.device_type, pool, input_seed, c.random_weight_trials, c.seed, c.pool_max_bytes, init_on])
        key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
        if key in self._loaded:
            return self._loaded[key]
        final = self.root / "references" / key
        if not (final / "meta.json").exists():
            self._compute(task, final, pool=pool, input_seed=input_seed, init_on=init_on)
        ref = self._load(task, final)
        self._loaded[key] = ref
        return ref

    def _compute(self, task: Task, final: Path, *, pool: int, input_seed: int, init_on: str) -> None:
        c = self.config
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="tmp-", dir=final.parent))
        task_file = tmp / f"task_{task.name}.py"
        task_file.write_text(task.resolved_source)
        job = ReferenceJob(
            device="cuda" if c.device_type == "cuda" else "cpu", task=str(task_file), module_name=f"pike_task_{task.name}",
            out_dir=str(tmp), init_seed=42 + c.seed, input_seed=input_seed + c.seed, call_seed=7 + c.seed,
            pool=pool, min_pool=min(pool, 3), pool_bytes=c.pool_max_bytes, random_count=c.random_weight_trials, init_on=init_on,
        )
        out, d = self._run_job(job, "reference", timeout=max(c.timeout_s, 600))
        res = out.result
        if res is None:
            shutil.rmtree(tmp, ignore_errors=True)
            raise TaskError(task.path, f"the reference run {out.describe_exit()}:\n{out.log_tail[-2000:]}")
        if res["status"] != "ok":
            shutil.rmtree(tmp, ignore_errors=True)
            raise TaskError(task.path, res.get("message", "reference failed"))
        self._cleanup(d)
        try:
            os.rename(tmp, final)
        except OSError:  # a concurrent run finished first; its entry is identical
            shutil.rmtree(tmp, ignore_errors=True)

    def _load(self, task: Task, final: Path) -> Reference:
        meta = json.loads((final / "meta.json").read_text())
        tol = Tolerance(strict=self.config.strict)
        flags = list(meta["flags"])
        try:
            other = load_child_file(final / "other_seed.pt")
            first = load_child_file(final / "outputs" / "0.pt")
        except UnsafeOutputs as e:
            raise TaskError(task.path, f"the task's outputs must be tensors, or lists, tuples and dicts of tensors and plain values: {e}") from None
        weak = weak_tolerance(first, other, tol)
        if weak:
            # The elementwise tolerance cannot tell the reference from an impostor: add a norm check.
            atol, rtol = tol.for_dtype(torch.float32)
            tol = replace(tol, rel_norm=2 * rtol)
            flags.append("weak_tolerance")
            meta["weak_tolerance"] = weak
        return Reference(task=task, dir=final, meta=meta, tolerance=tol, flags=flags)
