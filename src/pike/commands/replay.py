"""Re-evaluating a run's stored candidates on this hardware.

Prompts embed measured numbers, so a search cannot be replayed; its candidates can. The replay is a
new run (``RUN_DIR/replays/<device>-<time>/``) whose strategy evaluates the stored solutions again,
so it gets the same checks, final re-timing, table and best files as the original.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

from pike.config import RunConfig
from pike.search.engine import Engine
from pike.search.output import summary
from pike.store import Store


class Replay:
    def __init__(self, solutions):
        self.solutions = solutions

    async def run(self, run) -> None:
        async def one(s):
            sid = run.store.add_solution(run.task_id, s.code, s.origin, idea=s.idea, phase=s.phase, slot=s.slot)
            await run.evaluate(sid, trusted=s.origin in ("offline", "reference"))

        await asyncio.gather(*(one(s) for s in self.solutions))


async def replay(run_dir: Path, device: str, *, only_best: bool = False) -> dict:
    from pike.search.engine import stored_tasks

    src = Store(run_dir / "run.db")
    try:
        cfg = RunConfig.from_dict(src.get_meta("config"))
        tasks = stored_tasks(run_dir)
        picked = {}
        for row in src.tasks():
            ok = [s for s in src.solutions(row["id"]) if s.ok]
            ok.sort(key=lambda s: (s.runtime_ms or float("inf"), s.id))
            picked[row["name"]] = ok[:1] if only_best else ok
    finally:
        src.close()
    cfg = replace(cfg, search=replace(cfg.search, strategy="replay"), eval=replace(cfg.eval, device=device))
    out = run_dir / "replays" / f"{device.replace(':', '')}-{time.strftime('%Y%m%d-%H%M%S')}"
    engine = Engine(cfg, out)
    engine.strategy_for = lambda task: Replay(picked.get(task.name, []))
    try:
        await engine.run(tasks)
        doc = summary(engine.store)
    finally:
        engine.close()
    doc["replay_dir"] = str(out)
    return doc
