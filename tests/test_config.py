"""Typed config, presets, TOML round trip and CLI overrides."""

from __future__ import annotations

import os

import pytest

from pike import config as cfgmod
from pike.evaluate import pool as pool_mod


def test_presets_and_overrides(tmp_path):
    cfg = cfgmod.load(strategy="pike-b")
    assert cfg.search.pike_b.parents_from == "last_phase" and cfg.search.pike_b.top_k == 4 and cfg.search.max_fix_attempts == 5
    assert cfgmod.load(strategy="pike-b-no-efa").search.max_fix_attempts == 0
    plus = cfgmod.load()
    assert plus.search.strategy == "pike-b-plus" and plus.search.pike_b.parents_from == "all_time" and plus.search.gpu_facts
    cfg = cfgmod.apply_overrides(cfg, ["search.budget=7", "search.max_usd=2.5", "eval.gpus=0,2", "search.pike_b.iba=false", "llm.model=local/m@http://x/v1"])
    assert cfg.search.budget == 7 and cfg.search.max_usd == 2.5 and cfg.eval.gpus == [0, 2] and cfg.search.pike_b.iba is False
    with pytest.raises(ValueError, match="unknown config key"):
        cfgmod.apply_overrides(cfg, ["search.nonsense=1"])
    with pytest.raises(ValueError, match="unknown strategy"):
        cfgmod.load(strategy="nope")


def test_toml_round_trip_and_file_precedence(tmp_path):
    cfg = cfgmod.apply_overrides(cfgmod.load(strategy="pike-b"), ["search.budget=9", "llm.model=openai/gpt-4.1"])
    f = tmp_path / "exp.toml"
    f.write_text(cfgmod.dumps(cfg))
    again = cfgmod.load(f)
    assert again == cfg
    # A strategy named on the command line wins over the file's; values the file sets win over presets.
    small = tmp_path / "small.toml"
    small.write_text('[search]\nstrategy = "pike-b"\nbudget = 9\n')
    other = cfgmod.load(small, strategy="pike-b-no-iba")
    assert other.search.strategy == "pike-b-no-iba" and other.search.pike_b.iba is False and other.search.budget == 9


def test_cores_split_between_timing_and_builds(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    timing, build = pool_mod.split_cores(["cuda:0", "cuda:1"])
    assert timing == [(0, 1), (2, 3)] and build == tuple(range(4, 16))
    assert pool_mod.split_cores(["cpu", "cpu"]) == (None, None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert pool_mod.split_cores(["cuda:0"]) == (None, None)


def test_llm_concurrency_follows_the_pool(tmp_path, monkeypatch):
    from pike.search import engine

    def cfg(*sets):
        return cfgmod.apply_overrides(cfgmod.load(strategy="pike-b"), list(sets))

    assert cfg().llm.concurrency == 0  # auto by default
    assert engine.auto_concurrency(cfg("eval.device=cpu")) == 6
    assert engine.auto_concurrency(cfg("eval.device=cpu", "eval.workers=3")) == 18
    assert engine.auto_concurrency(cfg("eval.device=cuda", "eval.gpus=0,1,2,3")) == 24
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert engine.auto_concurrency(cfg("eval.device=cuda")) == 12  # every visible GPU
    assert engine.auto_concurrency(cfg("eval.executor=ray", "eval.ray_workers=8")) == 48
    # The engine resolves auto for its clients and strategies; the stored config keeps it for a resume.
    e = engine.Engine(cfg("eval.device=cpu", "eval.workers=2"), tmp_path / "a")
    try:
        assert e.cfg.llm.concurrency == 12 and e.store.get_meta("config")["llm"]["concurrency"] == 0
    finally:
        e.close()
    e = engine.Engine(cfg("eval.device=cpu", "llm.concurrency=3"), tmp_path / "b")
    try:
        assert e.cfg.llm.concurrency == 3  # a value set by the user is kept
    finally:
        e.close()


def test_final_table_compile_modes():
    from pike.search.engine import final_compile_modes

    def cfg(*sets):
        return cfgmod.apply_overrides(cfgmod.load(strategy="pike-b"), list(sets))

    gpu = ("default", "max-autotune-no-cudagraphs", "reduce-overhead")
    assert final_compile_modes(cfg("eval.device=cuda")) == gpu
    assert final_compile_modes(cfg("eval.device=cuda:1", "search.with_max_autotune=true")) == gpu + ("max-autotune",)
    assert final_compile_modes(cfg("eval.device=cpu")) == ("default",)
    # A chosen list keeps "default" (the table's "vs compile" column) and drops duplicates.
    assert final_compile_modes(cfg("eval.device=cuda", "search.final_compile_modes=reduce-overhead")) == ("default", "reduce-overhead")
    assert final_compile_modes(cfg("eval.device=cuda", "search.final_compile_modes=compile:max-autotune,default")) == ("default", "max-autotune")
    with pytest.raises(ValueError, match="not a compile mode on cpu"):
        final_compile_modes(cfg("eval.device=cpu", "search.final_compile_modes=reduce-overhead"))
