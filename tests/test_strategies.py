"""The strategy registry: presets name a registered kind, classes declare what they need; retired keys."""

from __future__ import annotations

import pytest

from pike.agents.templates import check_prompt_dir
from pike.config import PRESETS, RunConfig, apply_overrides, load, preset, strategy_kind
from pike.search.engine import check_config
from pike.search.strategies import STRATEGIES, make_strategy, strategy_class


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_runs_a_registered_strategy(name):
    cfg = load(strategy=name)
    cls = strategy_class(cfg)
    assert cls is STRATEGIES[PRESETS[name]["kind"]] and cls.kind == strategy_kind(name)
    assert cls.needs_llm == (name != "offline")
    assert "kind" not in preset(name)  # a preset's knobs are config fields; its kind is not one
    assert isinstance(make_strategy(cfg), cls)


def test_capabilities_are_declared_not_read_off_names():
    assert {k: (c.needs_llm, c.phase_synchronous, c.seeds_from_offline, c.compile_variants) for k, c in STRATEGIES.items()} == {
        "pike-b": (True, True, True, False), "pike-o": (True, False, True, False),
        "offline": (False, False, False, True), "replay": (False, False, False, False)}


def test_strategy_follows_a_set_strategy_name():
    cfg = apply_overrides(load(strategy="pike-b"), ["search.strategy=pike-o-3islands"])
    assert strategy_class(cfg).kind == "pike-o"
    with pytest.raises(ValueError, match="no strategy of kind 'nope'"):
        check_config(apply_overrides(load(strategy="pike-b"), ["search.strategy=nope"]))


def test_a_retired_key_is_ignored(tmp_path):
    stored = RunConfig().to_dict()
    stored["search"]["roofline"] = True
    assert RunConfig.from_dict(stored) == RunConfig()
    f = tmp_path / "config.toml"
    f.write_text('[search]\nstrategy = "pike-o"\nroofline = true\n')
    assert strategy_class(load(f)).kind == "pike-o"
    with pytest.raises(ValueError, match="unknown config key.*roofline"):
        apply_overrides(RunConfig(), ["search.roofline=true"])  # not a knob one can set any more


def test_prompt_dir_is_checked(tmp_path):
    check_prompt_dir(str(tmp_path))  # empty: every template shipped
    (tmp_path / "coa.txt").write_text("x")
    check_prompt_dir(str(tmp_path))
    (tmp_path / "cao.txt").write_text("x")
    with pytest.raises(ValueError, match=r"cao.txt in .* override no template \(the templates: coa.txt, efa.txt"):
        check_prompt_dir(str(tmp_path))
    with pytest.raises(ValueError, match="is not a directory"):
        check_prompt_dir(str(tmp_path / "coa.txt"))
