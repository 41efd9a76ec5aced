"""One task inside a run: the primitives every strategy is written with.

A strategy only decides *which* parents, ideas and variants to try; the primitives here do the work the
same way for all of them: an LLM query (COA) turned into a candidate, the candidate evaluated and
recorded, the error-fixing loop (EFA), brainstorming (IBA), re-timing. Everything goes to the store as
it happens, and each primitive first looks in the store, so a resumed run picks up where it stopped.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field, replace

from pike.agents import (
    AgentReply, Branch, Hardware, HistoryEntry, ParentInfo, PromptFlags, TaskContext, brainstorm, fix, optimise, reask,
)
from pike.config import RunConfig
from pike.evaluate import stats
from pike.evaluate.result import EvalResult
from pike.llm.budget import Budget, BudgetExhausted, BudgetGroup
from pike.llm.base import LLMError
from pike.search import select
from pike.search.progress import candidate_text
from pike.store import Solution, Store, StoreRecorder
from pike.task import Task


@dataclass
class Retimed:
    """What the search's side-by-side re-timings say (the ``retimings`` rows of purpose ``contenders``)."""

    confirmed: dict[int, stats.Interval] = field(default_factory=dict)  # solution -> speedup vs eager, latest
    ms: dict[int, float] = field(default_factory=dict)  # solution -> ms, rows without an interval (older runs)
    window: dict[int, list[float]] = field(default_factory=dict)  # the latest window's samples per member


class _Asker:
    """What the agents call: the run's LLM client with this task's budget and a recorder that files the
    exchange under this task, phase and branch."""

    def __init__(self, client, budget: BudgetGroup, store: Store, meta: dict):
        self.client, self.budget, self.recorder = client, budget, StoreRecorder(store, meta)

    async def ask(self, role: str, messages: list[dict]):
        return await self.client.ask(role, messages, budget=self.budget, recorder=self.recorder)


@dataclass
class TaskRun:
    task: Task
    task_id: int
    cfg: RunConfig
    store: Store
    pool: object  # EvalPool
    clients: dict = field(default_factory=dict)  # role -> LLMClient ("coa", "efa", "iba")
    usd_budget: Budget | None = None
    hardware: Hardware | None = None
    device_text: str = ""
    eager_ms: float | None = None
    compile_ms: float | None = None
    baselines_paired: bool = False  # eager_ms and compile_ms from one interleaved re-timing
    events: list = field(default_factory=list)  # callbacks(event: str, **info) for progress displays
    deadline: float | None = None  # time.monotonic() after which nothing new starts (search.time_limit_min)

    def __post_init__(self):
        spent, _ = self.store.spent(self.task_id, roles=("coa", "efa"), outside_rounds=True)
        self.budget = Budget(max_queries=self.cfg.search.budget, spent_queries=spent)
        s = self.cfg.search
        self.flags = PromptFlags(s.gpu_facts, s.parent_speedups, s.profile, s.best_history)
        self.prompt_dir = self.cfg.llm.prompt_dir  # templates that replace the shipped ones
        tol = "1e-4 (strict)" if self.cfg.eval.strict else "1e-2"
        self.context = TaskContext(self.task.name, self.task.source, self.device_text or self.cfg.eval.device,
                                   f"fp32 reference; lower precision allowed within tolerance {tol}", self.device_kind)
        self._lock = asyncio.Lock()
        self._profile_lock = asyncio.Lock()

    # ------------------------------------------------------------ state

    def notify(self, event: str, **info) -> None:
        for cb in self.events:
            cb(self, event, **info)

    @property
    def solutions(self) -> list[Solution]:
        return self.store.solutions(self.task_id)

    @property
    def device_kind(self) -> str:
        return "cuda" if self.cfg.eval.device.startswith("cuda") else "cpu"

    @property
    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    @property
    def exhausted(self) -> bool:
        return (self.budget.exhausted or (self.usd_budget is not None and self.usd_budget.exhausted)
                or self.out_of_time)

    def _budgets(self, role: str) -> BudgetGroup:
        # IBA is not charged to the task's query budget (as in the paper's code); dollars always count.
        parts = [self.budget] if role in ("coa", "efa") else []
        if self.usd_budget is not None:
            parts.append(self.usd_budget)
        return BudgetGroup(*parts) if parts else BudgetGroup(Budget())

    def _asker(self, role: str, **meta) -> _Asker:
        return _Asker(self.clients[role], self._budgets(role), self.store, {"task_id": self.task_id, **meta})

    def state(self) -> dict:
        return self.store.task_json(self.task_id, "state") or {}

    def save_state(self, **values) -> None:
        self.store.set_task(self.task_id, state={**self.state(), **values})

    def waiting_in_round(self, phase: int, branch: int) -> bool:
        """A COA query of this place went out in a batch round and waits for its reply (a resume claims it)."""
        return any(e["status"] == "pending" and e["batch_round"] is not None and e["role"] == "coa"
                   and (e["phase"], e["branch"]) == (phase, branch) for e in self.store.exchanges(self.task_id))

    def ok_solutions(self) -> list[Solution]:
        return [s for s in self.solutions if s.ok and s.runtime_ms]

    def best(self, n: int = 1) -> list[Solution]:
        return self.ranked(self.ok_solutions())[:n]

    def retimed(self) -> Retimed:
        """The search's side-by-side re-timings, read from the store."""
        out = Retimed()
        rows = self.store.retimings(self.task_id, "contenders")
        latest = max((r["window"] for r in rows), default=None)
        for r in rows:  # oldest window first: a later re-timing of a solution replaces an earlier one
            sid = r["solution_id"]
            if sid is None:
                continue  # eager, the base of the window's speedups
            if r["speedup"] is not None:
                out.confirmed[sid] = stats.Interval(r["speedup"], r["lo"], r["hi"], r["rounds"], bool(r["paired"]))
            elif r["ms"] is not None:
                out.ms[sid] = r["ms"]
            if r["window"] == latest and latest > 0 and r["samples"]:
                out.window[sid] = json.loads(r["samples"])
        return out

    def confirmed(self) -> dict[int, stats.Interval]:
        """Speedups vs eager re-timed side by side with eager (the latest re-timing of each solution)."""
        return self.retimed().confirmed

    def rank_ms(self, s: Solution, retimed: Retimed | None = None) -> float:
        """Runtime used to rank: from the speedup vs eager of its latest side-by-side re-timing (a
        ratio measured in one window carries over to another), else the search timing."""
        retimed = self.retimed() if retimed is None else retimed
        ci = retimed.confirmed.get(s.id) if self.eager_ms else None
        if ci is not None:
            return self.eager_ms / ci.value
        ms = retimed.ms.get(s.id)  # runs from before intervals
        return ms if ms else s.runtime_ms

    def ranked(self, sols: list[Solution]) -> list[Solution]:
        """Fastest first by ``rank_ms``; the members of the latest re-timing keep the places they
        hold together, in the noise-aware order of that window (``select.rank``)."""
        retimed = self.retimed()
        order = sorted(sols, key=lambda s: (self.rank_ms(s, retimed), s.id))
        window = retimed.window
        members = [s for s in order if s.id in window]
        if len(members) < 2:
            return order
        by_name = {f"solution:{s.id}": s for s in members}
        ranked = select.rank([select.contender(name, window[s.id], s.code, s.id, s.tags) for name, s in by_name.items()])
        it = iter(by_name[c.name] for c in ranked)
        return [next(it) if s.id in window else s for s in order]

    def estimate_range(self, s: Solution) -> tuple[float, float]:
        """(fast, slow) ms a solution's time is believed to lie in: its confirmed interval, else its
        search timing's interquartile range."""
        ci = self.confirmed().get(s.id) if self.eager_ms else None
        if ci is not None:
            return self.eager_ms / ci.hi, self.eager_ms / ci.lo if ci.lo > 0 else float("inf")
        result = self.store.evaluation(s.id)
        half = result.timing.iqr_ms / 2 if result is not None and result.timing else 0.0
        ms = self.rank_ms(s)
        return ms - half, ms + half

    def contenders(self, n: int) -> list[Solution]:
        """The candidates worth a side-by-side re-timing: the ``n`` best by their estimate, and the
        ``n`` best by the fast end of their range, so that one timed under load still gets its chance."""
        ok = self.ok_solutions()
        top = self.ranked(ok)[:n]
        hopeful = sorted(ok, key=lambda s: (self.estimate_range(s)[0], s.id))[:n]
        return list({s.id: s for s in top + hopeful}.values())

    def beats(self, a: int, b: int) -> bool:
        """Solution ``a`` is faster than ``b`` beyond the noise (0: the task's own Model): paired in
        the latest re-timing when both were in it, else their ranges do not overlap."""
        window = self.retimed().window
        if a in window and b in window:
            return select.beats(select.Contender(str(a), window[a]), select.Contender(str(b), window[b]))

        def rng(sid):
            if sid == 0:
                return (self.eager_ms, self.eager_ms)
            return self.estimate_range(self.store.solution(sid))

        return rng(a)[1] < rng(b)[0]

    # ------------------------------------------------------------ evaluation

    async def evaluate(self, sid: int, *, trusted: bool = False, until_deadline: bool = False) -> EvalResult | None:
        """Evaluate solution ``sid`` and record the result. With ``until_deadline`` (the offline
        portfolio), an evaluation still running at the time limit is stopped there and not recorded
        (None): the solution stays pending and a resume tries it again. Else one compile started just
        before the limit could hold the run for the evaluator's whole timeout (max-autotune: 300 s)."""
        sol = self.store.solution(sid)
        cut_at = None
        if until_deadline and self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left < self.cfg.eval.timeout_s:
                cut_at = max(left, 1.0)
        # The progress display names what is being evaluated and for how long (a compile: minutes).
        self.notify("evaluating", solution=sid, label=sol.idea if sol.origin == "offline" else f"{sol.origin} #{sid}",
                    candidate=candidate_text(sol))
        result = await self.pool.evaluate(self.task, sol.code, trusted=trusted, eager_ms=self.eager_ms, timeout_s=cut_at)
        if cut_at is not None and result.status == "timeout" and self.out_of_time:
            self.notify("cut", solution=sid)
            return None
        self.store.record_evaluation(sid, result)
        self.notify("evaluated", solution=sid, result=result)
        return result

    async def retime(self, sols: list[Solution]) -> list[Solution]:
        """The candidates re-timed side by side with eager (ranking by one noisy search timing favours
        lucky ones): their speedups vs eager with intervals become their confirmed figures, and this
        window's rounds decide ties between them. Returns them best first (noise-aware)."""
        if len(sols) < 2:
            return list(sols)
        entries = {"eager": self.task.source, **{f"solution:{s.id}": s.code for s in sols}}
        timings = await self.pool.retime(self.task, entries)
        base = timings["eager"].samples_ms
        rows = [{"baseline": "eager", "samples": [round(x, 6) for x in base]}]
        for s in sols:
            samples = timings[f"solution:{s.id}"].samples_ms
            rows.append({"solution_id": s.id, "samples": [round(x, 6) for x in samples],
                         "speedup": stats.speedup(base, samples)})
        self.store.add_retiming(self.task_id, "contenders", rows)
        ranked = self.ranked(sols)
        top = next(r["speedup"] for r in rows if r.get("solution_id") == ranked[0].id)
        self.notify("confirmed", solution=ranked[0].id, speedup=top)
        return ranked

    # ------------------------------------------------------------ agents

    async def ideas(self, n: int) -> list[str]:
        """The IBA's ideas, asked once per task (kept in the task's state for a resumed run)."""
        async with self._lock:
            st = self.state()
            if "ideas" in st:
                return st["ideas"]
            await self.measured_context()
            reply, _ = await self._query(
                "iba", lambda asker: brainstorm(asker, self.context, n, self.flags, self.hardware, prompt_dir=self.prompt_dir),
                n=n, phase=0)
            ideas = reply.ideas if reply is not None else []
            self.save_state(ideas=ideas)
            return ideas

    async def _query(self, role: str, first, *, n: int = 0, **meta) -> tuple[AgentReply | None, int | None]:
        """One agent query (``first(asker)``) and, with ``search.reask``, when its reply holds nothing
        usable, one more with a reminder of the format (a query of its own, charged like any other).
        Every unusable reply is recorded with its reason and shown. Returns the last reply (None when
        none came: budget spent, LLM error) and its exchange."""
        reply, exchange = None, None
        for again in range(2 if self.cfg.search.reask else 1):
            asker = self._asker(role, **meta, **({"reask_of": exchange} if again else {}))
            self.notify("asking", role=role)  # the progress log says when the search waits for replies
            try:
                reply = await (reask(asker, reply, n=n, prompt_dir=self.prompt_dir) if again else first(asker))
            except BudgetExhausted:
                break
            except LLMError as e:
                self.notify("llm_error", role=role, error=str(e))
                break
            finally:
                self.notify("answered", role=role)
            exchange = asker.recorder.last_id
            if reply.ok:
                break
            self.store.mark_unusable(exchange, reply.error)
            self.notify("no_code", role=role, error=reply.error, reask=bool(again))
        return reply, exchange

    async def parent_info(self, parent: Solution | None) -> ParentInfo | None:
        if parent is None or parent.origin == "reference":
            await self.measured_context()
            return None
        await self.reference_facts()
        info = self._parent_info(parent)
        if self.flags.profile:
            info.profile = await self._profile(str(parent.id), parent.code)
        return info

    async def measured_context(self) -> None:
        """What the first prompts are told about the reference: its eager and compile times and,
        with the profile flag, where its time goes (profiled once per task)."""
        self.context.eager_ms, self.context.compile_ms = self.eager_ms, self.compile_ms
        self.context.paired = self.baselines_paired
        await self.reference_facts()
        if self.flags.profile and self.context.profile is None:
            self.context.profile = await self._profile("reference", self.task.source)

    async def reference_facts(self) -> None:
        """What every prompt says of the task's reference (read once per task): the numerical policy
        (its output dtypes and the tolerance the evaluator applies to them) and the inputs it is
        timed and checked on."""
        if not self.context.policy_measured:
            self.context.precision, self.context.policy_measured = await self.pool.reference_policy(self.task), True
        if self.context.inputs is None:
            shapes = (await self.pool.reference_meta(self.task)).get("input_shapes") or []
            size = f" (size set {self.task.size!r})" if self.task.size else ""
            alt = (f"; correctness is also checked on size set {self.task.alt_size!r}, so do not hard-wire shapes"
                   if self.task.alt_size else "")
            self.context.inputs = ", ".join(str(s) for s in shapes) + size + alt

    async def _profile(self, key: str, code: str) -> str | None:
        async with self._profile_lock:  # sibling branches share a parent: profile it once
            profiles = self.state().get("profiles", {})
            if key not in profiles:
                profiles[key] = await self.pool.profile(self.task, code)
                self.save_state(profiles={**self.state().get("profiles", {}), **profiles})
        return profiles[key] or None

    def _parent_info(self, parent: Solution) -> ParentInfo:
        result = self.store.evaluation(parent.id)
        info = ParentInfo.from_result(parent.code, result, idea=parent.idea, compile_ms=self.compile_ms) if result else ParentInfo(parent.code)
        if self.rank_ms(parent) != parent.runtime_ms and self.eager_ms:
            info.runtime_ms = self.rank_ms(parent)
            info.speedup_vs_eager = self.eager_ms / info.runtime_ms
            if self.compile_ms:
                info.speedup_vs_compile = self.compile_ms / info.runtime_ms
        info.tried = self._tried_from(parent)
        return info

    def _tried_from(self, parent: Solution) -> list[tuple[str | None, str]]:
        """What earlier phases made of this parent: each child chain's idea and its final outcome (a
        real model, shown the same parent again, answered with the change it had already made)."""
        sols = self.solutions
        out = []
        for child in (s for s in sols if s.parent_id == parent.id and s.origin == "coa"):
            last = max((s for s in sols if (s.phase, s.branch) == (child.phase, child.branch)), key=lambda s: s.id)
            fixes = f" after {last.attempt} fix(es)" if last.attempt else ""
            if last.status == "pending":
                continue  # in flight in this phase: a sibling, described by the branch section
            if last.ok and self.eager_ms and last.runtime_ms:
                out.append((child.idea, f"correct, {self.eager_ms / self.rank_ms(last):.2f}x vs eager{fixes}"))
            else:
                out.append((child.idea, f"{last.status}{fixes}"))
        return out

    def history(self, n: int = 5) -> list[HistoryEntry]:
        if not self.eager_ms:
            return []
        return [HistoryEntry(self.eager_ms / self.rank_ms(s), s.idea or f"solution {s.id}: a change of the optimiser's own choosing")
                for s in self.best(n)]

    async def branch(self, phase: int, branch: int, parent: Solution | None, idea: str | None, *, island: int | None = None,
                   history: list[HistoryEntry] | None = None, siblings: Branch | None = None) -> Solution | None:
        """One branch of a phase: a COA candidate from ``parent`` (None: the reference) with ``idea``,
        then up to ``max_fix_attempts`` EFA repairs. Resumes a chain already in the store.
        ``history``: programs to show in the prompt instead of the task's best so far (PIKE-O shows
        its island's top programs); shown whatever the best_history flag says. ``siblings``: what the
        sibling branches of this phase try."""
        chain = [s for s in self.solutions if s.phase == phase and s.branch == branch]
        if not chain:
            if self.exhausted:
                return None
            flags = self.flags if history is None else replace(self.flags, best_history=bool(history))
            if history is None:
                history = self.history() if self.flags.best_history else None
            info = await self.parent_info(parent)
            reply, exchange = await self._query(
                "coa", lambda asker: optimise(asker, self.context, info, idea, flags, self.hardware, history, branch=siblings,
                                         prompt_dir=self.prompt_dir),
                phase=phase, branch=branch)
            if reply is None or reply.code is None:
                return None
            sid = self.store.add_solution(self.task_id, reply.code, "coa", parent_id=parent.id if parent else None,
                                          idea=idea, phase=phase, branch=branch, island=island)
            self.store.link_exchange(exchange, sid)
            chain = [self.store.solution(sid)]
        last = chain[-1]
        result = self.store.evaluation(last.id) if last.status != "pending" else await self.evaluate(last.id)
        attempt = last.attempt
        while result is not None and not result.ok and attempt < self.cfg.search.max_fix_attempts and not self.exhausted:
            attempt += 1
            reply, exchange = await self._query(
                "efa", lambda asker: fix(asker, self.context, last.code, result, attempt, self.flags, self.hardware,
                                    prompt_dir=self.prompt_dir),
                phase=phase, branch=branch)
            if reply is None and self.exhausted:
                break
            if reply is None or reply.code is None:
                continue  # the attempt is spent; try again from the same code
            sid = self.store.add_solution(self.task_id, reply.code, "efa", parent_id=last.parent_id, idea=last.idea,
                                          phase=phase, branch=branch, island=island, fix_of=last.id, attempt=attempt)
            self.store.link_exchange(exchange, sid)
            last = self.store.solution(sid)
            result = await self.evaluate(sid)
        return self.store.solution(last.id)
