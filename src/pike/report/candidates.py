"""Every candidate of a run, read from its store without writing to it: figures, verdict, where it
came from, its code and its diff against the candidate it was made from.

A candidate's *base* is what it was derived from: the failed candidate it repairs (``fix_of``) for an
error fix, else its parent (``parent_id``); a candidate with neither was written from the task itself,
whose source is then its base. The lineage tree of a task hangs every candidate under its base.
"""

from __future__ import annotations

import difflib
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from pike.store import confirmed_speedups, connect_readonly


@dataclass
class CandidateRow:
    id: int
    task: str
    origin: str  # reference, offline, iba, coa, efa, seed
    idea: str | None
    base: int | None  # the candidate this one was derived from (module doc); None: the task's source
    parent_id: int | None
    fix_of: int | None
    phase: int | None
    branch: int | None
    status: str
    message: str  # the evaluator's verdict line
    runtime_ms: float | None  # search timing (the objective's figure)
    iqr_ms: float | None  # its spread
    speedup: float | None  # vs eager, search timing; correct candidates only
    # (speedup, lo, hi of its 95% interval) where it was re-timed side by side with eager
    interval: tuple[float, float, float] | None
    tags: list[str]
    evaluated_s: float | None  # seconds from the run's start to its search evaluation
    code: str
    diff: str = ""  # unified diff against its base
    children: list[int] = field(default_factory=list)

    def base_label(self) -> str:
        return "task" if self.base is None else f"#{self.base}"

    def time_text(self) -> str:
        if self.runtime_ms is None:
            return "-"
        return f"{self.runtime_ms:.4f}" + (f" ± {self.iqr_ms / 2:.4f}" if self.iqr_ms else "")

    def speedup_text(self) -> str:
        return f"{self.speedup:.2f}x" if self.speedup else "-"

    def interval_text(self) -> str:
        if not self.interval:
            return "-"
        v, lo, hi = self.interval
        return f"{v:.2f}x [{lo:.2f}-{hi:.2f}]"

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class TaskCandidates:
    name: str
    source: str
    best_id: int | None  # the final table's best (None: eager stays or no final table yet)
    rows: list[CandidateRow]

    def by_id(self) -> dict[int, CandidateRow]:
        return {r.id: r for r in self.rows}

    def roots(self) -> list[CandidateRow]:
        """Candidates derived from the task itself (or from a candidate not in the store)."""
        ids = self.by_id()
        return [r for r in self.rows if r.base is None or r.base not in ids]


def diff(a: str, b: str, a_name: str, b_name: str) -> str:
    return "".join(difflib.unified_diff(a.splitlines(keepends=True), b.splitlines(keepends=True), fromfile=a_name, tofile=b_name))


def _interval(confirmed: dict, sid: int, result: dict) -> tuple[float, float, float] | None:
    """The latest side-by-side re-timing of the search, else the evaluation's own."""
    c = confirmed[sid].to_json() if sid in confirmed else result.get("speedup_interval")
    if c and all(c.get(k) is not None for k in ("value", "lo", "hi")):
        return float(c["value"]), float(c["lo"]), float(c["hi"])
    return None


def read(conn: sqlite3.Connection) -> list[TaskCandidates]:
    results: dict[int, tuple[dict, float | None]] = {}  # solution id -> (first search result, when)
    for r in conn.execute("SELECT solution_id, result, created FROM evaluations WHERE kind = 'search' ORDER BY id"):
        if r["solution_id"] not in results:
            try:
                results[r["solution_id"]] = (json.loads(r["result"]), r["created"])
            except ValueError:
                results[r["solution_id"]] = ({}, r["created"])
    starts = [r[0] for r in conn.execute("SELECT MIN(created) FROM solutions UNION ALL SELECT MIN(created) FROM exchanges") if r[0]]
    t0 = min(starts) if starts else None
    out = []
    for t in conn.execute("SELECT * FROM tasks ORDER BY id").fetchall():
        state = json.loads(t["state"]) if t["state"] else {}
        final = state.get("final") or {}
        confirmed = confirmed_speedups(conn, t["id"])
        rows = []
        for s in conn.execute("SELECT * FROM solutions WHERE task_id = ? ORDER BY id", (t["id"],)):
            result, at = results.get(s["id"], ({}, None))
            timing = result.get("timing") or {}
            ok = s["status"] == "ok"
            rows.append(CandidateRow(
                id=s["id"], task=t["name"], origin=s["origin"], idea=s["idea"],
                base=s["fix_of"] if s["fix_of"] is not None else s["parent_id"], parent_id=s["parent_id"],
                fix_of=s["fix_of"], phase=s["phase"], branch=s["branch"], status=s["status"],
                message=result.get("message", ""), runtime_ms=s["runtime_ms"], iqr_ms=timing.get("iqr_ms"),
                speedup=s["speedup_eager"] if ok else None, interval=_interval(confirmed, s["id"], result) if ok else None,
                tags=json.loads(s["tags"]) if s["tags"] else [],
                evaluated_s=(at - t0) if (at and t0) else None, code=s["code"]))
        tc = TaskCandidates(t["name"], t["source"], final.get("best_solution"), rows)
        ids = tc.by_id()
        for r in rows:
            base = ids.get(r.base) if r.base is not None else None
            if base is not None:
                base.children.append(r.id)
                r.diff = diff(base.code, r.code, f"#{base.id} ({base.origin})", f"#{r.id} ({r.origin})")
            else:
                r.diff = diff(t["source"], r.code, f"{t['name']} (task source)", f"#{r.id} ({r.origin})")
        out.append(tc)
    return out


def load(run: str | Path) -> list[TaskCandidates]:
    """Every task's candidates in the run directory (or store file) ``run``."""
    run = Path(run)
    conn = connect_readonly(run / "run.db" if run.is_dir() else run)
    try:
        return read(conn)
    finally:
        conn.close()
