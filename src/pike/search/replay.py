"""Replay: a run's stored candidates evaluated again (on other hardware, say).

Prompts embed measured numbers, so a search cannot be replayed; its candidates can. A replay is a new
run whose strategy evaluates the stored solutions again, so it gets the same checks, final re-timing,
table and best files as the original (``pike replay``: :mod:`pike.commands.replay`).
"""

from __future__ import annotations

import asyncio

from pike.search.taskrun import TaskRun
from pike.store import Solution


class Replay:
    kind = "replay"
    needs_llm = False
    phase_synchronous = False
    seeds_from_offline = False
    compile_variants = False

    def __init__(self, cfg, solutions: dict[str, list[Solution]] | None = None):
        self.cfg = cfg
        self.solutions = solutions or {}  # task name -> the stored solutions to evaluate again

    async def run(self, run: TaskRun, seed: Solution | None = None) -> None:
        async def one(s: Solution):
            sid = run.store.add_solution(run.task_id, s.code, s.origin, idea=s.idea, phase=s.phase, branch=s.branch, knobs=s.knobs)
            await run.evaluate(sid, trusted=s.origin in ("offline", "reference"))

        await asyncio.gather(*(one(s) for s in self.solutions.get(run.task.name, [])))
