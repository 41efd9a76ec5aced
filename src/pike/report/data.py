"""What a report shows about one run, read from its store alone (``RUN_DIR/run.db``).

Per task: the best-so-far curve (after each LLM query, the best evaluated speedup vs eager and the
dollars spent so far), valid-solution counts, the error-fixing chains, and the lineage and diff of the
best solution. Per run: the final table of ``pike optimize`` (:func:`pike.search.output.summary`).

Definitions (the same as the search's budget and the final table):

* A *query* is a COA or EFA exchange (IBA is not charged to a task's query budget); queries are
  numbered in exchange-id order, 1, 2, ...; query 0 is the state before the first one.
* Dollars count every exchange of the task, IBA included: a finished one at its cost, one still pending
  (in flight when the run was killed) at its reservation, as :meth:`pike.store.Store.spent` does.
* A solution belongs to the query that produced it (``exchanges.solution_id``); offline variants and
  other solutions without an exchange are there at query 0.
* Best-so-far uses confirmed figures: a solution's speedup vs eager from its latest side-by-side
  re-timing with eager where it had one, else its search evaluation's (``speedup_eager``), and
  neither above the final table's figure for the delivered result (a search estimate of 3x that the
  final re-timing put at 2x is shown as 2x). A running maximum, so the curve never goes down.
* Wall time: seconds from the run's first exchange or solution to the moment a solution's search
  evaluation was recorded.
"""

from __future__ import annotations

import bisect
import difflib
from dataclasses import dataclass, field
from pathlib import Path

from pike.config import migrate
from pike.evaluate.static import lowered_precision
from pike.report.exchanges import exchange_usd
from pike.search.output import summary
from pike.store import Solution, Store

QUERY_ROLES = ("coa", "efa")
LLM_ORIGINS = ("coa", "efa")
NO_FIX_ORIGINS = ("efa", "offline", "reference")  # failed solutions of these origins start no fix chain


@dataclass
class CurvePoint:
    query: int  # queries spent (COA + EFA)
    usd: float  # dollars spent by the task so far (all roles)
    time_s: float | None  # seconds since the run's first exchange or solution
    best: float | None  # best speedup vs eager among correct solutions so far; None: none yet
    best_same_precision: float | None  # the same among solutions that keep fp32 precision


@dataclass
class TaskCurve:
    task: str
    points: list[CurvePoint]

    def at_query(self, q: float) -> CurvePoint:
        i = bisect.bisect_right([p.query for p in self.points], q) - 1
        return self.points[max(i, 0)]

    def at_usd(self, usd: float) -> CurvePoint:
        i = bisect.bisect_right([p.usd for p in self.points], usd + 1e-12) - 1
        return self.points[max(i, 0)]


@dataclass
class FixChain:
    """A failed candidate and the EFA repairs that followed it (each fixing the previous one)."""

    root: int
    attempts: int  # EFA solutions made
    fixed_at: int | None  # the attempt number that produced a correct solution; None: never

    @property
    def outcome(self) -> str:
        if self.fixed_at is not None:
            return str(self.fixed_at)
        return "never" if self.attempts else "not tried"


@dataclass
class LineageStep:
    id: int | None  # None: the task's reference (its own Model)
    origin: str
    idea: str | None
    status: str
    speedup: float | None

    def text(self) -> str:
        who = "reference" if self.id is None else f"#{self.id} {self.origin}"
        idea = f" ({self.idea})" if self.idea else ""
        sp = f" {self.speedup:.2f}x" if self.speedup else ""
        return f"{who}{idea} {self.status}{sp}"


@dataclass
class Step:
    """One COA step parent -> child (the child after its fixes), for the step-granularity plot."""

    parent: int | None
    child: int
    lines_changed: int
    gain: float  # child speedup / parent speedup (reference: 1.0)


@dataclass
class TaskReport:
    name: str
    status: str
    curve: TaskCurve
    evaluated: int  # candidates evaluated plus LLM replies that held no usable code
    valid: int
    llm_evaluated: int  # COA and EFA candidates only, plus those replies
    llm_valid: int
    chains: list[FixChain]
    best_id: int | None  # the final table's best (None: eager stays)
    lineage: list[LineageStep]  # best solution first, the reference last
    diff: str  # unified diff of the best solution against the task's source
    steps: list[Step] = field(default_factory=list)
    # (seconds since the run's start, best-so-far confirmed speedup) at each new best, in time order
    timeline: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class RunData:
    path: Path
    name: str  # the run directory's name
    config: dict
    seed: int | None
    strategy: str
    device: str | None
    summary: dict  # pike.search.output.summary(store)
    tasks: list[TaskReport]
    label: str = ""  # set by pike.report.curves.label_runs

    def task(self, name: str) -> TaskReport:
        return next(t for t in self.tasks if t.name == name)


def _speedup(s: Solution) -> float | None:
    return s.speedup_eager if s.ok and s.speedup_eager else None


def confirmed_figures(store: Store, task_id: int, state: dict) -> tuple[dict[int, float], float | None]:
    """(solution id -> speedup vs eager of its latest side-by-side re-timing, the final table's
    speedup of the delivered result) from the store's re-timings and the task's state."""
    confirmed = {sid: ci.value for sid, ci in store.confirmed(task_id).items()}
    final = state.get("final") or {}
    cap = final["eager_ms"] / final["best_ms"] if final.get("eager_ms") and final.get("best_ms") else None
    return confirmed, cap


def task_curve(name: str, sols: list[Solution], exchanges: list, t0: float | None,
               confirmed: dict[int, float] | None = None, cap: float | None = None) -> TaskCurve:
    """Best-so-far confirmed speedup and dollars after each query of one task (module doc)."""
    confirmed = confirmed or {}

    def figure(s: Solution) -> float | None:
        sp = _speedup(s)
        if sp is None:
            return None
        sp = confirmed.get(s.id, sp)
        return min(sp, cap) if cap else sp

    query_of: dict[int, int] = {}  # solution id -> query that produced it
    marks: list[tuple[int, float, float | None]] = [(0, 0.0, None)]  # (query, usd, time) after each query
    query_created: list[float] = []
    usd = 0.0
    for ex in exchanges:
        usd += exchange_usd(ex)
        if ex["role"] in QUERY_ROLES:
            q = len(marks)
            end = ex["finished"] or ex["created"]
            marks.append((q, usd, (end - t0) if (end and t0 is not None) else None))
            query_created.append(ex["created"] or 0.0)
            if ex["solution_id"] is not None:
                query_of[ex["solution_id"]] = q
        elif len(marks) == 1:
            marks[0] = (0, usd, None)  # IBA before the first query: spent at query 0
    if usd > marks[-1][1]:  # exchanges after the last query (an IBA of a resumed run, say)
        q, _, t = marks[-1]
        marks[-1] = (q, usd, t)
    best: list[float | None] = [None] * len(marks)
    same: list[float | None] = [None] * len(marks)
    for s in sols:
        sp = figure(s)
        if sp is None:
            continue
        if s.id in query_of:
            q = query_of[s.id]
        elif s.origin in LLM_ORIGINS and query_created:  # unlinked LLM solution: the last query before it
            q = max(1, bisect.bisect_right(query_created, s.created))
        else:
            q = 0
        best[q] = max(best[q] or 0.0, sp)
        if not lowered_precision(s.tags):
            same[q] = max(same[q] or 0.0, sp)
    points = []
    run_best = run_same = None
    for (q, u, t), b, sb in zip(marks, best, same):
        run_best = b if run_best is None else (max(run_best, b) if b is not None else run_best)
        run_same = sb if run_same is None else (max(run_same, sb) if sb is not None else run_same)
        points.append(CurvePoint(q, u, t, run_best, run_same))
    return TaskCurve(name, points)


def timeline(sols: list[Solution], evaluated_at: dict[int, float], t0: float | None,
             confirmed: dict[int, float] | None = None, cap: float | None = None) -> list[tuple[float, float]]:
    """Best-so-far confirmed speedup (the figures of :func:`task_curve`) against the wall time at which
    each solution's search evaluation was recorded: one point per new best, so it never goes down."""
    if t0 is None:
        return []
    confirmed = confirmed or {}
    events = []
    for s in sols:
        sp = _speedup(s)
        if sp is None:
            continue
        sp = confirmed.get(s.id, sp)
        events.append((max(evaluated_at.get(s.id, s.created) - t0, 0.0), min(sp, cap) if cap else sp))
    out: list[tuple[float, float]] = []
    for t, sp in sorted(events):
        if not out or sp > out[-1][1]:
            out.append((t, sp))
    return out


def fix_chains(sols: list[Solution]) -> list[FixChain]:
    fixes: dict[int, list[Solution]] = {}
    for s in sols:
        if s.origin == "efa" and s.fix_of is not None:
            fixes.setdefault(s.fix_of, []).append(s)
    chains = []
    for root in sols:
        if root.origin in NO_FIX_ORIGINS or root.status in ("ok", "pending"):
            continue
        attempts, fixed_at, cur, seen = 0, None, root, {root.id}
        while cur.id in fixes:
            nxt = fixes[cur.id][0]
            if nxt.id in seen or nxt.status == "pending":
                break
            seen.add(nxt.id)
            attempts += 1
            if nxt.ok:
                fixed_at = nxt.attempt or attempts
                break
            cur = nxt
        chains.append(FixChain(root.id, attempts, fixed_at))
    return chains


REFERENCE = LineageStep(None, "reference", None, "ok", 1.0)


def lineage(best: Solution | None, by_id: dict[int, Solution]) -> list[LineageStep]:
    """From the best solution back to the reference: through the failed candidates it fixed
    (``fix_of``), then its parent (``parent_id``)."""
    out: list[LineageStep] = []
    cur, seen = best, set()
    while cur is not None and cur.id not in seen:
        seen.add(cur.id)
        out.append(LineageStep(cur.id, cur.origin, cur.idea, cur.status, cur.speedup_eager if cur.ok else None))
        if cur.origin == "reference":
            return out
        nxt = cur.fix_of if cur.fix_of is not None else cur.parent_id
        cur = by_id.get(nxt) if nxt is not None else None
    return out + [REFERENCE]


def code_diff(reference: str, code: str, task: str, sid: int) -> str:
    return "".join(difflib.unified_diff(
        reference.splitlines(keepends=True), code.splitlines(keepends=True),
        fromfile=f"{task} (reference)", tofile=f"{task} (solution #{sid})",
    ))


def _changed_lines(a: str, b: str) -> int:
    return sum(1 for line in difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---")))


def coa_steps(sols: list[Solution], by_id: dict[int, Solution], reference: str) -> list[Step]:
    """Each COA candidate that ended correct (after its fixes): lines changed from its parent and the
    speedup it gained over the parent."""
    fixed: dict[int, Solution] = {}  # chain root -> the correct fix
    for s in sols:
        if s.origin == "efa" and s.ok:
            root = s
            seen = set()
            while root.fix_of is not None and root.fix_of in by_id and root.id not in seen:
                seen.add(root.id)
                root = by_id[root.fix_of]
            fixed.setdefault(root.id, s)
    out = []
    for s in sols:
        if s.origin != "coa":
            continue
        child = s if s.ok else fixed.get(s.id)
        if child is None or not child.speedup_eager:
            continue
        parent = by_id.get(s.parent_id) if s.parent_id is not None else None
        if s.parent_id is not None and (parent is None or not parent.ok or not parent.speedup_eager):
            continue
        base_code, base_sp = (parent.code, parent.speedup_eager) if parent else (reference, 1.0)
        out.append(Step(s.parent_id, child.id, _changed_lines(base_code, child.code), child.speedup_eager / base_sp))
    return out


def best_solution(sols: list[Solution], final: dict | None) -> Solution | None:
    """The final table's best; for a run without a final table yet, the fastest correct solution."""
    by_id = {s.id: s for s in sols}
    if final:
        return by_id.get(final.get("best_solution")) if final.get("best_solution") is not None else None
    ok = [s for s in sols if _speedup(s)]
    return max(ok, key=lambda s: (s.speedup_eager, -s.id)) if ok else None


def load_run(run_dir: str | Path) -> RunData:
    run_dir = Path(run_dir)
    db = run_dir / "run.db" if run_dir.is_dir() else run_dir
    if not db.exists():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no run.db)")
    store = Store(db, readonly=True)
    try:
        config = migrate(store.get_meta("config") or {})  # earlier runs' flat keys in their sections: comparable
        device = (store.get_meta("device") or {}).get("device_name")
        doc = summary(store)
        all_ex = store.exchanges()
        times = [e["created"] for e in all_ex if e["created"]]
        tasks = []
        per_task = []
        for t in store.tasks():
            sols = store.solutions(t["id"])
            per_task.append((t, sols))
            times += [s.created for s in sols if s.created]
        t0 = min(times) if times else None
        for t, sols in per_task:
            by_id = {s.id: s for s in sols}
            state = store.task_json(t["id"], "state") or {}
            best = best_solution(sols, state.get("final"))
            evaluated = [s for s in sols if s.status != "pending"]
            llm = [s for s in evaluated if s.origin in LLM_ORIGINS]
            unusable = len(store.unusable(t["id"]))  # replies with no code: invalid attempts too
            figures = confirmed_figures(store, t["id"], state)
            tasks.append(TaskReport(
                name=t["name"], status=t["status"],
                curve=task_curve(t["name"], sols, store.exchanges(t["id"]), t0, *figures),
                evaluated=len(evaluated) + unusable, valid=sum(s.ok for s in evaluated),
                llm_evaluated=len(llm) + unusable, llm_valid=sum(s.ok for s in llm),
                chains=fix_chains(sols), best_id=best.id if best else None,
                lineage=lineage(best, by_id),
                diff=code_diff(t["source"], best.code, t["name"], best.id) if best else "",
                steps=coa_steps(sols, by_id, t["source"]),
                timeline=timeline(sols, store.evaluated_at(t["id"]), t0, *figures),
            ))
    finally:
        store.close()
    search = config.get("search", {})
    return RunData(path=run_dir, name=run_dir.name if run_dir.is_dir() else run_dir.parent.name, config=config,
                   seed=config.get("seed"), strategy=search.get("strategy", "?"), device=device, summary=doc, tasks=tasks)
