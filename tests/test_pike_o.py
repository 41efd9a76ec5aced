"""PIKE-O (OpenEvolve-style islands and elite archive): the library's rules unit-tested directly (the
MAP-Elites feature grid included), then `pike optimize --strategy pike-o` (and pike-o-map-elites) end to
end, killed and resumed, against the scripted server."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from llm_server import FakeLLMServer, Reply, last_user_message
from scripted import TASK, FUSED, BROKEN, SLOW, fenced
from pike.config import PRESETS, apply_overrides, dotted, load
from pike.search.library import Grid, backend, complexity, distance
from pike.search.pike_o import REFERENCE, Library, PikeO
from pike.store import Store

HERE = Path(__file__).parent


def library(islands=1, population=25, archive=12) -> Library:
    return Library.new(islands, population, archive, REFERENCE, 1.0)


# ---------------------------------------------------------------- the library's rules (no LLM)

def test_archive_admission_never_failed_and_replaces_worst_only_when_better():
    lib = library(archive=3)
    assert lib.archive == [REFERENCE]
    # A failed program (no fitness) never enters the archive or a population.
    assert not lib.add(0, 7, None) and not lib.add(0, 8, 0.0)
    assert 7 not in lib.members() and 8 not in lib.members()
    assert lib.add(0, 1, 2.0) and lib.add(0, 2, 3.0)
    assert lib.archive == [REFERENCE, 1, 2]  # admitted while not full
    lib.add(0, 3, 0.5)  # full: worse than the worst (the reference, 1.0), not admitted
    assert lib.archive == [REFERENCE, 1, 2] and 3 in lib.islands[0]
    lib.add(0, 4, 1.5)  # better than the worst: replaces it in place
    assert lib.archive == [4, 1, 2]
    lib.add(0, 5, 1.5)  # equal to the worst is not better
    assert lib.archive == [4, 1, 2]
    lib.add(0, 6, 9.0)
    assert sorted(lib.archive) == [1, 2, 6]


def test_population_cap_evicts_lowest_never_best_or_newest():
    lib = library(population=3)
    lib.add(0, 1, 5.0)  # the best
    lib.add(0, 2, 2.0)
    assert lib.islands[0] == [REFERENCE, 1, 2]
    lib.add(0, 3, 0.1)  # the worst of all, but the newest: the reference (1.0) goes instead
    assert lib.islands[0] == [1, 2, 3]
    lib.add(0, 4, 3.0)  # now 3 (0.1) is the lowest and no longer the newest
    assert lib.islands[0] == [1, 2, 4]
    lib2 = Library.new(1, 2, 4, REFERENCE, 10.0)  # the reference is the best: kept
    lib2.add(0, 1, 1.0)
    lib2.add(0, 2, 0.5)
    assert lib2.islands[0] == [REFERENCE, 2]


def test_sampling_ratios_over_many_draws():
    lib = library(islands=2, archive=12)
    lib.archive = [10, 11]
    lib.islands = [[1, 2, 3], [20, 21, 22, 23, 10, 11]]
    lib.fitness.update({m: 1.0 for m in lib.members()})
    everyone = lib.members()
    assert sorted(everyone) == [1, 2, 3, 10, 11, 20, 21, 22, 23]
    rng = random.Random(1234)
    n = 30000
    draws = Counter(lib.sample_parent(0, rng, 0.2, 0.7) for _ in range(n))
    share = lambda ids: sum(draws[i] for i in ids) / n  # noqa: E731
    # exploration 0.2 -> island 0; exploitation 0.7 -> the archive (none of it on island 0: all of
    # it); the remaining 0.1 -> uniform over the 9 programs of the library.
    assert abs(share([1, 2, 3]) - (0.2 + 0.1 * 3 / 9)) < 0.012
    assert abs(share([10, 11]) - (0.7 + 0.1 * 2 / 9)) < 0.012
    assert abs(share([20, 21, 22, 23]) - 0.1 * 4 / 9) < 0.008
    assert set(draws) == set(everyone)
    # Uniform within a pool, not fitness-weighted.
    assert abs(draws[10] / draws[11] - 1) < 0.1
    # The archive's members on the sampled island come first.
    lib.archive = [2, 10, 11]
    draws = Counter(lib.sample_parent(0, rng, 0.0, 1.0) for _ in range(2000))
    assert set(draws) == {2}
    draws = Counter(lib.sample_parent(1, rng, 0.0, 1.0) for _ in range(2000))
    assert set(draws) == {10, 11}
    # Reproducible with a seed.
    a = [lib.sample_parent(0, random.Random(7), 0.2, 0.7) for _ in range(50)]
    b = [lib.sample_parent(0, random.Random(7), 0.2, 0.7) for _ in range(50)]
    assert a == b


def test_migration_copies_top_to_ring_neighbours_and_migrants_stay():
    lib = library(islands=3, population=25)
    for sid, fit in ((1, 5.0), (2, 4.0), (3, 3.0)):
        lib.add(0, sid, fit)
    lib.add(1, 4, 2.0)
    lib.add(2, 5, 6.0)
    # Nothing until an island has run migration_interval iterations.
    assert lib.finished_iteration(0, 2, 0.5) == []
    moves = lib.finished_iteration(0, 2, 0.5)
    assert lib.migrations == 1
    # Island 0 holds 4 programs: top int(4 * 0.5) = 2 of its own (1 and 2) go to islands 1 and 2.
    assert {(1, 0, 1), (2, 0, 1), (1, 0, 2), (2, 0, 2)} <= set(moves)
    assert 3 not in lib.islands[1] and 3 not in lib.islands[2]
    # Island 1: 2 programs (the reference is everywhere already) -> its best, 4, to islands 0 and 2.
    assert (4, 1, 0) in moves and (4, 1, 2) in moves
    assert set(lib.migrants[1]) >= {1, 2} and 4 not in lib.migrants[1]
    # A migrated copy shows on another island; the next migration does not move migrants again.
    moves2 = lib.migrate(1.0)
    assert not [m for m in moves2 if m[0] in lib.migrants[m[1]]]
    assert all(m[0] not in (1, 2) or m[1] == 0 for m in moves2)
    # Round-trips through the task's state.
    again = Library.from_json(json.loads(json.dumps(lib.to_json())), 25, 12)
    assert again.islands == lib.islands and again.migrants == lib.migrants and again.archive == lib.archive


def test_presets():
    for name in ("pike-o", "pike-o-no-efa", "pike-o-3islands", "pike-o-short-library", "pike-o-map-elites"):
        cfg = load(strategy=name).search
        assert cfg.strategy == name and cfg.pike_o.exploration + cfg.pike_o.exploitation <= 1.0
        assert cfg.pike_o.feature_grid == (name == "pike-o-map-elites")
    m = load(strategy="pike-o-map-elites").search.pike_o
    assert (m.grid_bins, m.grid_features) == (10, "complexity,diversity")
    # Otherwise the same knobs as pike-o.
    grid = dotted(PRESETS["pike-o-map-elites"])
    assert {k: v for k, v in grid.items() if not k.startswith(("pike_o.feature_grid", "pike_o.grid_"))} == \
        {k: v for k, v in dotted(PRESETS["pike-o"]).items() if k != "pike_o.feature_grid"}
    s = load(strategy="pike-o").search
    o = s.pike_o
    assert (o.islands, o.population, o.archive, o.elite_ratio, o.exploration, o.exploitation, o.top_programs,
            o.migration_interval, o.migration_rate, s.max_fix_attempts, s.retime_top) == (1, 25, 12, 0.2, 0.0, 1.0, 3, 50, 0.1, 5, 4)
    assert PRESETS["pike-o-no-efa"]["max_fix_attempts"] == 0
    assert (PRESETS["pike-o-3islands"]["pike_o"]["islands"], PRESETS["pike-o-3islands"]["pike_o"]["exploration"]) == (3, 0.2)
    assert PRESETS["pike-o-short-library"]["pike_o"]["top_programs"] == 1
    # The earlier name of pike-o's exploit-only settings still starts (and resumes) as pike-o.
    old = load(strategy="pike-o-exploit-only").search
    assert old.strategy == "pike-o" and old == load(strategy="pike-o").search


# ---------------------------------------------------------------- the MAP-Elites feature grid (no LLM)

def feats(lines, diversity):
    return {"complexity": lines, "diversity": diversity}


def grid_library(islands=1, population=25, archive=12, reference=None) -> Library:
    """The reference has 20 lines and diversity 0: cell "1,0" of the (complexity, diversity) grid."""
    return Library.new(islands, population, archive, REFERENCE, 1.0, Grid(["complexity", "diversity"], 10),
                       reference or feats(20, 0.0))


TRITON = (HERE / "candidates" / "matmul_triton.py").read_text()
COMPILED = "import torch\n\n\nclass ModelNew(torch.nn.Module):\n    def forward(self, x):\n        return torch.compile(torch.relu)(x)\n"
CUDA = 'from torch.utils.cpp_extension import load_inline\nsrc = """\n#include <torch/extension.h>\n__global__ void k() {}\n"""\n'


def test_grid_features_and_fixed_bins():
    code = "import torch\n\n# a comment\n    # an indented one\nx = 1  # trailing\n#include <cuda.h>\n// c++ comment\nint y;\n"
    assert complexity(code) == 4  # import, x = 1, #include (a preprocessor line is code), int y
    assert distance(FUSED, FUSED) == 0.0 and distance("a\nb\n", "c\nd\n") == 1.0
    assert distance("a\n    b\n\n", "a\nb\n") == 0.0  # indentation and blank lines ignored
    assert 0 < distance(FUSED, SLOW) < 0.2 < distance(FUSED, TASK.read_text())
    grid = Grid(["complexity", "diversity", "backend"], 10)
    ref = TASK.read_text()
    assert grid.measure(ref, []) == {"complexity": 19, "diversity": 0.0, "backend": "pytorch"}
    m = grid.measure(FUSED, [ref, SLOW])  # diversity: mean distance to the anchors given
    assert m["diversity"] == round((distance(FUSED, ref) + distance(FUSED, SLOW)) / 2, 4)
    assert [grid.measure(c, [])["backend"] for c in (FUSED, COMPILED, TRITON, CUDA)] == ["pytorch", "torch_compile", "triton", "cuda"]
    assert backend(["cpp_ext"]) == "cuda" and backend(["triton", "torch_compile"]) == "triton"
    # Fixed bins: complexity log2-scaled over 8..1024 lines, diversity linear over [0, 1], ends clamped.
    assert [grid.bin("complexity", v) for v in (1, 8, 12, 13, 21, 22, 100, 1024, 5000)] == [0, 0, 0, 1, 1, 2, 5, 9, 9]
    assert [grid.bin("diversity", v) for v in (0.0, 0.0999, 0.1, 0.35, 0.999, 1.0)] == [0, 0, 1, 3, 9, 9]
    assert [grid.bin("backend", b) for b in ("pytorch", "torch_compile", "triton", "cuda")] == [0, 1, 2, 3]
    assert Grid(["complexity"], 4).bin("complexity", 100) == 2
    grid.values[7] = {"complexity": 100, "diversity": 0.35, "backend": "triton"}
    assert grid.coords(7) == (5, 3, 2) and grid.key(7) == "5,3,2"
    for bad in ("complexity,size", "", "diversity,diversity"):  # checked when the strategy is built
        with pytest.raises(ValueError, match="grid_features"):
            PikeO(apply_overrides(load(strategy="pike-o-map-elites"), [f"search.pike_o.grid_features={bad}"]), random.Random(0))


def test_grid_one_program_per_cell_replaced_only_by_better_failed_never():
    lib = grid_library(archive=2)
    assert lib.grid.key(REFERENCE) == "1,0" and lib.grid.cells == [{"1,0": REFERENCE}]
    assert lib.add(0, 1, 2.0, feats(21, 0.05))  # the same cell and fitter: replaces the reference there
    assert lib.grid.cells[0] == {"1,0": 1} and lib.islands[0] == [1] and REFERENCE in lib.archive
    lib.add(0, 2, 1.5, feats(13, 0.09))  # the same cell, less fit: stays off the island
    lib.add(0, 3, 2.0, feats(20, 0.0))  # as fit is not fitter
    assert lib.grid.cells[0] == {"1,0": 1} and lib.islands[0] == [1]
    assert lib.add(0, 4, 0.5, feats(100, 0.6))  # an empty cell: enters however unfit
    assert lib.grid.cells[0] == {"1,0": 1, "5,6": 4}
    # A failed program never enters, and is not even measured into the grid.
    assert not lib.add(0, 5, None, feats(300, 0.9)) and not lib.add(0, 6, 0.0, feats(300, 0.9))
    assert {5, 6}.isdisjoint(lib.grid.values) and {5, 6}.isdisjoint(lib.members()) and len(lib.grid.cells[0]) == 2
    # Features are measured once; the island's population is exactly its occupants.
    lib.add(0, 1, 2.0, feats(500, 0.9))
    assert lib.grid.values[1] == feats(21, 0.05) and sorted(lib.islands[0]) == sorted(lib.grid.cells[0].values())
    assert lib.grid.anchors == [REFERENCE, 1, 2, 3, 4]  # the first programs admitted: the diversity sample
    lib.add(0, 8, 0.7, feats(60, 0.1))
    assert len(lib.grid.anchors) == 5
    with pytest.raises(ValueError):
        lib.add(0, 9, 1.0)  # the grid needs the features of a new program
    # Still capped by `population`: the least fit occupant leaves (never the best or the newest), its cell freed.
    capped = grid_library(population=3)
    for sid, fit, f in ((1, 5.0, feats(22, 0.0)), (2, 0.2, feats(100, 0.1)), (3, 3.0, feats(100, 0.5))):
        capped.add(0, sid, fit, f)
    assert capped.islands[0] == [REFERENCE, 1, 3] and capped.grid.cells[0] == {"1,0": REFERENCE, "2,0": 1, "5,5": 3}


def test_grid_and_archive_displace_only_by_a_win_beyond_the_noise():
    lib = grid_library(archive=1)
    wins = {(2, 1)}  # 2 is faster than 1 beyond the noise; nothing else is told apart
    lib.beats = lambda a, b: (a, b) in wins
    assert not lib.add(0, 1, 2.0, feats(21, 0.05))  # the reference's cell: 1 is fitter but does not beat it
    assert lib.grid.cells[0] == {"1,0": REFERENCE} and lib.archive == [REFERENCE]
    wins.add((1, REFERENCE))
    lib.add(0, 3, 9.0, feats(20, 0.0))  # far fitter by its figure, yet within the noise of the reference
    assert lib.grid.cells[0] == {"1,0": REFERENCE} and lib.archive == [REFERENCE]
    assert lib.add(0, 1, 2.0, feats(21, 0.05)) and lib.grid.cells[0] == {"1,0": 1} and lib.archive == [1]
    assert lib.add(0, 2, 3.0, feats(20, 0.01)) and lib.grid.cells[0] == {"1,0": 2} and lib.archive == [2]


def test_grid_exploration_draws_uniformly_over_occupied_cells():
    crowded = [(sid, 1.0 + sid / 100, feats(30, 0.1)) for sid in range(1, 31)]  # one kind of program, 30 times
    rare = [(100 + i, 0.5, feats(60 * (i + 1), 0.2 * i)) for i in range(4)]  # four other kinds, once each
    grid, flat = grid_library(population=50), library(population=50)
    for sid, fit, f in crowded + rare:
        grid.add(0, sid, fit, f)
        flat.add(0, sid, fit)
    assert sorted(grid.grid.cells[0]) == ["1,0", "2,1", "4,0", "5,2", "6,4", "7,6"]
    assert grid.grid.occupants(0) == [REFERENCE, 30, 100, 101, 102, 103]  # the fittest of the crowd holds its cell
    n = 30000
    rng = random.Random(99)
    draws = Counter(grid.sample_parent(0, rng, 1.0, 0.0) for _ in range(n))
    assert set(draws) == set(grid.grid.occupants(0))
    assert all(abs(c / n - 1 / 6) < 0.012 for c in draws.values())  # uniform over the 6 occupied cells
    # Without the grid the crowd drowns the rare kinds (4 of 35 programs).
    rng = random.Random(99)
    flat_draws = Counter(flat.sample_parent(0, rng, 1.0, 0.0) for _ in range(n))
    assert sum(flat_draws[i] for i in range(100, 104)) / n < 0.15 < 0.6 < sum(draws[i] for i in range(100, 104)) / n
    # The other branches are as without the grid: exploitation draws from the archive's members on the island.
    rng = random.Random(5)
    on_island = {m for m in grid.archive if m in grid.islands[0]}
    assert on_island and set(grid.sample_parent(0, rng, 0.0, 1.0) for _ in range(500)) == on_island
    a = [grid.sample_parent(0, random.Random(7), 0.2, 0.7) for _ in range(50)]
    assert a == [grid.sample_parent(0, random.Random(7), 0.2, 0.7) for _ in range(50)]


def test_grid_inspirations_prefer_neighbouring_cells():
    lib = grid_library(archive=1)
    for sid, fit, f in ((10, 1.1, feats(20, 0.15)),  # "1,1": the parent
                        (11, 1.2, feats(30, 0.25)),  # "2,2": next to it
                        (12, 1.3, feats(21, 0.05)),  # "1,0": next to it (replaces the reference there)
                        (13, 1.4, feats(500, 0.9)),  # "8,9": far
                        (14, 9.0, feats(200, 0.7))):  # "6,7": far, the archive's best
        lib.add(0, sid, fit, f)
    assert lib.archive == [14] and lib.grid.neighbours(0, 10) == [12, 11] and lib.grid.neighbours(0, 13) == []
    seen = set()
    for seed in range(40):
        got = lib.inspirations(0, 3, 0.2, random.Random(seed), {10}, near=10)
        assert got[0] == 14 and set(got[1:]) == {11, 12}
        seen.update(lib.inspirations(0, 3, 0.2, random.Random(seed), {10})[1:])
    assert 13 in seen  # without a parent's cell to be near, any island member may come


def test_grid_migration_and_state_round_trip_resume_identically():
    lib = grid_library(islands=2)
    lib.add(0, 1, 5.0, feats(100, 0.3))  # island 0, "5,3"
    lib.add(0, 2, 0.9, feats(22, 0.0))  # island 0, "2,0"
    lib.add(1, 3, 7.0, feats(100, 0.35))  # island 1, "5,3", fitter than 1
    lib.add(1, 4, 2.0, feats(22, 0.05))  # island 1, "2,0", fitter than 2
    # Migrants are placed by the cell rule: 3 and 4 win their cells on island 0; 1 and 2 lose theirs on island 1.
    assert lib.migrate(1.0) == [(3, 1, 0), (4, 1, 0)]
    assert lib.islands[0] == [REFERENCE, 3, 4] and lib.migrants[0] == [3, 4] and lib.migrants[1] == []
    assert lib.grid.cells[0] == {"1,0": REFERENCE, "5,3": 3, "2,0": 4}
    doc = json.loads(json.dumps(lib.to_json()))
    assert doc["grid"]["cells"][1] == {"1,0": REFERENCE, "5,3": 3, "2,0": 4} and doc["grid"]["values"]["2"] == feats(22, 0.0)
    again = Library.from_json(doc, 25, 12)
    again.fitness = {m: lib.fitness[m] for m in again.members()}  # as PIKE-O re-reads them from the store
    assert again.to_json() == lib.to_json() and again.grid == lib.grid
    # Both continue identically: the same draws, placements and state.
    trace = []
    for one in (lib, again):
        rng = random.Random(11)
        steps = []
        for sid in range(20, 40):
            island = sid % 2
            parent = one.sample_parent(island, rng, 0.5, 0.3)
            more = one.inspirations(island, 3, 0.2, rng, {parent}, near=parent)
            one.add(island, sid, rng.uniform(0.5, 8.0), feats(rng.choice((12, 30, 100, 400)), round(rng.random(), 2)))
            one.finished_iteration(island, 5, 0.5)
            steps.append((parent, more))
        trace.append((steps, json.dumps(one.to_json())))
    assert trace[0] == trace[1] and lib.migrations >= 2
    assert all(len(cells) == len(pop) for cells, pop in zip(lib.grid.cells, lib.islands))
    # A library without the grid stores none.
    assert "grid" not in library().to_json() and Library.from_json(library().to_json(), 25, 12).grid is None


# ---------------------------------------------------------------- end to end (the real CLI)

@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # shared: torch.compile baselines are built once


@pytest.fixture
def prices(tmp_path):
    p = tmp_path / "prices.csv"
    p.write_text("model,input_per_mtok,output_per_mtok\nlocal/scripted@*,1.0,4.0\n")
    return p


class Script:
    def __init__(self, plan, delay=0.0):
        self.coa = itertools.cycle(plan)
        self.delay = delay

    def __call__(self, req):
        text = last_user_message(req)
        if text.startswith("A solution for the task below failed"):
            return Reply(fenced(FUSED), delay=self.delay)
        return Reply(next(self.coa), delay=self.delay)


def command(server, out, prices, *extra, strategy="pike-o"):
    return [sys.executable, "-m", "pike", "optimize", str(TASK), "--llm", server.model_string("scripted"), "--out", str(out),
            "--set", f"llm.prices_file={prices}", "--set", "llm.max_retries=1", "--set", "eval.retime_final=false",
            "--strategy", strategy, "--json", *extra]


def env_for(cache):
    return {**os.environ, "PIKE_CACHE_DIR": str(cache), "NO_PROXY": "127.0.0.1,localhost"}


def read(out):
    con = sqlite3.connect(out / "run.db")
    con.row_factory = sqlite3.Row
    sols = con.execute("SELECT * FROM solutions ORDER BY id").fetchall()
    ex = con.execute("SELECT * FROM exchanges ORDER BY id").fetchall()
    con.close()
    store = Store(out / "run.db", readonly=True)
    try:  # the run state PIKE-O keeps in the store's tables
        state = {"lib": store.pike_o(1), "iterations": [dict(r) for r in store.pike_o_iterations(1)],
                 "retimings": [dict(r) for r in store.retimings(1)]}
    finally:
        store.close()
    return sols, ex, state


@pytest.mark.slow
def test_pike_o_islands_migration_fixes_and_budget(tmp_path, prices, cache):
    script = Script([fenced(FUSED), fenced(BROKEN), fenced(SLOW), "No code from me this time."])
    with FakeLLMServer(script) as server:
        out = tmp_path / "run"
        p = subprocess.run(command(server, out, prices, "--budget", "14", "--set", "search.pike_o.islands=2",
                                   "--set", "search.pike_o.migration_interval=2", "--set", "search.max_fix_attempts=2",
                                   "--set", "llm.concurrency=1"),  # iterations in order: migration is deterministic
                           capture_output=True, text=True, env=env_for(cache), timeout=300)
        assert p.returncode == 0, p.stderr[-4000:]
    doc = json.loads(p.stdout)
    sols, ex, state = read(out)
    charged = [e for e in ex if e["role"] in ("coa", "efa")]
    assert len(charged) == 14 and doc["queries"] == 14  # the budget stops exactly
    assert not [e for e in ex if e["role"] == "iba"]  # OpenEvolve has no brainstorming
    lib = state["lib"]
    by_id = {s["id"]: s for s in sols}
    # Every candidate carries its iteration (phase, branch 0) and island; iteration i runs on island i % 2.
    assert all(s["branch"] == 0 and s["island"] == s["phase"] % 2 for s in sols)
    # Each iteration is a row: its island, where its parent was drawn from, and the chain's final child.
    its = state["iterations"]
    assert len(its) >= len({s["phase"] for s in sols}) and all(i["island"] == i["n"] % 2 for i in its)
    assert all(i["status"] == "done" and i["drawn_from"] in ("explore", "exploit", "random") for i in its)
    for i in its:
        chain = [s for s in sols if s["phase"] == i["n"]]
        assert i["child_id"] == (max(s["id"] for s in chain) if chain else None)
        assert chain == [] or chain[0]["parent_id"] == (i["parent_id"] or None)
    coa = [s for s in sols if s["origin"] == "coa"]
    assert len({s["phase"] for s in coa}) == len(coa)  # one COA per iteration
    # Broken candidates were fixed inside their iteration (same phase), within max_fix_attempts.
    efa = [s for s in sols if s["origin"] == "efa"]
    assert efa and all(by_id[s["fix_of"]]["phase"] == s["phase"] and s["attempt"] <= 2 for s in efa)
    # Only correct programs are in the library, and parents were drawn from it.
    members = {m for pop in lib["islands"] for m in pop} | set(lib["archive"])
    assert all(by_id[m]["status"] == "ok" for m in members if m)
    assert all(s["parent_id"] is None or by_id[s["parent_id"]]["status"] == "ok" for s in coa)
    assert len(lib["archive"]) <= 12 and max(len(p) for p in lib["islands"]) <= 25
    # Migration happened, and every program found on an island other than its own arrived as a migrant.
    # (Which programs move depends on measured runtimes: at this tiny CPU size the reference itself can
    # be an island's fastest, and it is on every island already. The unit tests pin the copies down.)
    assert lib["migrations"] >= 1
    copies = [(m, i) for i, pop in enumerate(lib["islands"]) for m in pop if m and by_id[m]["island"] != i]
    assert all(m in lib["migrants"][i] for m, i in copies)
    assert all(by_id[m]["island"] == src and m in lib["migrants"][dst] for m, src, dst in lib["moves"] if m in lib["islands"][dst])
    assert not lib["pending"]
    # The island's top programs were shown to the optimiser once there were any.
    prompts = [json.loads(e["prompt"])[-1]["content"] for e in ex if e["role"] == "coa"]
    assert any("Best solutions found so far" in t and "solution " in t for t in prompts)
    assert doc["rows"][0]["valid"] >= 1 and (out / "best" / "ln_mlp.py").exists()
    # Before parents were drawn, the contenders were re-timed side by side with eager (the preset's
    # retime_top): their confirmed figures are in the state, for the library's fitness.
    timed = [r for r in state["retimings"] if r["solution_id"] is not None]
    assert len({r["solution_id"] for r in timed}) >= 2 and all(r["samples"] and r["speedup"] for r in timed)


@pytest.mark.slow
def test_pike_o_kill_then_resume(tmp_path, prices, cache):
    script = Script([fenced(SLOW), fenced(BROKEN)], delay=0.3)
    with FakeLLMServer(script) as server:
        out = tmp_path / "run"
        cmd = command(server, out, prices, "--budget", "10", "--set", "search.max_fix_attempts=1")
        p = subprocess.Popen(cmd, env=env_for(cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 120
        n = k = 0
        while time.time() < deadline and (n < 6 or k < 3):  # some iterations done, others in flight
            time.sleep(0.1)
            try:
                con = sqlite3.connect(out / "run.db")
                n = con.execute("SELECT COUNT(*) FROM exchanges").fetchone()[0]
                k = con.execute("SELECT COUNT(*) FROM solutions").fetchone()[0]
            except sqlite3.OperationalError:
                continue
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        sols_before, ex_before, state_before = read(out)
        assert 6 <= len(ex_before) < 10
        r = subprocess.run([sys.executable, "-m", "pike", "optimize", "--resume", str(out), "--json"],
                           capture_output=True, text=True, env=env_for(cache), timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    sols, ex, state = read(out)
    assert len([e for e in ex if e["role"] in ("coa", "efa")]) == 10  # in-flight queries at the kill counted
    # Nothing stored before the kill was asked again: its candidates are unchanged, each iteration has
    # one COA query, and new iterations got new numbers.
    old = {s["id"]: (s["phase"], s["code"]) for s in sols_before}
    assert {s["id"]: (s["phase"], s["code"]) for s in sols if s["id"] in old} == old
    assert set(Counter(e["phase"] for e in ex if e["role"] == "coa").values()) == {1}
    assert all(s["status"] != "pending" for s in sols)
    assert not state["lib"]["pending"] and all(i["status"] in ("done", "lost") for i in state["iterations"])
    assert state["lib"]["next_iteration"] >= state_before["lib"]["next_iteration"]
    assert json.loads(r.stdout)["rows"][0]["valid"] >= 1


@pytest.mark.slow
def test_pike_o_map_elites_end_to_end(tmp_path, prices, cache):
    script = Script([fenced(FUSED), fenced(BROKEN), fenced(SLOW), "No code from me this time."])
    with FakeLLMServer(script) as server:
        out = tmp_path / "run"
        p = subprocess.run(command(server, out, prices, "--budget", "8", "--set", "search.max_fix_attempts=2",
                                   strategy="pike-o-map-elites"),
                           capture_output=True, text=True, env=env_for(cache), timeout=300)
        assert p.returncode == 0, p.stderr[-4000:]
    doc = json.loads(p.stdout)
    sols, ex, state = read(out)
    assert len([e for e in ex if e["role"] in ("coa", "efa")]) == 8 and doc["queries"] == 8  # the budget stops exactly
    lib = state["lib"]
    by_id = {s["id"]: s for s in sols}
    g = lib["grid"]
    assert (g["features"], g["bins"], g["anchors"][0]) == (["complexity", "diversity"], 10, REFERENCE)
    grid = Grid.from_json(g)
    cells = grid.cells[0]
    # The reference's cell and at least one more are occupied; the island is exactly the occupants.
    assert len(cells) >= 2 and sorted(lib["islands"][0]) == sorted(cells.values())
    assert all(grid.key(m) == key for key, m in cells.items())
    # Only correct programs were measured; each one's complexity is its stored code's.
    assert grid.values and all(by_id[m]["status"] == "ok" for m in grid.values if m)
    assert all(v["complexity"] == complexity(by_id[m]["code"] if m else TASK.read_text()) for m, v in grid.values.items())
    # Each occupant (other than the reference) is a program measured into its cell; which of the cell's
    # programs holds it depends on wins beyond the noise (unit-tested above), not on the point figures.
    for key, m in cells.items():
        if m:
            assert m in [i for i in grid.values if i and grid.key(i) == key]
    assert not lib["pending"] and doc["rows"][0]["valid"] >= 1
