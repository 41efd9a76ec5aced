"""Evaluation on a Ray cluster: one actor per GPU (or CPU worker) anywhere in the cluster.

The driver keeps the store and the LLM calls; candidate code travels to a worker actor, whose
:class:`~pike.evaluate.evaluator.Evaluator` builds it, runs it in a sandboxed child and decides
correctness in the actor process itself, which never loads candidate code (the comparator); only the
result comes back. A lost worker (its node died, its actor was killed) costs only the candidates it
held: they are retried on other workers a bounded number of times, and a candidate that takes down
every worker it meets is reported as a failed candidate, not as a lost node. ``ray`` is an optional
extra (``pip install pike-evolve[ray]``).

Same interface as :class:`pike.evaluate.pool.EvalPool`.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from pike.evaluate.evaluator import EvalConfig, Evaluator
from pike.evaluate.slots import CANDIDATE, STARTUP, PoolStats, SlotQueue, SlotStats
from pike.evaluate.result import EvalResult, Timing
from pike.task import Task, TaskError


def _task_dict(task: Task) -> dict:
    return {"name": task.name, "path": str(task.path), "source": task.source, "sizes": task.sizes, "size": task.size, "doc": task.doc}


def _task(d: dict) -> Task:
    from pathlib import Path

    return Task(name=d["name"], path=Path(d["path"]), source=d["source"], sizes=d["sizes"], size=d["size"], doc=d["doc"])


class _Worker:
    """The actor body: an Evaluator on the worker's device (Ray pins the GPU it granted)."""

    def __init__(self, config: dict):
        timing = config.pop("timing")
        from pike.evaluate.timing import TimingConfig

        self.ev = Evaluator(EvalConfig(**config, timing=TimingConfig(**timing)))

    def evaluate(self, task: dict, source: str, trusted: bool, eager_ms, time_it, timeout_s) -> dict:
        try:
            r = self.ev.evaluate(_task(task), source, trusted=trusted, eager_ms=eager_ms, time_it=time_it, timeout_s=timeout_s)
        except TaskError as e:
            return {"task_error": e.problem}
        return r.to_json()

    def baseline(self, task: dict, mode: str, fresh: bool = False) -> dict:
        try:
            return self.ev.baseline(_task(task), mode, fresh=fresh).to_json()
        except TaskError as e:
            return {"task_error": e.problem}

    def retime(self, task: dict, entries: dict, max_time_s: float, timeout_s: float | None = None) -> dict:
        return {k: asdict(t) for k, t in self.ev.retime(_task(task), entries, max_time_s=max_time_s, timeout_s=timeout_s).items()}

    def device_info(self, toolchain: bool = False) -> dict:
        return self.ev.device_info(toolchain)

    def profile(self, task: dict, source: str) -> str:
        return self.ev.profile(_task(task), source)

    def reference_meta(self, task: dict) -> dict:
        return self.ev.reference(_task(task)).meta

    def reference_policy(self, task: dict) -> str:
        return self.ev.reference(_task(task)).policy()


class RayPool:
    def __init__(self, config: EvalConfig, *, workers: int | None = None, address: str | None = None, max_candidate_retries: int = 2):
        import ray

        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        self.ray = ray
        self.config = config
        gpu = config.device_type == "cuda"
        if workers is None:
            res = ray.cluster_resources()
            workers = int(res.get("GPU", 0)) if gpu else max(1, int(res.get("CPU", 1)) // 2)
        if workers < 1:
            raise RuntimeError("the Ray cluster offers no GPU for --executor ray --device cuda")
        self._actor_cls = ray.remote(num_gpus=1 if gpu else 0, num_cpus=1, max_restarts=0)(_Worker)
        # Inside each actor the device is cuda:0: Ray sets CUDA_VISIBLE_DEVICES to the GPU it granted.
        cfg = replace(config, device="cuda" if gpu else "cpu")
        self._cfg_dict = {**{k: v for k, v in asdict(cfg).items() if k != "timing"}, "timing": asdict(cfg.timing)}
        self._cfg_dict["cache_dir"] = str(cfg.cache_dir) if cfg.cache_dir else None
        self.actors = [self._spawn() for _ in range(workers)]
        self.stats = PoolStats(slots=[SlotStats(f"ray:{i}") for i in range(workers)])
        self.max_candidate_retries = max_candidate_retries
        self._free: SlotQueue | None = None
        self.lost_workers = 0

    def _spawn(self):
        return self._actor_cls.remote(dict(self._cfg_dict))

    @property
    def size(self) -> int:
        return len(self.actors)

    async def _call(self, method: str, *args, retries: int | None = None):
        """Run ``method`` on a free worker; a worker that dies is replaced and the call retried on
        another, at most ``retries`` times."""
        from ray.exceptions import RayActorError

        if self._free is None:
            self._free = SlotQueue(len(self.actors))
        retries = self.max_candidate_retries if retries is None else retries
        lost = 0
        priority = CANDIDATE if method in ("evaluate", "profile") else STARTUP
        while True:
            self.stats.waiting += 1
            try:
                i = await self._free.get(priority)
            finally:
                self.stats.waiting -= 1
            self.stats.slots[i].take()
            try:
                value = await getattr(self.actors[i], method).remote(*args)
                if method == "evaluate" and isinstance(value, dict):
                    self.stats.slots[i].timed_s += (value.get("durations_s") or {}).get("timing_s", 0.0)
                return value
            except RayActorError:
                lost += 1
                self.lost_workers += 1
                self.stats.slots[i].replaced += 1
                self.actors[i] = self._spawn()
                if lost > retries:
                    raise _LostEverywhere(lost) from None
            finally:
                self.stats.slots[i].give_back()
                self._free.put(i)

    async def evaluate(self, task: Task, source: str, *, trusted: bool = False, eager_ms: float | None = None,
                       time_it: bool | None = None, timeout_s: float | None = None) -> EvalResult:
        try:
            d = await self._call("evaluate", _task_dict(task), source, trusted, eager_ms, time_it, timeout_s)
        except _LostEverywhere as e:
            return EvalResult("runtime_error", f"{e.lost} workers were lost while evaluating this candidate; it is treated as a crashing candidate",
                              stage="harness", device=self.config.device)
        if "task_error" in d:
            raise TaskError(task.path, d["task_error"])
        return EvalResult.from_json(d)

    async def baseline(self, task: Task, mode: str, *, fresh: bool = False) -> EvalResult:
        d = await self._call("baseline", _task_dict(task), mode, fresh)
        if "task_error" in d:
            raise TaskError(task.path, d["task_error"])
        return EvalResult.from_json(d)

    async def retime(self, task: Task, entries: dict[str, str], max_time_s: float = 3.0, timeout_s: float | None = None) -> dict[str, Timing]:
        d = await self._call("retime", _task_dict(task), entries, max_time_s, timeout_s)
        return {k: Timing(**v) for k, v in d.items()}

    async def device_info(self, toolchain: bool = False) -> dict:
        return await self._call("device_info", toolchain)

    async def profile(self, task: Task, source: str) -> str:
        return await self._call("profile", _task_dict(task), source)

    async def reference_meta(self, task: Task) -> dict:
        return await self._call("reference_meta", _task_dict(task))

    async def reference_policy(self, task: Task) -> str:
        return await self._call("reference_policy", _task_dict(task))

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # noqa: BLE001
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _LostEverywhere(Exception):
    def __init__(self, lost: int):
        self.lost = lost
