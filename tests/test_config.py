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


# ---------------------------------------------------------------- sections, ranges, flags, earlier configs

# A run's stored config as versions before the strategy sections wrote it (flat search keys).
FLAT = {
    "llm": {"model": "local/m@http://x/v1"},
    "search": {"strategy": "pike-b-cheap-efa", "budget": 6, "num_branches": 2, "top_k": 1, "iba": False, "num_ideas": 3,
               "parents_from": "all_time", "diverse_branches": True, "islands": 2, "archive": 5, "exploration": 0.3,
               "exploitation": 0.6, "grid_features": "backend", "offline_combos": "all", "roofline": True,
               "max_fix_attempts": 1, "retime_top": 2},
    "eval": {"device": "cpu", "trials": 3},
    "seed": 4,
}


def test_each_strategy_reads_its_own_section():
    cfg = cfgmod.apply_overrides(cfgmod.RunConfig(), ["search.pike_b.top_k=2", "search.pike_o.islands=3", "search.offline.combos=all"])
    assert (cfg.search.pike_b.top_k, cfg.search.pike_o.islands, cfg.search.offline.combos) == (2, 3, "all")
    # No key is in two places: each name of a strategy's section is in no other section of search.
    names = {s: set(cfgmod.dotted(getattr(cfgmod.RunConfig().search, s).__dict__)) for s in ("pike_b", "pike_o", "offline")}
    shared = {k for k in cfgmod.dotted(cfgmod.RunConfig().to_dict()["search"]) if "." not in k}
    for s, keys in names.items():
        assert not keys & shared and all(not keys & other for o, other in names.items() if o != s)
    # TOML has the sections as [search.pike_b] tables, and reads back the same.
    text = cfgmod.dumps(cfg)
    assert "[search.pike_b]\n" in text and "[search.offline]\ncombos = \"all\"" in text
    assert cfgmod.RunConfig.from_dict(__import__("tomllib").loads(text)) == cfg
    with pytest.raises(ValueError, match=r"unknown config key search\.pike_b\.islands; known: num_branches"):
        cfgmod.apply_overrides(cfg, ["search.pike_b.islands=2"])
    with pytest.raises(ValueError, match="search.pike_o must be a table"):
        cfgmod.apply_overrides(cfg, ["search.pike_o=3"])
    # The API's settings: a key that one section alone has needs no section.
    api = cfgmod.apply_values(cfg, {"num_ideas": 4, "search__pike_o__archive": 6, "keep_jobs": True})
    assert (api.search.pike_b.num_ideas, api.search.pike_o.archive, api.eval.keep_jobs) == (4, 6, True)
    with pytest.raises(ValueError, match="'timeout_s' is ambiguous"):
        cfgmod.apply_values(cfg, {"timeout_s": 3})


@pytest.mark.parametrize("assignment, message", [
    ("eval.trials=0", "eval.trials: must be at least 1, not '0'"),
    ("eval.random_weight_trials=-1", "eval.random_weight_trials: must be at least 0, not '-1'"),
    ("eval.floor_fraction=1.5", "eval.floor_fraction: must be at most 1, not '1.5'"),
    ("eval.baseline_timeout_s=0", "eval.baseline_timeout_s: must be positive, not '0'"),
    ("eval.keep_jobs=maybe", "eval.keep_jobs: expected true or false, not 'maybe'"),
    ("search.pike_b.num_branches=0", "search.pike_b.num_branches: must be at least 1, not '0'"),
    ("search.pike_b.parents_from=best", "search.pike_b.parents_from: must be 'last_phase' or 'all_time', not 'best'"),
    ("search.pike_o.migration_rate=2", "search.pike_o.migration_rate: must be at most 1, not '2'"),
    ("search.offline.combos=some", "search.offline.combos: must be 'promising' or 'all', not 'some'"),
    ("search.num_branches=0", "search.pike_b.num_branches: must be at least 1, not '0'"),  # an earlier key: its new name
])
def test_a_value_out_of_range_is_one_line_naming_key_value_and_range(assignment, message):
    with pytest.raises(ValueError) as e:
        cfgmod.apply_overrides(cfgmod.RunConfig(), [assignment])
    assert str(e.value) == message


def test_eval_section_is_the_evaluators_defaults_and_settings():
    from dataclasses import fields

    from pike.evaluate.evaluator import EvalConfig

    settings, own = cfgmod.EvalSettings(), {f.name: f for f in fields(EvalConfig)}
    shared = [f.name for f in fields(settings) if f.name in own and f.name != "device"]
    assert {"trials", "keep_jobs", "timeout_s", "alt_trials", "fresh_ratio"} <= set(shared)
    for name in shared:  # one default, the config's
        assert own[name].default == getattr(settings, name), name
    cfg = cfgmod.apply_overrides(cfgmod.RunConfig(), ["eval.keep_jobs=true", "eval.trials=2", "eval.alt_trials=0"])
    ev = EvalConfig.from_settings(cfg.eval, "cpu", seed=3, time=False)
    assert (ev.keep_jobs, ev.trials, ev.alt_trials, ev.seed, ev.time, ev.device) == (True, 2, 0, 3, False, "cpu")


def test_the_flag_table():
    from typer.models import OptionInfo

    from pike.commands import flags
    from pike.commands.evaluate import BASELINE_FLAGS, EVAL_FLAGS
    from pike.commands.search import OPTIMIZE_FLAGS

    every = set(cfgmod.keys())
    for name in {*OPTIMIZE_FLAGS, *EVAL_FLAGS, *BASELINE_FLAGS}:
        f = flags.FLAGS[name]
        assert f.key in every, f
        opt = flags.option(name)
        assert isinstance(opt, OptionInfo) and f.key in opt.help
    assert "search.budget, default 300" in flags.option("--budget").help  # the config's default, shown
    assert flags.option("--budget").default is None  # not given: --config and --set decide
    given = {"budget": 4, "time_limit": "90s", "seed_offline": True, "allow_seeded_only": False, "device": None, "strict": True}
    sets, by_key = flags.assignments(given, ["--budget", "--time-limit", "--seed-offline", "--allow-seeded-only", "--device"])
    assert sets == ["search.budget=4", "search.time_limit_min=90s", "search.seed_offline=true"]
    assert by_key["search.budget"] == "--budget"
    assert flags.assignments({"allow_seeded_only": True}, ["--allow-seeded-only"])[0] == ["eval.require_state_dict=false"]
    with pytest.raises(ValueError) as e:
        cfgmod.apply_overrides(cfgmod.RunConfig(), flags.assignments({"budget": 0}, ["--budget"])[0])
    assert flags.explain(str(e.value), {"search.budget": "--budget"}) == "--budget (search.budget): must be at least 1, not '0'"


def test_presets_differ_in_values_and_aliases_are_presets():
    seen = {}
    for name, p in cfgmod.PRESETS.items():
        values = repr(sorted(cfgmod.dotted(p).items()))
        assert values not in seen, f"{name} sets the same values as {seen.get(values)}"
        seen[values] = name
    for old, new in cfgmod.PRESET_ALIASES.items():
        assert old not in cfgmod.PRESETS and new in cfgmod.PRESETS
        cfg = cfgmod.load(strategy=old)
        assert cfg == cfgmod.load(strategy=new) and cfg.search.strategy == new
        assert cfgmod.strategy_kind(old) == cfgmod.strategy_kind(new)
    assert cfgmod.load(strategy="pike-b-no-iba").search.pike_b.iba is False and cfgmod.load(strategy="pike-b").search.pike_b.iba


def test_a_stored_flat_config_reads_as_the_sections(tmp_path):
    cfg = cfgmod.RunConfig.from_dict(FLAT)
    b, o = cfg.search.pike_b, cfg.search.pike_o
    assert (b.num_branches, b.top_k, b.iba, b.num_ideas, b.parents_from, b.diverse_branches) == (2, 1, False, 3, "all_time", True)
    assert (o.islands, o.archive, o.exploration, o.exploitation, o.grid_features) == (2, 5, 0.3, 0.6, "backend")
    assert (cfg.search.offline.combos, cfg.search.max_fix_attempts, cfg.search.retime_top, cfg.seed) == ("all", 1, 2, 4)
    assert cfg.search.strategy == "pike-b-cheap-efa" and cfgmod.strategy_kind(cfg.search.strategy) == "pike-b"
    # An earlier config.toml (flat [search]) loads the same way; its preset alias runs as the preset.
    f = tmp_path / "old.toml"
    f.write_text('[search]\nstrategy = "pike-o-exploit-only"\nislands = 2\ntop_k = 3\noffline_combos = "all"\n')
    old = cfgmod.load(f)
    assert (old.search.strategy, old.search.pike_o.islands, old.search.pike_b.top_k, old.search.offline.combos) == ("pike-o", 2, 3, "all")
    # Earlier --set keys are read as their new ones; a retired one is refused.
    again = cfgmod.apply_overrides(cfgmod.RunConfig(), ["search.num_branches=7", "search.grid_bins=4"])
    assert (again.search.pike_b.num_branches, again.search.pike_o.grid_bins) == (7, 4)
    with pytest.raises(ValueError, match="unknown config key search.roofline"):
        cfgmod.apply_overrides(cfgmod.RunConfig(), ["search.roofline=true"])
    # A stored run resumes from it: the engine reads run.db's config row.
    from pike.search.engine import resume_config
    from pike.store import Store

    store = Store(tmp_path / "run.db")
    store.set_meta("config", FLAT)
    store.close()
    assert resume_config(tmp_path) == cfg


def test_a_stored_config_with_a_renamed_value_resumes_with_its_successor():
    stored = {"eval": {"start_method": "forkserver", "trials": 3}}
    cfg = cfgmod.RunConfig.from_dict(stored)
    assert (cfg.eval.start_method, cfg.eval.trials) == ("warm", 3)
    with pytest.raises(ValueError, match="start_method"):  # only stored configs are read this way
        cfgmod.apply_overrides(cfgmod.RunConfig(), ["eval.start_method=forkserver"])


def test_readme_lists_every_key_in_its_section():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    listed = {}
    for section, cells in re.findall(r"^\| `([a-z_.]+)`[^|]*\| (`.*`) \|$", readme, re.M):
        listed[section] = re.findall(r"`([a-z_]+)`", cells)
    by_section: dict[str, list[str]] = {}
    for key in cfgmod.keys():
        section, _, name = key.rpartition(".")
        if section:
            by_section.setdefault(section, []).append(name)
    assert listed == by_section
