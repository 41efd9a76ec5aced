"""One task inside a run: the primitives every strategy is written with.

A strategy only decides *which* parents, ideas and variants to try; the primitives here do the work the
same way for all of them: an LLM query (COA) turned into a candidate, the candidate evaluated and
recorded, the error-fixing loop (EFA), brainstorming (IBA), re-timing. Everything goes to the store as
it happens, and each primitive first looks in the store, so a resumed run picks up where it stopped.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace

from pike.agents import (
    AgentReply, Branch, Hardware, HistoryEntry, ParentInfo, PromptFlags, TaskContext, brainstorm, fix, optimise, reask,
)
from pike.config import RunConfig
from pike.evaluate.result import EvalResult
from pike.llm.budget import Budget, BudgetExhausted, BudgetGroup
from pike.llm.base import LLMError
from pike.store import Solution, Store, StoreRecorder
from pike.task import Task


class _Asker:
    """What the agents call: the run's LLM client with this task's budget and a recorder that files the
    exchange under this task, phase and slot."""

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
        spent, _ = self.store.spent(self.task_id, roles=("coa", "efa"))
        self.budget = Budget(max_queries=self.cfg.search.budget, spent_queries=spent)
        s = self.cfg.search
        self.flags = PromptFlags(s.gpu_facts, s.parent_speedups, s.profile, s.roofline, s.best_history)
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

    def ok_solutions(self) -> list[Solution]:
        return [s for s in self.solutions if s.ok and s.runtime_ms]

    def best(self, n: int = 1) -> list[Solution]:
        ranked = sorted(self.ok_solutions(), key=lambda s: (self.rank_ms(s), s.id))
        return ranked[:n]

    def rank_ms(self, s: Solution) -> float:
        """Runtime used to rank: the interleaved re-timing when there is one, else the search timing."""
        retimed = self.state().get("retimed", {}).get(str(s.id))
        return retimed if retimed else s.runtime_ms

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
        self.notify("evaluating", solution=sid, label=sol.idea if sol.origin == "offline" else f"{sol.origin} #{sid}")
        result = await self.pool.evaluate(self.task, sol.code, trusted=trusted, eager_ms=self.eager_ms, timeout_s=cut_at)
        if cut_at is not None and result.status == "timeout" and self.out_of_time:
            self.notify("cut", solution=sid)
            return None
        self.store.record_evaluation(sid, result)
        self.notify("evaluated", solution=sid, result=result)
        return result

    async def retime(self, sols: list[Solution]) -> dict[int, float]:
        """Interleaved re-timing of candidates (ranking by one noisy search timing favours lucky ones)."""
        if len(sols) < 2:
            return {}
        timings = await self.pool.retime(self.task, {str(s.id): s.code for s in sols})
        out = {int(k): t.median_ms for k, t in timings.items()}
        retimed = self.state().get("retimed", {})
        retimed.update({str(k): v for k, v in out.items()})
        self.save_state(retimed=retimed)
        return out

    # ------------------------------------------------------------ agents

    async def ideas(self, n: int) -> list[str]:
        """The IBA's ideas, asked once per task (kept in the task's state for a resumed run)."""
        async with self._lock:
            st = self.state()
            if "ideas" in st:
                return st["ideas"]
            await self.measured_context()
            reply, _ = await self._query("iba", lambda asker: brainstorm(asker, self.context, n, self.flags, self.hardware),
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
            try:
                reply = await (reask(asker, reply, n=n) if again else first(asker))
            except BudgetExhausted:
                break
            except LLMError as e:
                self.notify("llm_error", role=role, error=str(e))
                break
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
        info = self._parent_info(parent)
        if self.flags.profile:
            info.profile = await self._profile(str(parent.id), parent.code)
        return info

    async def measured_context(self) -> None:
        """What the first prompts are told about the reference: its eager and compile times and,
        with the profile flag, where its time goes (profiled once per task)."""
        self.context.eager_ms, self.context.compile_ms = self.eager_ms, self.compile_ms
        self.context.paired = self.baselines_paired
        if self.context.inputs is None:
            shapes = (await self.pool.reference_meta(self.task)).get("input_shapes") or []
            size = f" (size set {self.task.size!r})" if self.task.size else ""
            alt = (f"; correctness is also checked on size set {self.task.alt_size!r}, so do not hard-wire shapes"
                   if self.task.alt_size else "")
            self.context.inputs = ", ".join(str(s) for s in shapes) + size + alt
        if self.flags.profile and self.context.profile is None:
            self.context.profile = await self._profile("reference", self.task.source)

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
        return info

    def history(self, n: int = 5) -> list[HistoryEntry]:
        if not self.eager_ms:
            return []
        return [HistoryEntry(self.eager_ms / self.rank_ms(s), s.idea or s.origin) for s in self.best(n)]

    async def slot(self, phase: int, slot: int, parent: Solution | None, idea: str | None, *, island: int | None = None,
                   history: list[HistoryEntry] | None = None, branch: Branch | None = None) -> Solution | None:
        """One branch of a phase: a COA candidate from ``parent`` (None: the reference) with ``idea``,
        then up to ``max_fix_attempts`` EFA repairs. Resumes a chain already in the store.
        ``history``: programs to show in the prompt instead of the task's best so far (PIKE-O shows
        its island's top programs); shown whatever the best_history flag says. ``branch``: what the
        sibling branches of this phase try."""
        chain = [s for s in self.solutions if s.phase == phase and s.slot == slot]
        if not chain:
            if self.exhausted:
                return None
            flags = self.flags if history is None else replace(self.flags, best_history=bool(history))
            if history is None:
                history = self.history() if self.flags.best_history else None
            info = await self.parent_info(parent)
            reply, exchange = await self._query(
                "coa", lambda asker: optimise(asker, self.context, info, idea, flags, self.hardware, history, branch=branch),
                phase=phase, slot=slot)
            if reply is None or reply.code is None:
                return None
            sid = self.store.add_solution(self.task_id, reply.code, "coa", parent_id=parent.id if parent else None,
                                          idea=idea, phase=phase, slot=slot, island=island)
            self.store.link_exchange(exchange, sid)
            chain = [self.store.solution(sid)]
        last = chain[-1]
        result = self.store.evaluation(last.id) if last.status != "pending" else await self.evaluate(last.id)
        attempt = last.attempt
        while result is not None and not result.ok and attempt < self.cfg.search.max_fix_attempts and not self.exhausted:
            attempt += 1
            reply, exchange = await self._query(
                "efa", lambda asker: fix(asker, self.context, last.code, result, attempt, self.flags, self.hardware),
                phase=phase, slot=slot)
            if reply is None and self.exhausted:
                break
            if reply is None or reply.code is None:
                continue  # the attempt is spent; try again from the same code
            sid = self.store.add_solution(self.task_id, reply.code, "efa", parent_id=last.parent_id, idea=last.idea,
                                          phase=phase, slot=slot, island=island, fix_of=last.id, attempt=attempt)
            self.store.link_exchange(exchange, sid)
            last = self.store.solution(sid)
            result = await self.evaluate(sid)
        return self.store.solution(last.id)
