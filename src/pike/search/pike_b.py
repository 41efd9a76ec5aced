"""PIKE-B: the paper's phase-based, exploit-heavy branching over :class:`~pike.search.taskrun.TaskRun`.

Its knobs are the ``search.pike_b`` section (:class:`pike.config.PikeBConfig`) and the shared ones of ``search``, so the
paper's ablations are presets.
"""

from __future__ import annotations

import asyncio

from pike.agents import Branch, directions
from pike.search.taskrun import TaskRun
from pike.store import Solution


def resize_ideas(ideas: list[str], n: int) -> list[str | None]:
    """Exactly ``n`` ideas: cut a longer list; repeat a shorter one in nearly equal blocks (the paper's
    code: 3 ideas for 10 branches -> 4, 3, 3); none -> no idea."""
    if not ideas:
        return [None] * n
    if len(ideas) >= n:
        return list(ideas[:n])
    out: list[str | None] = []
    base, extra = divmod(n, len(ideas))
    for i, idea in enumerate(ideas):
        out += [idea] * (base + (1 if i < extra else 0))
    return out


def branch_plan(jobs: list[tuple[Solution | None, str | None]]) -> list[Branch | None]:
    """Each job's place among the jobs of its parent: branch k of n and the others' ideas (None for
    a parent with one branch), so that no two prompts of a phase are the same."""
    groups: dict[int | None, list[int]] = {}
    for i, (parent, _) in enumerate(jobs):
        groups.setdefault(parent.id if parent else None, []).append(i)
    plan: list[Branch | None] = [None] * len(jobs)
    for members in groups.values():
        if len(members) > 1:
            for k, i in enumerate(members, 1):
                others = [(j, jobs[m][1]) for j, m in enumerate(members, 1) if m != i]
                plan[i] = Branch(k, len(members), others)
    return plan


def fresh_ideas(run: TaskRun, parent: Solution | None, n: int) -> list[str]:
    """Up to ``n`` ideas not yet applied on the way to ``parent``, those no candidate of the task has
    tried first (brainstormed ones, then the device's broad directions). A real model was once told
    to apply "keep PyTorch" to a C++ parent because that idea had only been tried from the reference."""
    applied, s = set(), parent
    while s is not None:
        applied.add(s.idea)
        s = run.store.solution(s.parent_id) if s.parent_id else None
    tried = {s.idea for s in run.solutions if s.origin in ("coa", "efa")}
    pool = [i for i in dict.fromkeys([*run.state().get("ideas", []), *directions(run.device_kind, run.prompt_dir)]) if i not in applied]
    return sorted(pool, key=lambda i: i in tried)[:n]  # stable: the untried keep their order, first


def split_branches(n: int, k: int) -> list[int]:
    """n queries over k parents in nearly equal, decreasing bins (10 over 4 -> 3, 3, 2, 2)."""
    base, extra = divmod(n, k)
    return [base + (1 if i < extra else 0) for i in range(k)]


class PikeB:
    """Phase-based, exploit-heavy branching (the paper's PIKE-B).

    Phase 0: the IBA's ideas, one COA candidate per branch from the reference. Each later phase: the
    top-k correct candidates (of the last phase, or of all phases with ``parents_from = "all_time"``)
    share ``num_branches`` COA queries; every failed candidate gets up to ``max_fix_attempts`` EFA
    repairs. Stops when the task's query budget (or the run's USD budget) is spent.
    """

    kind = "pike-b"
    needs_llm = True
    phase_synchronous = True
    seeds_from_offline = True
    compile_variants = False

    def __init__(self, cfg):
        self.search = cfg.search  # what the strategies share (retime_top)
        self.cfg = cfg.search.pike_b

    def parents(self, run: TaskRun, phase: int) -> list[Solution | None]:
        c = self.cfg
        ok = run.ok_solutions()  # offline seeds have no phase: parents only with all_time elites
        if c.parents_from == "last_phase":
            ok = [s for s in ok if s.phase == phase - 1]
        if not ok:
            return [None]  # nothing correct yet: start again from the reference
        return run.ranked(ok)[: c.top_k]

    async def run(self, run: TaskRun, seed: Solution | None = None) -> None:
        """``seed``: the first phase's parent (None: the reference)."""
        c = self.cfg
        phase = 0
        while not run.exhausted:
            if phase == 0:
                ideas = await run.ideas(c.num_ideas) if c.iba else []
                if c.diverse_branches:  # fewer ideas than branches: broad directions for the rest
                    ideas = list(dict.fromkeys([*ideas, *directions(run.device_kind, run.prompt_dir)]))[: c.num_branches]
                jobs = [(seed, idea) for idea in resize_ideas(ideas, c.num_branches)]
            else:
                if self.search.retime_top > 1:
                    # Parents are chosen after their contenders were timed side by side.
                    await run.retime(run.contenders(self.search.retime_top))
                parents = self.parents(run, phase)
                jobs = []
                for parent, n in zip(parents, split_branches(c.num_branches, len(parents))):
                    ideas = [None] * n
                    if c.diverse_branches and n > 1:  # the first branch keeps the model's own choice
                        ideas[1:] = resize_ideas(fresh_ideas(run, parent, n - 1), n - 1)
                    jobs += [(parent, idea) for idea in ideas]
            plan = branch_plan(jobs) if c.diverse_branches else [None] * len(jobs)
            done = await asyncio.gather(*(run.branch(phase, i, p, idea, siblings=plan[i]) for i, (p, idea) in enumerate(jobs)))
            run.notify("phase", phase=phase, candidates=sum(1 for d in done if d is not None))
            if all(d is None for d in done) and run.exhausted:
                break
            if all(d is None for d in done):
                # Not one query could be turned into a candidate this phase (provider down, replies
                # without code): stop rather than spin.
                run.notify("stalled", phase=phase)
                break
            phase += 1
