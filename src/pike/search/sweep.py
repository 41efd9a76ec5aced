"""Experiment sweeps: configurations x a suite x seeds, each (configuration, seed) one resumable run.

An experiment is a TOML file::

    suite = "builtin"          # a built-in suite or task name, a task file or a directory of tasks
    size = "small"             # optional: the size set (eval.size) of every run
    tasks = ["ln_mlp"]         # optional: only these tasks of the suite
    seeds = [0, 1]
    [base]                     # RunConfig sections applied to every configuration
    llm = { model = "openai/gpt-4.1" }
    search = { budget = 20 }
    [configs.pike-b]           # each: a strategy preset plus overrides
    search = { strategy = "pike-b" }
    [configs.pike-o]
    search = { strategy = "pike-o" }

A run's config is built like ``pike optimize --config``: the defaults, then the configuration's
strategy preset, then ``base``, then the configuration's own values, then its seed. Every run is an
ordinary run directory (``OUT/<config>-s<seed>/``, made by the same :class:`~pike.search.engine.Engine`
as ``pike optimize``), so ``pike report`` and ``pike replay`` read it as they read any run. Runs go one
after another (tasks inside a run are concurrent already); ``OUT/sweep.json`` lists them with their
status and headline numbers after every change. A sweep started again with ``resume`` skips finished
runs and resumes interrupted ones from their stores.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pike.config import RunConfig, SearchConfig, migrate, preset, preset_name, resolve_device

KEYS = ("suite", "size", "tasks", "seeds", "base", "configs")


@dataclass
class Experiment:
    path: Path
    suite: str
    configs: dict[str, dict]
    seeds: list[int] = field(default_factory=lambda: [0])
    size: str | None = None
    tasks: list[str] | None = None  # only these task names of the suite
    base: dict = field(default_factory=dict)


@dataclass
class RunSpec:
    name: str  # <config>-s<seed>: the run directory's name
    config: str
    seed: int
    cfg: RunConfig
    dir: Path


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_experiment(path: str | Path) -> Experiment:
    """Parse and check an experiment file: every run's config is built once here, so a typo fails
    before anything runs."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: {e}") from None
    unknown = [k for k in data if k not in KEYS]
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(KEYS)}")
    if not isinstance(data.get("configs"), dict) or not data["configs"]:
        raise ValueError(f"{path}: no configurations: add [configs.NAME] tables")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"{path}: seeds must be a non-empty list of distinct integers")
    tasks = data.get("tasks")
    if tasks is not None and not (isinstance(tasks, list) and all(isinstance(t, str) for t in tasks)):
        raise ValueError(f"{path}: tasks must be a list of task names")
    suite = str(data.get("suite", "builtin"))
    if suite != "builtin" and not Path(suite).is_absolute() and (path.parent / suite).exists():
        suite = str((path.parent / suite).resolve())  # relative to the experiment file
    exp = Experiment(path=path.resolve(), suite=suite, configs=data["configs"], seeds=seeds, size=data.get("size"),
                     tasks=tasks, base=data.get("base", {}))
    for name in exp.configs:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"{path}: bad configuration name {name!r}")
        for seed in exp.seeds:
            build_config(exp, name, seed)
    return exp


def build_config(exp: Experiment, name: str, seed: int) -> RunConfig:
    own = exp.configs[name]
    for where, d in (("base", exp.base), (f"configs.{name}", own)):
        if not isinstance(d, dict):
            raise ValueError(f"{where} must be a table of config sections")
        if "seed" in d:
            raise ValueError(f"{where}: seeds come from the experiment's `seeds` list, not from `seed`")
    strategy = own.get("search", {}).get("strategy") or exp.base.get("search", {}).get("strategy") or SearchConfig.strategy
    layers = [{"search": {**preset(strategy), "strategy": preset_name(strategy)}}]
    if exp.size:
        layers.append({"eval": {"size": exp.size}})
    layers += [exp.base, own, {"seed": seed}]
    merged: dict = {}
    for layer in layers:
        merged = _deep_merge(merged, migrate(layer))  # earlier flat keys at their place before layers meet
    try:
        cfg = RunConfig.from_dict(merged)
    except ValueError as e:
        raise ValueError(f"configuration {name!r}: {e}") from None
    from pike.search.strategies import strategy_class

    try:
        needs_llm = strategy_class(cfg).needs_llm
    except ValueError as e:
        raise ValueError(f"configuration {name!r}: {e}") from None
    if needs_llm and not cfg.llm.model:
        raise ValueError(f"configuration {name!r}: strategy {cfg.search.strategy!r} needs llm.model (in [base] or the configuration)")
    if cfg.llm.batch_dir:
        raise ValueError(f"configuration {name!r}: file rounds (llm.batch_dir) stop a run at each round, which a sweep cannot"
                         " wait for; use provider batches (llm.batch = true) or pike optimize")
    return resolve_device(cfg)[0]


def plan(exp: Experiment, out: Path) -> list[RunSpec]:
    """Every (configuration, seed), in the file's order of configurations, seeds inner."""
    return [RunSpec(f"{name}-s{seed}", name, seed, build_config(exp, name, seed), Path(out) / f"{name}-s{seed}")
            for name in exp.configs for seed in exp.seeds]


def load_suite(exp: Experiment, cfg: RunConfig) -> list:
    """The experiment's tasks at a run's size and device (errors in place of tasks, as discover)."""
    from pike.suites import resolve
    from pike.task import TaskError, discover, resolve_size

    found = discover(resolve(exp.suite), size=resolve_size(cfg.eval.size, cfg.eval.device))
    if exp.tasks is not None:
        names = {t.name if not isinstance(t, TaskError) else None for t in found}
        missing = [n for n in exp.tasks if n not in names]
        if missing:
            raise ValueError(f"tasks not in suite {exp.suite!r}: {', '.join(missing)}")
        found = [t for t in found if isinstance(t, TaskError) or t.name in exp.tasks]
    return found


def run_status(run_dir: Path, task_names: list[str]) -> str:
    """new (nothing stored), done (every task finished, or failed for good) or partial."""
    from pike.store import Store

    if not (run_dir / "run.db").exists():
        return "new"
    store = Store(run_dir / "run.db")
    try:
        if store.get_meta("config") is None:
            return "new"  # killed while it was being set up: nothing to keep
        finished = {r["name"] for r in store.tasks() if r["status"] in ("done", "error")}
    finally:
        store.close()
    return "done" if set(task_names) <= finished else "partial"


def headline(doc: dict) -> dict:
    """A run's numbers for sweep.json, from its summary."""
    rows = doc["rows"]
    return {"queries": doc["queries"], "usd": doc["usd"], "geomean_eager": doc.get("geomean_eager"),
            "geomean_eager_clamped": doc.get("geomean_eager_clamped"), "geomean_compile": doc.get("geomean_compile"),
            "tasks": len(rows), "task_errors": sum(r["status"] == "error" for r in rows)}


def stored_summary(run_dir: Path) -> dict:
    from pike.search.output import summary
    from pike.store import Store

    store = Store(run_dir / "run.db")
    try:
        return summary(store)
    finally:
        store.close()


async def execute(spec: RunSpec, tasks: list, *, resume: bool, events=None) -> tuple[dict, bool]:
    """One run with the engine of ``pike optimize``; a resumed one continues from its store with the
    stored config (the tasks it had, plus any the suite gained since). Returns (summary, config
    changed since the run started)."""
    from pike.search.engine import Engine, resume_config, stored_tasks
    from pike.search.output import summary
    from pike.store import Store

    cfg, changed = spec.cfg, False
    if resume:
        cfg = resume_config(spec.dir)
        changed = cfg.to_dict() != spec.cfg.to_dict()
        stored = stored_tasks(spec.dir)
        have = {t.name for t in stored}
        tasks = stored + [t for t in tasks if t.name not in have]
    engine = Engine(cfg, spec.dir, resume=resume, events=events)
    try:
        await engine.run(tasks)
        doc = summary(engine.store)
    finally:
        engine.close()
    (spec.dir / "summary.json").write_text(json.dumps(doc, indent=1))
    return doc, changed


def _geo(values: list[float]) -> float | None:
    vals = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else None


class Sweep:
    """Runs an experiment's plan one run at a time, keeping ``OUT/sweep.json`` up to date."""

    def __init__(self, exp: Experiment, out: Path, *, resume: bool = False):
        self.exp, self.out, self.resume = exp, Path(out), resume
        self.specs = plan(exp, self.out)
        self.records = {s.name: {"run": s.name, "config": s.config, "seed": s.seed, "dir": str(s.dir),
                                 "strategy": s.cfg.search.strategy, "status": "pending"} for s in self.specs}

    def existing(self) -> list[str]:
        """Runs of this plan that already have a store (a sweep started before)."""
        return [s.name for s in self.specs if (s.dir / "run.db").exists()]

    def document(self) -> dict:
        configs = {}
        for name in self.exp.configs:
            done = [r for r in self.records.values() if r["config"] == name and r["status"] == "done"]
            configs[name] = {"runs_done": len(done), "runs": len(self.exp.seeds),
                             "geomean_eager_over_seeds": _geo([r.get("geomean_eager") for r in done]),
                             "queries": sum(r.get("queries", 0) for r in done)}
        return {"experiment": str(self.exp.path), "suite": self.exp.suite, "size": self.exp.size,
                "tasks": self.exp.tasks, "seeds": self.exp.seeds, "updated": time.time(),
                "runs": list(self.records.values()), "configs": configs}

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / "sweep.json.tmp"
        tmp.write_text(json.dumps(self.document(), indent=1))
        tmp.replace(self.out / "sweep.json")

    def run(self, *, progress=None, log=lambda msg: None) -> dict:
        """Every run of the plan; ``progress(spec)`` may give a context manager that is also an
        engine event callback (the command's live display). Returns the sweep document."""
        from pike.task import TaskError

        self.out.mkdir(parents=True, exist_ok=True)
        copy = self.out / "experiment.toml"
        if not copy.exists():
            copy.write_text(self.exp.path.read_text())
        self.write()
        for spec in self.specs:
            rec = self.records[spec.name]
            try:
                tasks = load_suite(self.exp, spec.cfg)
            except Exception as e:  # noqa: BLE001 - one bad configuration must not stop the sweep
                rec.update(status="error", error=str(e))
                self.write()
                log(f"{spec.name}: error: {e}")
                continue
            usable = [t for t in tasks if not isinstance(t, TaskError)]
            for t in tasks:
                if isinstance(t, TaskError):
                    log(f"{spec.name}: skipped task {t}")
            state = run_status(spec.dir, [t.name for t in usable])
            if state == "done":
                rec.update(status="done", skipped=True, **headline(stored_summary(spec.dir)))
                self.write()
                log(f"{spec.name}: finished before, skipped")
                continue
            rec.update(status="running", resumed=state == "partial", started=time.time())
            self.write()
            log(f"{spec.name}: {'resuming' if state == 'partial' else 'starting'} ({spec.cfg.search.strategy}, seed {spec.seed})")
            t0 = time.monotonic()
            try:
                if progress is not None:
                    display = progress(spec)
                    with display:
                        doc, changed = asyncio.run(execute(spec, usable, resume=state == "partial", events=[display]))
                else:
                    doc, changed = asyncio.run(execute(spec, usable, resume=state == "partial"))
            except Exception as e:  # noqa: BLE001 - recorded; the next run goes on
                rec.update(status="error", error=f"{type(e).__name__}: {e}", wall_s=time.monotonic() - t0)
                self.write()
                log(f"{spec.name}: error: {type(e).__name__}: {e}")
                continue
            rec.update(status="done", wall_s=time.monotonic() - t0, finished=time.time(), **headline(doc))
            if changed:
                rec["config_changed"] = True  # resumed with the config it started with, not the file's
            self.write()
            log(f"{spec.name}: done")
        return self.document()
