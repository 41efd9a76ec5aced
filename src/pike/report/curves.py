"""Runs grouped into configurations, geomean curves over tasks, and bootstrap bands over seeds.

A configuration is a run's config with ``seed`` left out: runs that differ only in their seed (and
have different seeds) are one configuration, and its curve is the mean of theirs, with a band from resampling the seeds (percentiles
5-95 of the resampled means, fixed RNG, so a report is reproducible).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from pike.report.data import RunData

N_BOOT = 1000
BOOT_SEED = 0
MAX_GRID = 1500


@dataclass
class ConfigGroup:
    label: str
    runs: list[RunData]
    config: dict = field(default_factory=dict)  # without seed

    @property
    def seeds(self) -> list:
        return [r.seed for r in self.runs]


@dataclass
class Band:
    x: np.ndarray
    mean: np.ndarray
    lo: np.ndarray | None  # None with a single seed
    hi: np.ndarray | None
    runs: list[np.ndarray] = field(default_factory=list)  # each seed's curve


def config_key(config: dict) -> str:
    return json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True, default=str)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def label_runs(runs: list[RunData]) -> None:
    """``strategy seed N`` where that names one run, else the run directory's name (made unique)."""
    tags = Counter((r.strategy, r.seed) for r in runs)
    names = Counter(r.name for r in runs)
    for r in runs:
        if tags[(r.strategy, r.seed)] == 1:
            r.label = f"{r.strategy} seed {r.seed}"
        else:
            r.label = r.name if names[r.name] == 1 else str(r.path)


def group_runs(runs: list[RunData]) -> list[ConfigGroup]:
    """Runs whose configs are equal except for ``seed``, in the order first seen, where their seeds
    all differ (runs that repeat a seed are one configuration each: averaging them would not be a
    mean over seeds); labelled by strategy, plus the knobs that tell configurations of one strategy
    apart, else by run."""
    label_runs(runs)
    groups: dict[str, ConfigGroup] = {}
    for r in runs:
        key = config_key(r.config)
        if key not in groups:
            groups[key] = ConfigGroup("", [], {k: v for k, v in r.config.items() if k != "seed"})
        groups[key].runs.append(r)
    out = []
    for g in groups.values():
        if len(set(map(str, g.seeds))) == len(g.runs):
            out.append(g)
        else:  # a seed repeated: these are not samples over seeds, so each run stands alone
            out += [ConfigGroup("", [r], g.config) for r in g.runs]
    by_strategy = Counter(g.runs[0].strategy for g in out)
    for g in out:
        strategy = g.runs[0].strategy
        if by_strategy[strategy] == 1:
            g.label = strategy
            continue
        mine = _flat(g.config)
        others = [_flat(o.config) for o in out if o is not g and o.runs[0].strategy == strategy]
        diff = [k for k in sorted(mine) if any(o.get(k) != mine[k] for o in others)]
        if diff and len(diff) <= 3:
            g.label = f"{strategy} ({', '.join(f'{k}={mine[k]}' for k in diff)})"
        elif len(g.runs) == 1:
            g.label = g.runs[0].label
        else:
            g.label = " + ".join(r.name for r in g.runs)
    labels = Counter(g.label for g in out)
    for g in out:
        if labels[g.label] > 1:
            g.label = " + ".join(str(r.path) for r in g.runs)
    return out


# ---------------------------------------------------------------- curves


AXES = ("queries", "usd", "time")


def _task_arrays(run: RunData, axis: str, same_precision: bool):
    for t in run.tasks:
        if t.status == "error":
            continue
        if axis == "time":  # the timeline does not track precision: fp32-only curves are per query
            xs = np.array([0.0] + [p[0] for p in t.timeline], dtype=float)
            yield xs, np.array([1.0] + [p[1] for p in t.timeline], dtype=float)
            continue
        xs = np.array([p.query if axis == "queries" else p.usd for p in t.curve.points], dtype=float)
        vals = [p.best_same_precision if same_precision else p.best for p in t.curve.points]
        yield xs, np.array([1.0 if v is None else v for v in vals], dtype=float)


def geomean_curve(run: RunData, axis: str, xs: np.ndarray, *, clamp: bool = False, same_precision: bool = False) -> np.ndarray:
    """Geomean over the run's tasks of the best-so-far speedup vs eager at each x (queries per task,
    dollars per task, or seconds since the run's start); a task with nothing correct yet counts as 1.0; ``clamp``: each task at
    least 1.0. A task that has finished keeps its final value. Clamped, the curve never falls;
    unclamped it dips where a task's first correct solution is slower than eager."""
    logs = []
    for tx, ty in _task_arrays(run, axis, same_precision):
        idx = np.clip(np.searchsorted(tx, np.asarray(xs, dtype=float) + (1e-12 if axis != "queries" else 0), side="right") - 1, 0, None)
        y = ty[idx]
        logs.append(np.log(np.maximum(y, 1.0) if clamp else y))
    if not logs:
        return np.ones(len(xs))
    return np.exp(np.mean(logs, axis=0))


def grid(runs: list[RunData], axis: str) -> np.ndarray:
    """x values where some task's curve steps: every query count, every dollar amount reached, or
    every second at which a task's best improved."""
    if axis == "queries":
        top = max((p.query for r in runs for t in r.tasks for p in t.curve.points), default=0)
        return np.arange(top + 1, dtype=float)
    if axis == "time":
        xs = np.unique([p[0] for r in runs for t in r.tasks for p in t.timeline] + [0.0])
    else:
        xs = np.unique([p.usd for r in runs for t in r.tasks for p in t.curve.points] + [0.0])
    if len(xs) > MAX_GRID:
        xs = np.unique(np.concatenate([np.linspace(0, xs[-1], MAX_GRID), xs[-1:]]))
    return xs


def _boot_means(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Means of ``N_BOOT`` resamples (with replacement) of the rows of ``values`` (one row per seed)."""
    n = len(values)
    idx = rng.integers(0, n, size=(N_BOOT, n))
    return values[idx].mean(axis=1)


def band(group: ConfigGroup, axis: str, xs: np.ndarray | None = None, *, clamp: bool = False) -> Band:
    """The configuration's mean curve over seeds; with two seeds or more, the 5-95 percentile band of
    the bootstrap over seeds."""
    xs = grid(group.runs, axis) if xs is None else xs
    curves = np.array([geomean_curve(r, axis, xs, clamp=clamp) for r in group.runs])
    mean = curves.mean(axis=0)
    if len(group.runs) < 2:
        return Band(xs, mean, None, None, list(curves))
    boots = _boot_means(curves, np.random.default_rng(BOOT_SEED))
    lo, hi = np.percentile(boots, [5, 95], axis=0)
    return Band(xs, mean, lo, hi, list(curves))


def interval(values: list[float]) -> tuple[float, float | None, float | None]:
    """Mean of per-seed values and, with two or more, the 5-95 percentile bootstrap interval."""
    arr = np.array(values, dtype=float)
    if len(arr) < 2:
        return float(arr.mean()), None, None
    boots = _boot_means(arr, np.random.default_rng(BOOT_SEED))
    lo, hi = np.percentile(boots, [5, 95])
    return float(arr.mean()), float(lo), float(hi)


# ---------------------------------------------------------------- per-configuration summary


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def fix_histogram(group: ConfigGroup) -> Counter:
    """Failed chains by outcome: "1", "2", ... (fixed at that EFA attempt), "never", "not tried"."""
    return Counter(c.outcome for r in group.runs for t in r.tasks for c in t.chains)


def config_summary(group: ConfigGroup) -> dict:
    """One configuration's line: final-table geomeans (mean over seeds, bootstrap interval when
    several), search-timing geomeans at the end of the budget, queries, dollars, valid rates, fixes."""
    runs = group.runs
    out: dict = {"config": group.label, "runs": [r.label for r in runs], "seeds": group.seeds,
                 "tasks": max(len(r.tasks) for r in runs), "device": runs[0].device}
    for key in ("geomean_eager", "geomean_eager_clamped", "geomean_compile", "geomean_best_compile"):
        vals = [r.summary[key] for r in runs if r.summary.get(key)]
        out[key] = interval(vals) if vals else (None, None, None)
    for key, kw in (("search_geomean", {}), ("search_geomean_clamped", {"clamp": True}),
                    ("search_geomean_same_precision", {"same_precision": True})):
        vals = [float(geomean_curve(r, "queries", np.array([math.inf]), **kw)[0]) for r in runs]
        out[key] = interval(vals)
    out["queries"] = sum(r.summary["queries"] for r in runs) / len(runs)
    out["usd"] = sum(r.summary["usd"] for r in runs) / len(runs)
    rows = [row for r in runs for row in r.summary["rows"]]
    out["evaluated"] = sum(row["evaluated"] for row in rows)
    out["valid"] = sum(row["valid"] for row in rows)
    out["valid_rate"] = _ratio(out["valid"], out["evaluated"])
    tasks = [t for r in runs for t in r.tasks]
    out["llm_evaluated"] = sum(t.llm_evaluated for t in tasks)
    out["llm_valid"] = sum(t.llm_valid for t in tasks)
    out["llm_valid_rate"] = _ratio(out["llm_valid"], out["llm_evaluated"])
    chains = [c for t in tasks for c in t.chains]
    tried = [c for c in chains if c.attempts]
    out["failed_chains"] = len(chains)
    out["chains_tried"] = len(tried)
    out["chains_fixed"] = sum(c.fixed_at is not None for c in tried)
    out["fix_success_rate"] = _ratio(out["chains_fixed"], len(tried))
    return out
