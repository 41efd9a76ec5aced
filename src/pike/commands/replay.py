"""`pike replay`: a run's stored candidates evaluated again on this hardware.

The replay is a new run (``RUN_DIR/replays/<device>-<time>/``) of the replay strategy
(:mod:`pike.search.replay`), so it gets the same checks, final re-timing, table and best files as the
original.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from pike.config import RunConfig
from pike.search.engine import Engine, stored_tasks
from pike.search.output import summary
from pike.search.replay import Replay
from pike.store import Store


async def replay(run_dir: Path, device: str, *, only_best: bool = False) -> dict:
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
    cfg = replace(cfg, search=replace(cfg.search, strategy=Replay.kind), eval=replace(cfg.eval, device=device))
    out = run_dir / "replays" / f"{device.replace(':', '')}-{time.strftime('%Y%m%d-%H%M%S')}"
    engine = Engine(cfg, out)
    engine.strategy_for = lambda task: Replay(cfg, picked)
    try:
        await engine.run(tasks)
        doc = summary(engine.store)
    finally:
        engine.close()
    doc["replay_dir"] = str(out)
    return doc
