"""The Ray executor on a local Ray instance with CPU workers, end to end with the scripted LLM server."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from llm_server import FakeLLMServer  # noqa: E402
from scripted import TASK, by_prompt  # noqa: E402
from pike import config as cfgmod  # noqa: E402
from pike.search.engine import Engine  # noqa: E402
from pike.task import load_task  # noqa: E402

pytestmark = pytest.mark.slow  # every test here evaluates candidates or runs a search

@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def make_cfg(server, executor: str, cache: Path, **search):
    cfg = cfgmod.load(strategy="pike-b")
    return cfgmod.apply_overrides(cfg, [
        f"llm.model={server.model_string('m')}", "search.budget=6", "search.pike_b.num_branches=3", "search.pike_b.top_k=2",
        f"eval.executor={executor}", "eval.ray_workers=2", "eval.size=small", "eval.retime_final=false",
        *[f"search.{k}={v}" for k, v in search.items()],
    ])


def run_engine(cfg, run_dir: Path, events=()):
    task = load_task(TASK, size="small")
    engine = Engine(cfg, run_dir, events=list(events))
    try:
        asyncio.run(engine.run([task]))
    finally:
        engine.close()
    return sqlite3.connect(run_dir / "run.db")


def outcomes(con) -> list[tuple]:
    return sorted(con.execute("SELECT phase, branch, origin, attempt, status FROM solutions").fetchall())


def test_ray_executor_gives_the_local_executor_results(ray_instance, tmp_path, monkeypatch):
    monkeypatch.setenv("PIKE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with FakeLLMServer(by_prompt) as server:
        local = run_engine(make_cfg(server, "local", tmp_path), tmp_path / "local")
        remote = run_engine(make_cfg(server, "ray", tmp_path), tmp_path / "ray")
    assert outcomes(local) == outcomes(remote)
    assert ("ok",) in {(o[-1],) for o in outcomes(remote)}
    assert any(o[2] == "efa" and o[4] == "ok" for o in outcomes(remote))  # the broken idea was fixed on Ray too
    pool = remote.execute("SELECT value FROM meta WHERE key = 'pool'").fetchone()[0]
    assert '"ray:0"' in pool and '"ray:1"' in pool


def test_worker_killed_mid_run_and_every_candidate_is_evaluated(ray_instance, tmp_path, monkeypatch):
    monkeypatch.setenv("PIKE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    killed = []

    def kill_one(run, event, **info):
        if event == "evaluated" and not killed:
            actor = run.pool.actors[0]
            ray.kill(actor, no_restart=True)
            killed.append(actor)

    with FakeLLMServer(by_prompt) as server:
        con = run_engine(make_cfg(server, "ray", tmp_path), tmp_path / "run", events=[kill_one])
    assert killed
    statuses = [r[0] for r in con.execute("SELECT status FROM solutions")]
    assert statuses and "pending" not in statuses
    assert con.execute("SELECT status FROM tasks").fetchone()[0] == "done"
    charged = con.execute("SELECT COUNT(*) FROM exchanges WHERE role IN ('coa', 'efa')").fetchone()[0]
    assert charged == 6
    import json

    pool = json.loads(con.execute("SELECT value FROM meta WHERE key = 'pool'").fetchone()[0])
    assert sum(pool["replaced"]) >= 1  # the dead worker was replaced
