"""A run store of the schema before versions (version 1) is upgraded in place when opened, and read
through a migrated copy when opened read-only: old runs resume, `pike show` and `pike report` read them."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pike.config import RunConfig
from pike.evaluate.stats import Interval
from pike.knobs import VariantKnobs
from pike.search.library import Grid, Library
from pike.search.pike_o import PikeO
from pike.search.taskrun import TaskRun
from pike.store import SCHEMA_VERSION, Store
from pike.task import load_task

# The DDL of version 1 (main before schema versions), as its first stores had it: exchanges without the
# columns added later (unusable, reask_of, batch_round).
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, path TEXT, size TEXT, source TEXT NOT NULL,
    key TEXT, baselines TEXT, state TEXT, status TEXT DEFAULT 'pending', error TEXT, updated REAL
);
CREATE TABLE solutions (
    id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL REFERENCES tasks(id), parent_id INTEGER,
    origin TEXT NOT NULL, idea TEXT, code TEXT NOT NULL, code_hash TEXT NOT NULL,
    phase INTEGER, slot INTEGER, island INTEGER, fix_of INTEGER, attempt INTEGER DEFAULT 0,
    status TEXT DEFAULT 'pending', runtime_ms REAL, speedup_eager REAL, tags TEXT, created REAL
);
CREATE INDEX solutions_task ON solutions(task_id, phase, slot);
CREATE TABLE evaluations (
    id INTEGER PRIMARY KEY, solution_id INTEGER NOT NULL REFERENCES solutions(id), kind TEXT,
    status TEXT, result TEXT NOT NULL, created REAL
);
CREATE TABLE exchanges (
    id INTEGER PRIMARY KEY, task_id INTEGER, solution_id INTEGER, role TEXT, model TEXT,
    phase INTEGER, slot INTEGER, prompt TEXT, response TEXT, input_tokens INTEGER, output_tokens INTEGER,
    cost_usd REAL, reserved_usd REAL, latency_s REAL, attempts INTEGER, error TEXT,
    status TEXT DEFAULT 'pending', created REAL, finished REAL
);
CREATE INDEX exchanges_task ON exchanges(task_id);
CREATE TABLE rounds (
    n INTEGER PRIMARY KEY, mode TEXT NOT NULL, ref TEXT, status TEXT DEFAULT 'sending', exchanges TEXT,
    error TEXT, created REAL, submitted REAL, collected REAL
);
"""

CI = {"value": 2.0, "lo": 1.9, "hi": 2.1, "n": 3, "paired": True}


def _library() -> dict:
    """A PIKE-O library with migrations and a feature grid, as version 1 kept it in tasks.state."""
    rng = random.Random(3)
    grid = Grid(["complexity", "diversity"], 10)
    lib = Library.new(2, 3, 4, 0, 1.0, grid, {"complexity": 10, "diversity": 0.0})
    for sid in range(2, 12):
        lib.add(sid % 2, sid, rng.random(), {"complexity": rng.randint(1, 4000), "diversity": round(rng.random(), 4)})
        lib.finished_iteration(sid % 2, 2, 0.5)
    version, internal, gauss = rng.getstate()
    return {**lib.to_json(), "next_iteration": 12, "pending": {"12": 0}, "parents": {"12": 3},
            "rng": [version, list(internal), gauss]}


def make_v1(path) -> dict:
    """A version-1 store: an offline variant, a PIKE-O task with re-timings, exchanges in branches."""
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    lib = _library()
    state = {"confirmed": {"2": CI, "3": {**CI, "value": 1.5}}, "window": {"2": [1.0, 1.1, 0.9]},
             "retimed": {"4": 7.5}, "pike_o": lib, "skipped": {"cuda_graph": "CUDA graphs need a CUDA device"},
             "final": {"eager_ms": 10.0, "best_ms": 5.0, "best_solution": 2}}
    db.execute("INSERT INTO tasks(id, name, source, state, status) VALUES (1, 'relu', 'src', ?, 'done')", (json.dumps(state),))
    rows = [(1, "offline", "bf16_autocast+compile:default", None, None), (2, "coa", "fuse", 0, 0),
            (3, "efa", "fuse", 0, 0), (4, "coa", None, 1, 0), (5, "offline", "eager", None, None),
            (6, "offline", "a knob of the future", None, None),
            *((sid, "coa", None, sid, 0) for sid in range(7, 12))]  # the rest of the library's programs
    for sid, origin, idea, phase, branch in rows:
        db.execute("INSERT INTO solutions(id, task_id, origin, idea, code, code_hash, phase, slot, status, runtime_ms)"
                   " VALUES (?, 1, ?, ?, 'code', 'h', ?, ?, 'ok', 5.0)", (sid, origin, idea, phase, branch))
    db.execute("INSERT INTO exchanges(id, task_id, solution_id, role, phase, slot, status, cost_usd) VALUES (1, 1, 2, 'coa', 0, 0, 'done', 0.1)")
    db.commit()
    db.close()
    return state


def test_version_1_store_is_migrated_in_place(tmp_path):
    path = tmp_path / "run.db"
    old = make_v1(path)
    store = Store(path)
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    # Branches are named apart from device slots, in both tables.
    sols = {s.id: s for s in store.solutions(1)}
    assert (sols[2].phase, sols[2].branch) == (0, 0) and store.exchanges(1)[0]["branch"] == 0
    assert store.exchanges(1)[0]["unusable"] is None  # a column added to version 1 late
    # Offline variants' knobs as columns; a name that is no knob stays a name only.
    assert sols[1].knobs == VariantKnobs(compile_mode="default", autocast="bf16") and sols[1].knobs.precision == "bf16"
    assert sols[5].knobs == VariantKnobs() and sols[6].knobs is None and sols[2].knobs is None
    # Re-timings as rows: the latest window with its samples, an older confirmation, a figure from before intervals.
    rows = {r["solution_id"]: dict(r) for r in store.retimings(1)}
    assert rows[2]["window"] == 1 and json.loads(rows[2]["samples"]) == [1.0, 1.1, 0.9] and rows[2]["ms"] == 1.0
    assert (rows[3]["window"], rows[3]["speedup"], rows[3]["rounds"]) == (0, 1.5, 3)
    assert rows[4]["speedup"] is None and rows[4]["ms"] == 7.5
    assert store.confirmed(1) == {2: Interval(2.0, 1.9, 2.1, 3), 3: Interval(1.5, 1.9, 2.1, 3)}
    # PIKE-O's library and its pending iteration as rows, read back as they were.
    lib = store.pike_o(1)
    want = json.loads(json.dumps(old["pike_o"]))
    got = json.loads(json.dumps(lib))
    assert {k: got[k] for k in want if k not in ("pending", "parents")} == {k: v for k, v in want.items() if k not in ("pending", "parents")}
    assert lib["pending"] == {12: 0} and lib["parents"] == {12: 3}
    assert [dict(r)["status"] for r in store.pike_o_iterations(1)] == ["pending"]
    # What stays in the state: what is not run state of these tables.
    state = store.task_json(1, "state")
    assert set(state) == {"skipped", "final"}
    store.close()
    # Opened again: already current, nothing migrated twice.
    store = Store(path)
    assert len(store.retimings(1)) == 3 and len(store.pike_o_iterations(1)) == 1
    store.close()


def test_version_1_store_read_only_is_not_written(tmp_path):
    path = tmp_path / "run.db"
    make_v1(path)
    before = path.read_bytes()
    store = Store(path, readonly=True)
    assert store.solutions(1)[0].knobs.compile_mode == "default" and store.confirmed(1)[2].value == 2.0
    with pytest.raises(sqlite3.OperationalError):
        store.set_meta("x", 1)
    store.close()
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["run.db"]


def test_newer_store_is_refused(tmp_path):
    path = tmp_path / "run.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(sqlite3.DatabaseError, match="older than the store"):
        Store(path)


def test_pike_show_reads_a_version_1_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    make_v1(run / "run.db")
    p = subprocess.run([sys.executable, "-m", "pike", "show", str(run), "--candidate", "1"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "bf16_autocast+compile:default" in p.stdout


def test_version_1_pike_o_run_resumes_with_its_library(tmp_path):
    """PIKE-O resumed on a migrated store: the same islands, archive, pending iteration and random stream."""
    path = tmp_path / "run.db"
    old = make_v1(path)["pike_o"]
    store = Store(path)
    task = load_task(Path(__file__).parent / "tasks" / "ln_mlp.py")
    run = TaskRun(task, 1, RunConfig(), store, pool=None, eager_ms=10.0)
    strategy = PikeO(RunConfig())
    strategy._restore(run, 0)
    lib = strategy.lib
    assert (lib.islands, lib.migrants, lib.archive, lib.generations) == (old["islands"], old["migrants"], old["archive"], old["generations"])
    assert lib.grid.cells == old["grid"]["cells"] and lib.grid.anchors == old["grid"]["anchors"]
    assert strategy.pending == {12: 0} and strategy.parents == {12: 3}
    version, internal, gauss = old["rng"]
    assert strategy.rng.getstate() == (version, tuple(internal), gauss)
    assert strategy.next_iteration == 12  # never an iteration number the store already holds
    store.close()


@pytest.mark.slow
def test_a_pike_o_run_made_by_version_1_code_migrates(tmp_path):
    """A real PIKE-O run of the code before schema versions (kept in benchmarks/results): its library,
    re-timings and branches read back the same after the migration, and its report does not change."""
    import shutil

    from pike.report.data import load_run

    src = Path(__file__).parent.parent / "benchmarks" / "results" / "llm-cpu-2026-12-04" / "run.db"
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(src, run / "run.db")
    db = sqlite3.connect(run / "run.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    state = json.loads(db.execute("SELECT state FROM tasks WHERE id = 1").fetchone()[0])
    slots = db.execute("SELECT id, phase, slot FROM solutions ORDER BY id").fetchall()
    db.close()
    assert state["pike_o"]["islands"] and state["confirmed"]
    before = load_run(run).summary  # read-only: through a migrated copy in memory
    store = Store(run / "run.db")
    lib, want = json.loads(json.dumps(store.pike_o(1))), state["pike_o"]
    assert {k: lib[k] for k in want} == want
    assert {k: v.value for k, v in store.confirmed(1).items()} == {int(k): v["value"] for k, v in state["confirmed"].items()}
    assert [(s.id, s.phase, s.branch) for s in store.solutions(1)] == slots
    store.close()
    assert load_run(run).summary == before
