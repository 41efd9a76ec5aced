"""The reference stage (evaluator step 6's references): the task's own Model run by a reference job on
this device, cached on disk under a key of everything the outputs depend on, loaded once per process.

A cache entry is written only through a reference job: the job writes it into its own job directory,
and the orchestrator lists every file's sha256 in a signed manifest (``checksums``) and moves the
entry into the cache. Every file is checked against the manifest when it is read or copied; an entry
found changed is reported, removed and computed again, never used. An entry holds two parts:
``given/`` (input sets, init inputs, re-randomised weights), copies of which a candidate's process
receives in its job directory (``Reference.give``), and ``answers/`` (outputs, fp32 outputs, another
seed's output), which only the orchestrator and the comparator read.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from pike.evaluate import checksums
from pike.evaluate.checksums import Tampered
from pike.evaluate.compare import EAGER_ERROR_FACTOR, Tolerance, eager_atol, flatten, output_dtypes, policy, weak_tolerance
from pike.evaluate.jobs import ReferenceJob
from pike.evaluate.paths import task_imports
from pike.evaluate.progress import Watcher, describe
from pike.task import Task, TaskError

# Bumped whenever what the cache holds changes shape or meaning, so that stale entries are never read.
CACHE_FORMAT = 7
MANIFEST = "manifest.json"
# What a candidate's process may know of its reference (harness.RefData reads these).
FACTS = ("call_seed", "flags", "out_devices", "state_dict", "built_on", "task_module", "task_file", "label")

log = logging.getLogger(__name__)


@dataclass
class Reference:
    task: Task
    dir: Path
    meta: dict
    files: dict[str, str]  # file (relative to dir) -> sha256, from the signed manifest
    tolerance: Tolerance
    flags: list[str]
    leaves: int  # tensors in one output (bounds what a candidate may hand over)
    label: str = ""  # how a second shape's checks are named ("size small_alt", "batch 2")
    same_code: bool = False  # a second shape of the same code (batch_alt): checked with the main part's model
    batch_alt: "Reference | None" = None  # the task's inputs at another batch size (no alternate size set)
    parent: "Reference | None" = None  # the entry a batch_alt lives in (found changed: both go)
    _cache: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.label and self.task.size:
            self.label = f"size {self.task.size}"

    def _read(self, rel: str) -> bytes:
        with self._changed():
            if rel not in self.files:
                raise Tampered(f"{rel} is not in its manifest")
            return checksums.read_verified(self.dir / rel, self.files[rel])

    @contextmanager
    def _changed(self):
        """Tampered says which entry (``.ref``), for ``ReferenceCache.forget``."""
        try:
            yield
        except Tampered as e:
            e.ref = self.parent or self
            raise

    def load(self, rel: str):
        return torch.load(io.BytesIO(self._read(rel)), weights_only=True)

    def answer(self, sub: str, i: int) -> tuple[Path, str]:
        """The file of output ``i`` of ``answers/<sub>`` and its sha256 (for the comparator)."""
        rel = f"answers/{sub}/{i}.pt"
        return self.dir / rel, self.files.get(rel, "")

    def get(self, sub: str, i: int):
        # Small references stay in memory; large ones are read per use (one set is tens of MB).
        key = (sub, i)
        if key in self._cache:
            return self._cache[key]
        value = self.load(f"answers/{sub}/{i}.pt")
        if self.meta["output_bytes"] <= 4 * 2**20:
            self._cache[key] = value
        return value

    @property
    def has_golden(self) -> bool:
        """The model was also run in fp32 (bf16/fp16 tasks): ``golden/`` and ``golden_random/``."""
        return self.meta.get("golden") == "ok"

    def get_golden(self, sub: str, i: int):
        return self.get(sub, i) if self.has_golden else None

    def policy(self) -> str:
        """The numerical policy candidates are judged by, as a prompt states it."""
        dtypes = self.meta.get("output_dtypes")
        if dtypes is None:  # a reference stored before its meta named them
            dtypes = output_dtypes(self.load("answers/outputs/0.pt"))
        return policy(self.tolerance, dtypes, self.has_golden)

    def facts(self) -> dict:
        return {k: self.meta.get(k, self.label if k == "label" else None) for k in FACTS}

    def give(self, dest: Path, sets: list[int], *, random_weights: bool, init_inputs: bool = True) -> None:
        """Copies of what a candidate's process may see, for input sets ``sets``, into ``dest``: with
        ``init_inputs``, the init inputs and the task file that their pickles may name classes of."""
        names = [f"inputs/{i}.pt" for i in sets] + (["init_inputs.pt", self.meta["task_file"]] if init_inputs else [])
        names += ["random_sd.pt"] if random_weights else []
        with self._changed():
            for name in names:
                rel = f"given/{name}"
                if rel not in self.files:
                    raise Tampered(f"{rel} is not in its manifest")
                checksums.copy_verified(self.dir / rel, dest / name, self.files[rel])


class ReferenceCache:
    """One evaluator's references. ``run_job(job, job_dir, timeout)`` runs a job in a child and returns
    its outcome; ``job_dir(kind)`` names a new job directory; ``device_info()`` names the device."""

    def __init__(self, root: Path, config, run_job, job_dir, device_info, cleanup):
        self.root, self.config = Path(root) / "references" / checksums.key_id(), config
        self._run_job, self._job_dir, self._device_info, self._cleanup = run_job, job_dir, device_info, cleanup
        self._loaded: dict[str, Reference] = {}
        self._tmp = itertools.count()
        self.problems: list[str] = []  # entries found changed on disk (each also logged)

    def get(self, task: Task, *, pool: int | None = None, input_seed: int = 1000, second_shape: bool = True,
            progress=None) -> Reference:
        """Reference outputs for ``task`` on this device, computed once and cached on disk. With
        ``second_shape``, a task without an alternate size set also gets its inputs at another batch
        size (``batch_alt``). ``progress(task, text)`` hears where a reference job is."""
        c = self.config
        info = self._device_info()
        pool = pool or (c.trials + 2 * c.timing_sets + c.probe_sets)
        init_on = c.init_on if c.device_type != "cpu" else "cpu"
        batch_alt = c.alt_trials if second_shape and not task.alt_size else 0
        key_src = json.dumps([CACHE_FORMAT, task.resolved_source, info.get("device_name"), info.get("torch"), c.device_type, pool, input_seed, c.random_weight_trials, c.seed, c.pool_max_bytes, init_on, batch_alt])
        key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
        if key in self._loaded:
            return self._loaded[key]
        final = self.root / key
        ref = None
        try:
            ref = self._load(task, final)
        except FileNotFoundError:  # not computed yet (or removed meanwhile)
            pass
        except Tampered as e:
            self._drop(final, task, str(e))
        if ref is None:
            self._compute(task, final, pool=pool, input_seed=input_seed, init_on=init_on, batch_alt=batch_alt, progress=progress)
            ref = self._load(task, final)
        self._loaded[key] = ref
        return ref

    def given(self, task: Task, dest: Path, sets: list[int]) -> Reference:
        """``get``, and copies of ``sets``' inputs in ``dest`` (``Reference.give``); an entry found
        changed on the way is computed again, once."""
        for attempt in range(2):
            ref = self.get(task)
            try:
                ref.give(dest, sets, random_weights=False)
                return ref
            except Tampered as e:
                if attempt:
                    raise
                self.forget(ref, str(e))

    def forget(self, ref: Reference, why: str) -> None:
        """``ref`` was found changed: reported and removed (``get`` computes it again)."""
        self._loaded = {k: r for k, r in self._loaded.items() if r is not ref}
        self._drop(ref.dir, ref.task, why)

    def _drop(self, entry: Path, task: Task, why: str) -> None:
        msg = f"pike: the cached reference {entry.name} of {task.label} was changed on disk ({why}); it is not used and is computed again"
        log.warning(msg)
        self.problems.append(msg)
        gone = entry.with_name(f"tampered-{entry.name}-{os.getpid()}-{next(self._tmp)}")
        try:
            os.rename(entry, gone)
        except OSError:  # already removed by a concurrent run
            return
        shutil.rmtree(gone, ignore_errors=True)

    def _compute(self, task: Task, final: Path, *, pool: int, input_seed: int, init_on: str, batch_alt: int, progress) -> None:
        c = self.config
        d = self._job_dir("reference")
        d.mkdir(parents=True, exist_ok=True)
        task_file = f"task_{task.name}.py"
        (d / task_file).write_text(task.resolved_source)
        job = ReferenceJob(
            device="cuda" if c.device_type == "cuda" else "cpu", task=task_file, module_name=f"pike_task_{task.name}",
            out_dir="entry", init_seed=42 + c.seed, input_seed=input_seed + c.seed, call_seed=7 + c.seed,
            pool=pool, min_pool=min(pool, 3), pool_bytes=c.pool_max_bytes, random_count=c.random_weight_trials, init_on=init_on,
            imports=task_imports(task.path), batch_alt=batch_alt, has_alt_size=bool(task.alt_size),
        )
        timeout = max(c.timeout_s, 600)
        report = (lambda p: progress(task, f"reference: {describe(p)}")) if progress else None
        with Watcher(d, report) as watch:
            out = self._run_job(job, d, timeout=timeout)
        res = out.result
        try:
            if res is None:
                where = f" while at: {describe(watch.last)}" if watch.last else ""
                hint = {True: f"; a bigger model may need --set eval.timeout_s (now {timeout:g} s for the reference)",
                        False: " (killed by the system: out of memory?)" if out.signal == 9 else ""}[out.timed_out]
                raise TaskError(task.path, f"the reference run {out.describe_exit()}{where}{hint}", out.log_tail[-3000:])
            if res["status"] != "ok":
                raise TaskError(task.path, res.get("message", "reference failed"), res.get("feedback", ""))
            entry = d / "entry"
            (entry / MANIFEST).write_text(json.dumps(checksums.manifest(entry)))
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f"tmp-{final.name}-{os.getpid()}-{next(self._tmp)}"
            shutil.copytree(entry, tmp)
            try:
                os.rename(tmp, final)
            except OSError:  # a concurrent run finished first; its entry is as good
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            shutil.rmtree(d / "entry", ignore_errors=True)  # kept job directories (keep_jobs) keep no answers
            self._cleanup(d)

    def _load(self, task: Task, final: Path) -> Reference:
        text = (final / MANIFEST).read_text()
        try:
            manifest = json.loads(text)
            files, mac = manifest["files"], manifest["mac"]
        except (ValueError, KeyError, TypeError) as e:
            raise Tampered(f"its manifest is unreadable: {type(e).__name__}") from None
        if not isinstance(files, dict) or not checksums.signed(files, mac):
            raise Tampered("its manifest's signature does not match")
        meta = json.loads(checksums.read_verified(final / "meta.json", files.get("meta.json", "")))
        # Never tighter than PyTorch's own default eager needs against this strict-fp32 reference.
        strict, measured = self.config.strict, meta.get("eager_default")
        tol = Tolerance(strict=strict, atol_floor=eager_atol(measured, strict))
        flags = list(meta["flags"])
        ref = Reference(task=task, dir=final, meta=meta, files=files, tolerance=tol, flags=flags, leaves=0)
        try:
            other, first = ref.load("answers/other_seed.pt"), ref.load("answers/outputs/0.pt")
        except (Tampered, FileNotFoundError):
            raise
        except Exception as e:  # noqa: BLE001 - UnpicklingError and friends
            raise TaskError(task.path, f"the task's outputs must be tensors, or lists, tuples and dicts of tensors and plain values: "
                                       f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}") from None
        ref.leaves = len(flatten(first))
        weak = weak_tolerance(first, other, tol)
        if weak:
            # The elementwise tolerance cannot tell the reference from an impostor: add a norm check,
            # never tighter than twice default eager's own.
            rtol = Tolerance(strict=strict).for_dtype(torch.float32)[1]
            ref.tolerance = replace(tol, rel_norm=max(2 * rtol, EAGER_ERROR_FACTOR * (measured or {}).get("rel_norm", 0.0)))
            flags.append("weak_tolerance")
            meta["weak_tolerance"] = weak
        if "batch_alt/meta.json" in files:
            sub = {rel.removeprefix("batch_alt/"): sha for rel, sha in files.items() if rel.startswith("batch_alt/")}
            alt_meta = json.loads(checksums.read_verified(final / "batch_alt" / "meta.json", sub["meta.json"]))
            ref.batch_alt = Reference(task=task, dir=final / "batch_alt", meta=alt_meta, files=sub, tolerance=ref.tolerance,
                                      flags=flags, leaves=ref.leaves, label=alt_meta["label"], same_code=True, parent=ref)
        return ref
