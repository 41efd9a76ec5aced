"""The search engine: one for every strategy.

Sets up a run directory (store, config snapshot, frozen price table), the evaluation pool and the LLM
clients, then runs every task concurrently (a slow task never holds up the others; LLM calls and
evaluations overlap through asyncio), and finally re-times each task's best solution against eager and
torch.compile and writes ``best/<task>.py``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

from pike import config as config_mod
from pike.agents import Hardware
from pike.config import RunConfig
from pike.evaluate.baselines import baseline_source, compile_modes
from pike.evaluate.evaluator import EvalConfig
from pike.evaluate.gpu_activity import KernelActivity
from pike.evaluate.pool import EvalPool, default_devices
from pike.llm.base import ConfigError
from pike.llm.budget import Budget
from pike.search.output import finalize_task, retime_timeout
from pike.search.strategies import make_strategy, offline_winner, strategy_class
from pike.search.taskrun import TaskRun
from pike.store import Store
from pike.task import Task, TaskError

POOL_RECORD_S = 30.0  # how often a running search writes the pool's utilisation to the store
LLM_PER_SLOT = 6  # auto LLM concurrency: requests in flight per evaluation slot


def auto_concurrency(cfg: RunConfig) -> int:
    e = cfg.eval
    if e.executor == "ray":
        slots = e.ray_workers or 4  # a cluster's size is known only once it is joined
    else:
        slots = len(default_devices(eval_config(cfg), gpus=e.gpus or None, cpu_workers=e.workers))
    return max(4, LLM_PER_SLOT * slots)


def check_config(cfg: RunConfig) -> None:
    """Settings that would otherwise fail only after the search (ValueError, with what is allowed), beyond
    the schema's own checks of each value (pike.config): the compile modes the device has."""
    strategy_class(cfg)
    final_compile_modes(cfg)
    if cfg.llm.prompt_dir is not None:
        from pike.agents.templates import check_prompt_dir

        check_prompt_dir(cfg.llm.prompt_dir)
    eval_config(cfg)  # its own checks (eval.comparator, eval.init_on)
    if cfg.llm.batch and cfg.llm.batch_dir:
        raise ValueError("llm.batch (the provider's batch API) and llm.batch_dir (file rounds) exclude each other: choose one")
    s = cfg.search.pike_o
    if s.exploration + s.exploitation > 1 + 1e-9:
        raise ValueError(f"search.pike_o.exploration + search.pike_o.exploitation must be at most 1 (the rest of the parent draws is random), "
                         f"not {s.exploration:g} + {s.exploitation:g}")


def final_compile_modes(cfg: RunConfig) -> tuple[str, ...]:
    """The compile modes of the final table: every mode of the device, or the configured ones (with
    "default", the table's "vs compile" column)."""
    device_type = cfg.eval.device.split(":")[0]
    every = compile_modes(device_type, cfg.search.with_max_autotune)
    if not cfg.search.final_compile_modes.strip():
        return every
    chosen = [m.strip().removeprefix("compile:") for m in cfg.search.final_compile_modes.split(",") if m.strip()]
    known = compile_modes(device_type, with_max_autotune=True)
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise ValueError(f"search.final_compile_modes: {', '.join(unknown)} not a compile mode on {device_type} "
                         f"(known: {', '.join(known)})")
    return tuple(dict.fromkeys(["default", *chosen]))


def eval_config(cfg: RunConfig) -> EvalConfig:
    return EvalConfig.from_settings(cfg.eval, cfg.eval.device, seed=cfg.seed)


class Engine:
    def __init__(self, cfg: RunConfig, run_dir: Path, *, events=None, resume: bool = False):
        cfg, _ = config_mod.resolve_device(cfg)  # "auto": the run keeps the device it resolved to
        check_config(cfg)  # before anything is written
        if cfg.llm.prompt_dir is not None:  # a resume from another directory finds the same templates
            cfg = replace(cfg, llm=replace(cfg.llm, prompt_dir=str(Path(cfg.llm.prompt_dir).resolve())))
        self.cfg = cfg
        self.kind = strategy_class(cfg)  # what the strategy needs: its class's declarations
        self.run_dir = Path(run_dir)
        existed, fresh = self.run_dir.exists(), not (self.run_dir / "run.db").exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.store = Store(self.run_dir / "run.db")
        except (OSError, sqlite3.Error) as e:
            raise ConfigError(f"{self.run_dir}: cannot write the run directory there ({getattr(e, 'strerror', None) or e})") from None
        self.events = list(events or [])
        self.clients: dict = {}
        self.rounds: dict = {}  # batch rounds (pike.llm.rounds): "file", or per model
        self.usd_budget: Budget | None = None
        self.runs: dict[str, TaskRun] = {}
        self.errors: dict[str, str] = {}
        self.strategy_for = None  # optional: task -> strategy (replay uses it)
        self.pool = None
        self.activity: KernelActivity | None = None
        self.pool_history: list = []  # cumulative slot seconds at each pool record
        self.searching = 0  # tasks past their start-up (references and baselines)
        self.deadline: float | None = None  # set when the run starts (search.time_limit_min)
        stored = self.store.get_meta("config") if resume else None
        saved = cfg
        if cfg.llm.concurrency <= 0:  # the saved config keeps "auto": a resume elsewhere re-sizes it
            self.cfg = cfg = replace(cfg, llm=replace(cfg.llm, concurrency=auto_concurrency(cfg)))
        try:
            # A resume that names another price table freezes it instead of the run's first one.
            self._setup_llm(new_prices=stored is not None and (stored.get("llm") or {}).get("prices_file") != cfg.llm.prices_file)
        except BaseException:
            if fresh and not resume:  # a start that fails leaves nothing behind to block the corrected command
                self.store.close()
                discard_run(self.run_dir, remove_dir=not existed)
            raise
        # Written once the start is sure; a resume records what it changed (model, budgets, ...).
        self.store.set_meta("config", saved.to_dict())
        (self.run_dir / "config.toml").write_text(config_mod.dumps(saved))

    # ------------------------------------------------------------ set-up

    def _setup_llm(self, new_prices: bool = False) -> None:
        """LLM clients per role; keys are checked here, before any work starts."""
        llm = self.cfg.llm
        if not self.kind.needs_llm or not llm.model:
            return
        from pike.llm.client import LLMClient
        from pike.llm.pricing import PriceTable

        frozen = None if new_prices else self.store.get_meta("prices")
        prices = PriceTable.from_snapshot(frozen) if frozen else PriceTable.load(Path(llm.prices_file) if llm.prices_file else None)
        _, spent_usd = self.store.spent(outside_rounds=True)
        self.usd_budget = Budget(max_usd=self.cfg.search.max_usd, spent_usd=spent_usd) if self.cfg.search.max_usd is not None else None
        # The clients' own budget is unlimited: each query is charged to its task's budget and the
        # run's USD budget (see TaskRun._budgets).
        made: dict[str, LLMClient] = {}
        for role, model in (("coa", llm.model), ("efa", llm.fix_model or llm.model), ("iba", llm.iba_model or llm.model)):
            if model not in made:
                provider, batched = self._provider_and_rounds(model)
                made[model] = LLMClient(
                    provider, model, prices, Budget(max_usd=self.cfg.search.max_usd),
                    concurrency=llm.concurrency, timeout=llm.timeout_s, max_retries=llm.max_retries,
                    max_tokens=llm.max_tokens, temperature=llm.temperature, **batched,
                )
            self.clients[role] = made[model]
        if not frozen:  # once every client could be made
            self.store.set_meta("prices", prices.snapshot())

    def _provider_and_rounds(self, model: str):
        """The model's provider, and with batch rounds the client's round settings (pike.llm.rounds):
        file rounds share one Rounds over all models (one file per round); provider batches one per model."""
        from pike.llm.providers import make_provider
        from pike.llm.providers.openai_compat import chat_body
        from pike.llm.rounds import FileTransport, Rounds

        llm = self.cfg.llm
        if not llm.batch_dir and not llm.batch:
            return make_provider(model), {}
        if llm.batch_dir:
            if "file" not in self.rounds:
                self.rounds["file"] = Rounds(FileTransport(self.batch_dir(), llm.model), self.store, self._busy,
                                             self._round_status)
            provider, rounds = None, self.rounds["file"]
        else:
            from pike.llm.batch_api import batch_transport

            if model not in self.rounds:
                self.rounds[model] = Rounds(batch_transport(model, llm.batch_poll_s), self.store, self._busy,
                                            self._round_status)
            rounds = self.rounds[model]
            provider = rounds.transport.provider  # None where every query goes through the batch API
        body = lambda messages, max_tokens, temperature, m=model: chat_body(m, messages, max_tokens, temperature)  # noqa: E731
        return provider, {"rounds": rounds, "request_body": body, "price_scale": llm.batch_discount}

    def batch_dir(self) -> Path:
        """Where file rounds go: a relative ``llm.batch_dir`` is inside the run directory, so a moved run
        takes its rounds along."""
        d = Path(self.cfg.llm.batch_dir)
        return d if d.is_absolute() else self.run_dir / d

    def _busy(self) -> int:
        return self.pool.in_flight if isinstance(self.pool, CountedPool) else 0

    def _round_status(self, n: int, state: str, age_s: float, count: int, problems: list[str]) -> None:
        for i, run in enumerate(self.runs.values()):
            # The round's problems (per custom_id) once, not once per task.
            run.notify("batch", round=n, state=state, age_s=age_s, count=count, problems=problems if i == 0 else [])

    def waiting_round(self):
        """A file round written by an earlier invocation whose replies are not there yet (RoundDeferred), else None."""
        from pike.llm.rounds import RoundDeferred

        transport = self.rounds["file"].transport if "file" in self.rounds else None
        for r in self.store.rounds():
            if r["mode"] == "file" and r["status"] == "written" and transport is not None and transport.waiting(r["n"]):
                requests, responses = transport.paths(r["n"])
                return RoundDeferred(r["n"], requests, responses, len(json.loads(r["exchanges"] or "[]")))
        return None

    # ------------------------------------------------------------ running

    async def run(self, tasks: list[Task]) -> None:
        waiting = self.waiting_round()
        if waiting is not None:
            raise waiting
        e = self.cfg.eval
        ecfg = replace(eval_config(self.cfg), sandbox_hide=(str(self.run_dir.resolve()),))
        t0 = time.monotonic()
        limit = self.cfg.search.time_limit_min
        self.deadline = t0 + 60 * limit if limit is not None else None
        if e.executor == "ray":
            from pike.evaluate.ray_pool import RayPool

            pool_cm = RayPool(ecfg, workers=e.ray_workers or None, address=e.ray_address)
            devices = [s.device for s in pool_cm.stats.slots]
        elif e.executor == "local":
            devices = default_devices(ecfg, gpus=e.gpus or None, cpu_workers=e.workers)
            pool_cm = EvalPool(ecfg, devices=devices, lanes=e.lanes, share_checks=e.share_checks)
        else:
            raise ValueError(f"eval.executor must be local or ray, not {e.executor!r}")
        self.pool = pool_cm
        with pool_cm as pool:
            loop = asyncio.get_running_loop()  # progress comes from the pool's threads: shown from the loop
            pool.on_progress = lambda task, text: loop.call_soon_threadsafe(self._reference_progress, task, text)
            info = await pool.device_info(toolchain=bool(self.clients))  # the toolchain: for the prompts
            self.store.set_meta("device", info)
            self.store.set_meta("sandbox", info.get("sandbox"))
            hardware = Hardware.from_info(info, "cuda" if e.device.startswith("cuda") else "cpu")
            device_text = hardware.describe()
            # Kernels active per GPU (nvidia-smi), beside the pool's own held and timing fractions; not
            # for a Ray cluster's GPUs, which are on other machines.
            gpus = pool.physical_gpus() if hasattr(pool, "physical_gpus") else []
            self.activity = KernelActivity(gpus).start()
            pool.stats.activity = self.activity  # the progress display shows it
            # Recorded every POOL_RECORD_S as well as at the end, so a killed run keeps its utilisation.
            recorder = asyncio.ensure_future(self._record_pool(pool, devices, t0))
            # The search sees the pool through a counter: a batch round goes out when nothing is evaluating.
            self.pool = pool = CountedPool(pool)
            try:
                await self._search(asyncio.gather(*(self._run_task(pool, t, hardware, device_text) for t in tasks)))
            finally:
                recorder.cancel()
                self.activity.stop()
                self.store.set_meta("pool", pool_record(pool, devices, time.monotonic() - t0, self.pool_history, self.searching,
                                                        self.activity))
        for client in {id(c): c for c in self.clients.values()}.values():  # roles may share a client
            await client.aclose()

    async def _search(self, search) -> None:
        """Await the tasks' searches; a file round written (RoundDeferred) stops them all, as a kill would."""
        if not self.rounds:
            await search
            return
        for r in self.rounds.values():
            r.stopped = asyncio.Event()
        stops = [asyncio.ensure_future(r.stopped.wait()) for r in self.rounds.values()]
        search = asyncio.ensure_future(search)
        try:
            await asyncio.wait([search, *stops], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for s in stops:
                s.cancel()
        deferred = next((r.deferred for r in self.rounds.values() if r.deferred is not None), None)
        if deferred is None:
            await search
            return
        search.cancel()
        try:
            await search
        except asyncio.CancelledError:
            pass
        raise deferred

    def _reference_progress(self, task: Task, text: str) -> None:
        """A reference job's stage (a big model's take minutes), shown as the task's start-up."""
        run = self.runs.get(task.name)
        if run is not None and run.task.key == task.key:  # not the alternate size's reference
            run.notify("preparing", text=text)

    async def _record_pool(self, pool, devices: list[str], t0: float) -> None:
        while True:
            await asyncio.sleep(POOL_RECORD_S)
            self.store.set_meta("pool", pool_record(pool, devices, time.monotonic() - t0, self.pool_history, self.searching,
                                                    self.activity))

    def _budget_raised(self, tid: int) -> bool:
        """A finished LLM search resumed with a larger query budget than it finished with: it goes on
        (its final table is made again at the end). Resumed as it was, a finished task stays finished."""
        done_with = (self.store.task_json(tid, "state") or {}).get("done_budget")
        if not self.kind.needs_llm or done_with is None or self.cfg.search.budget <= done_with:
            return False
        spent, _ = self.store.spent(tid, roles=("coa", "efa"))
        return spent < self.cfg.search.budget

    async def _run_task(self, pool: EvalPool, task: Task, hardware: Hardware, device_text: str) -> None:
        tid = self.store.add_task(task.name, str(task.path), task.size, task.source, task.key)
        row = self.store.task(tid)
        if row["status"] == "done" and not self._budget_raised(tid):
            return
        self.store.set_task(tid, status="running")
        run = TaskRun(task, tid, self.cfg, self.store, pool, clients=self.clients, usd_budget=self.usd_budget,
                      hardware=hardware if self.cfg.search.gpu_facts else None, device_text=device_text, events=self.events,
                      deadline=self.deadline)
        self.runs[task.name] = run
        try:
            # Start-up: the reference (minutes for a big model; the evaluator reports its stages as
            # "preparing" events), then this run's own eager measurement.
            t0 = time.monotonic()
            run.notify("preparing", text="reference outputs")
            await pool.reference_meta(task)
            t1 = time.monotonic()
            run.notify("preparing", text="eager baseline")
            eager = await pool.baseline(task, "eager", fresh=True)
            if not eager.ok:
                raise TaskError(task.path, f"the task's own Model fails the evaluator: {eager.status}: {eager.message}")
            run.eager_ms = eager.runtime_ms
            run.save_state(startup={"reference_s": round(t1 - t0, 2), "eager_s": round(time.monotonic() - t1, 2)})
            # The LLM prompts' "vs compile" figures. Not for the offline portfolio: its compile:default
            # variant is the same program, and compiling it before the search once took a recurrent
            # task's whole time limit (rwkv_time_mix: 165 s, 2026-11-22). Nor for a replay: no prompts.
            if self.cfg.search.parent_speedups and self.kind.needs_llm:
                run.notify("preparing", text="torch.compile baseline and side-by-side timing, for the prompts")
                comp = await pool.baseline(task, "default")
                run.compile_ms = comp.runtime_ms if comp.ok else None
                if comp.ok:
                    # The prompts compare with these: side by side, as the final table will (two
                    # separate timings of a small task on a busy CPU once disagreed 5x with it).
                    try:
                        timings = await pool.retime(task, {"eager": task.source, "compile": baseline_source(task, "default")},
                                                    timeout_s=retime_timeout(run, {"default": comp}, []))
                        run.eager_ms, run.compile_ms = timings["eager"].value_ms, timings["compile"].value_ms
                        run.baselines_paired = True
                    except RuntimeError as e:  # the separate figures stay, and the prompts say so
                        run.notify("warning", error=f"eager and compile side by side: {e}"[:200])
            self.store.set_task(tid, baselines={"eager": eager.to_json()})
            run.notify("started")
            self.searching += 1
            strategy = self.strategy_for(task) if self.strategy_for else make_strategy(self.cfg)
            seed = None
            if self.cfg.search.seed_offline and self.kind.seeds_from_offline:
                seed = await offline_winner(run, self.cfg)  # a resume finds the portfolio's evaluations stored
            await strategy.run(run, seed)
            stopped = run.out_of_time and not run.budget.exhausted
            run.save_state(stopped="time limit" if stopped else None)
            if stopped:
                run.notify("time_limit")
            run.notify("final_table")
            await finalize_task(run, self.run_dir, modes=final_compile_modes(self.cfg),
                                retime=self.cfg.eval.retime_final)
            # Cut short by the time limit: final tables made, but a resume goes on with the search.
            if not stopped:
                run.save_state(done_budget=self.cfg.search.budget)
            self.store.set_task(tid, status="stopped" if stopped else "done")
            run.notify("done")
        except TaskError as e:
            self.errors[task.name] = e.problem
            self.store.set_task(tid, status="error", error=e.problem)
            run.notify("error", error=e.problem)
        except Exception as e:  # noqa: BLE001 - one task's failure must not end the others
            import traceback

            problem = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-2000:]}"
            self.errors[task.name] = problem
            self.store.set_task(tid, status="error", error=problem)
            run.notify("error", error=problem)

    def close(self) -> None:
        self.store.close()


class CountedPool:
    """The evaluation pool as the search uses it, counting its calls in flight (``in_flight``)."""

    def __init__(self, pool) -> None:
        self._pool = pool
        self.in_flight = 0

    def __getattr__(self, name: str):
        attr = getattr(self._pool, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def counted(*args, **kwargs):
            self.in_flight += 1
            try:
                return await attr(*args, **kwargs)
            finally:
                self.in_flight -= 1

        return counted


def pool_record(pool, devices: list[str], wall_s: float, history: list | None = None, searching: int = 0,
                activity: KernelActivity | None = None) -> dict:
    """Utilisation of each evaluation slot over the run: held (a candidate on it), timing (in the
    timing loop, the GPU's kernels running back to back) and, where nvidia-smi samples it, kernels
    active (``activity``; None per device without samples, with the reason). ``history`` holds, at
    each record, the cumulative seconds and jobs per slot and how many tasks were past start-up, so
    any stretch of the run (the search once every task is searching, say) can be read off."""
    st = pool.stats
    held = [s.held() for s in st.slots]  # once, so the history and the fractions agree
    history = [] if history is None else history
    history.append([round(wall_s, 2), [round(h, 2) for h in held], [round(s.timed_s, 2) for s in st.slots],
                    [s.jobs for s in st.slots], searching])
    return {
        "devices": devices, "wall_s": wall_s, "started_at": time.time() - wall_s, "history": history,
        "held_fraction": [h / wall_s for h in held] if wall_s else [],
        "timing_fraction": [s.timed_s / wall_s for s in st.slots] if wall_s else [],
        "jobs": [s.jobs for s in st.slots], "replaced": [s.replaced for s in st.slots],
        "builds": st.builds, "build_s": st.build_s, "lost_workers": getattr(pool, "lost_workers", 0),
        "kernels_active": activity.fractions() if activity is not None else [None] * len(st.slots),
        "kernels_active_note": activity.reason if activity is not None else "not sampled",
    }


def run_to_end(engine: Engine, tasks: list[Task], console) -> dict:
    """Run ``tasks`` with a live progress display on ``console``, close the engine, write the run's
    ``summary.json`` and return it. Inside a running event loop (a notebook), the run gets a thread
    and a loop of its own."""
    import json

    from pike.search.output import summary
    from pike.search.progress import RunProgress

    progress = RunProgress(console)
    engine.events.append(progress)
    try:
        with progress:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                asyncio.run(engine.run(tasks))
            else:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(1) as ex:
                    ex.submit(asyncio.run, engine.run(tasks)).result()
        doc = summary(engine.store)
    finally:
        engine.close()
    (engine.run_dir / "summary.json").write_text(json.dumps(doc, indent=1))
    return doc


RUN_FILES = ("run.db", "run.db-wal", "run.db-shm", "config.toml")


def run_started(run_dir: Path) -> bool:
    """Whether a run directory's run got as far as its tasks. One that did not (its start failed, or
    it stopped before its first task) holds nothing worth resuming: a new command may reuse it."""
    if not (Path(run_dir) / "run.db").exists():
        return False
    store = Store(Path(run_dir) / "run.db")
    try:
        return bool(store.tasks())
    finally:
        store.close()


def discard_run(run_dir: Path, remove_dir: bool = False) -> None:
    """Removes the files of a run that never started (and its directory, when it made it and it is
    empty then)."""
    if not Path(run_dir).is_dir():
        return
    for name in RUN_FILES:
        (Path(run_dir) / name).unlink(missing_ok=True)
    if remove_dir:
        try:
            Path(run_dir).rmdir()
        except OSError:
            pass


def stored_tasks(run_dir: Path) -> list[Task]:
    """The tasks of a run as they were when it started (their files may have changed since)."""
    from pike.task import parse_task_source

    store = Store(Path(run_dir) / "run.db")
    try:
        rows = store.tasks()
    finally:
        store.close()
    tasks = []
    for row in rows:
        _, sizes, doc = parse_task_source(row["source"], row["path"])
        tasks.append(Task(name=row["name"], path=Path(row["path"]), source=row["source"], sizes=sizes, size=row["size"], doc=doc))
    return tasks


def resume_config(run_dir: Path) -> RunConfig:
    store = Store(Path(run_dir) / "run.db")
    try:
        d = store.get_meta("config")
    finally:
        store.close()
    if d is None:
        raise FileNotFoundError(f"{run_dir}: no run to resume (run.db has no config)")
    return RunConfig.from_dict(d)
