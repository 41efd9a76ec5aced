"""The command line as its users meet it: exit codes, one-line errors for bad input, run directories
that a failed start does not block, what --resume may change, the help, and output that fits 80
columns. End to end through `python -m pike` where the behaviour is the command line's."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
import torch
import typer

from pike import config as cfgmod
from pike.commands import exit_codes
from scripted import TASK

BAD_INIT = '''import torch


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        raise RuntimeError("boom in init")

    def forward(self, x):
        return x


def get_inputs():
    return [torch.randn(4, 4)]


def get_init_inputs():
    return []
'''


def pike(*args, cwd=None, env=None, timeout=300):
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pike", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


def one_error_line(p) -> str:
    """The one line a bad input gets (a progress line or two may come before it, never a traceback)."""
    assert "Traceback" not in p.stderr and "╭" not in p.stderr, p.stderr[-3000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, p.stderr[-3000:]
    return errors[0]


# ---------------------------------------------------------------- the config's one schema


def test_config_values_are_checked_with_their_key_and_range():
    cfg = cfgmod.load(strategy="pike-b")
    for setting, message in [
        ("search.budget=lots", "search.budget: expected a whole number, not 'lots'"),
        ("eval.trials=-5", "eval.trials: must be at least 1, not '-5'"),
        ("eval.comparator=maybe", "eval.comparator: must be 'auto', 'on' or 'off', not 'maybe'"),
        ("search.pike_o.elite_ratio=1.5", "search.pike_o.elite_ratio: must be at most 1"),
        ("search.max_usd=-1", "search.max_usd: must be positive"),
        ("search.pike_b.iba=perhaps", "search.pike_b.iba: expected true or false"),
        ("eval.gpus=0,x", "eval.gpus.1: expected a whole number"),
    ]:
        with pytest.raises(ValueError) as e:
            cfgmod.apply_overrides(cfg, [setting])
        assert message in str(e.value) and "\n" not in str(e.value), (setting, str(e.value))
    # The same schema checks a TOML file, the API's settings and a stored run's config.
    with pytest.raises(ValueError, match="eval.trials: must be at least 1"):
        cfgmod.apply_values(cfg, {"trials": 0})
    with pytest.raises(ValueError, match="search.pike_b.top_k: expected a whole number"):
        cfgmod.RunConfig.from_dict({"search": {"top_k": "four"}})
    # Text from --set becomes the field's type; "none" clears an optional field.
    ok = cfgmod.apply_overrides(cfg, ["search.budget=7", "search.max_usd=2.5", "eval.gpus=0,2", "search.pike_b.iba=off", "search.max_usd=none"])
    assert (ok.search.budget, ok.search.max_usd, ok.eval.gpus, ok.search.pike_b.iba) == (7, None, [0, 2], False)


@pytest.mark.parametrize("text,minutes", [("90s", 1.5), ("45m", 45.0), ("2h", 120.0), ("1.5", 1.5), (" 30 S ", 0.5), (10, 10.0)])
def test_durations(text, minutes):
    cfg = cfgmod.apply_values(cfgmod.load(strategy="offline"), {"search.time_limit_min": text})
    assert cfg.search.time_limit_min == pytest.approx(minutes)


@pytest.mark.parametrize("text,message", [("soon", "expected a duration such as 90s, 45m or 2h"), ("0", "must be positive"),
                                          ("-2h", "must be positive"), ("5d", "expected a duration")])
def test_bad_durations(text, message):
    with pytest.raises(ValueError, match=message):
        cfgmod.apply_overrides(cfgmod.load(strategy="offline"), [f"search.time_limit_min={text}"])


# ---------------------------------------------------------------- help and conventions


def test_every_option_and_argument_has_help():
    from pike.cli import app

    missing = []

    def walk(cmd: click.Command, path: str) -> None:
        for p in cmd.params:
            if not (getattr(p, "help", None) or "").strip():
                missing.append(f"{path} {p.name}")
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}")
    walk(typer.main.get_command(app), "pike")
    assert not missing, missing


def test_version_short_help_and_completion():
    import pike as pkg

    p = pike("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"pike {pkg.__version__}"
    for args in (["-h"], ["optimize", "-h"], ["replay", "-h"], ["presets", "-h"]):
        p = pike(*args)
        assert p.returncode == 0 and "Usage:" in p.stdout, args
    assert "--time-limit" in pike("optimize", "-h").stdout
    # With shell detection off, typer takes the shell as the option's value: the script then does not
    # depend on which processes this test runs under (detection walks the process tree).
    p = pike("--show-completion", "bash", env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert p.returncode == 0 and "complete" in p.stdout and "COMP_WORDS" in p.stdout, p.stderr
    p = pike("presets", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["pike-o-map-elites"]["pike_o.feature_grid"] is True


def test_readme_lists_every_preset_and_prices_name_a_real_flag():
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    assert not [name for name in cfgmod.PRESETS if f"`{name}`" not in readme]
    prices = (root / "src" / "pike" / "llm" / "prices.csv").read_text()
    assert "--prices" not in prices and "llm.prices_file" in prices
    assert "llm.prices_file" in pike("optimize", "-h").stdout


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing left behind


BAD_INPUT = [
    (["--set", "search.budget=lots"], {}, "search.budget: expected a whole number, not 'lots'"),
    (["--set", "eval.trials=-5"], {}, "eval.trials: must be at least 1"),
    (["--time-limit", "soon"], {}, "--time-limit (search.time_limit_min): expected a duration such as 90s"),
    (["--llm", "nonsense"], {}, "cannot tell the provider of model 'nonsense'"),
    (["--llm", "openai/no-such-model", "--max-usd", "1"], {"OPENAI_API_KEY": "sk-test"}, "no price for model 'openai/no-such-model'"),
    (["--llm", "openai/gpt-4.1", "--strategy", "pike-o", "--set", "search.pike_o.exploration=0.5"], {"OPENAI_API_KEY": "sk-test"},
     "search.pike_o.exploration + search.pike_o.exploitation must be at most 1"),
]


@pytest.mark.parametrize("args,env,message", BAD_INPUT, ids=[" ".join(a) for a, _, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_leaves_no_run_directory(tmp_path, args, env, message):
    out = tmp_path / "r"
    p = pike("optimize", TASK, "--out", out, *args, env=env)
    assert p.returncode == exit_codes.USAGE
    assert message in one_error_line(p)
    assert not out.exists()  # the corrected command may use it


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine can run --device cuda")
def test_device_without_cuda_is_one_line(tmp_path):
    p = pike("optimize", TASK, "--device", "cuda", "--out", tmp_path / "r")
    assert p.returncode == exit_codes.USAGE and not (tmp_path / "r").exists()
    line = one_error_line(p)
    assert "device 'cuda'" in line and "--device cpu" in line
    p = pike("replay", tmp_path, "--device", "cuda:0")  # any command that takes --device
    assert p.returncode == exit_codes.USAGE


@pytest.mark.slow
def test_unwritable_out_and_html_are_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    p = pike("optimize", TASK, "--out", blocker / "r")
    assert p.returncode == exit_codes.USAGE and "--out" in one_error_line(p) and "is a file, not a directory" in p.stderr
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.db").write_text("")
    p = pike("report", run, "--html", blocker / "x.html")
    assert p.returncode == exit_codes.USAGE and "--html" in one_error_line(p)
    if os.geteuid() != 0:  # root writes anywhere: only the file-in-the-way case applies
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        p = pike("optimize", TASK, "--out", ro / "r")
        assert p.returncode == exit_codes.USAGE and "cannot write in" in one_error_line(p)


# ---------------------------------------------------------------- exit codes, failed starts, --resume


@pytest.mark.slow
def test_nothing_ran_then_resume_changes_only_what_it_may(tmp_path):
    bad = tmp_path / "bad_init.py"
    bad.write_text(BAD_INIT)
    out = tmp_path / "r"
    # A run directory whose start failed before its first task (a device probe, say) is reused.
    from pike.store import Store

    Store(out / "run.db").close()
    p = pike("optimize", bad, "--out", out, env={"PIKE_CACHE_DIR": str(tmp_path / "cache")})
    assert p.returncode == exit_codes.NOTHING_RAN, p.stderr[-3000:]
    assert "boom in init" in p.stdout and "best solutions" not in p.stdout and not (out / "best").exists()
    # Now it holds a run: a new command is told to resume it, and a resume keeps the run's settings.
    p = pike("optimize", bad, "--out", out)
    assert p.returncode == exit_codes.USAGE and "already holds a run: use --resume" in one_error_line(p)
    p = pike("optimize", "--resume", out, "--strategy", "pike-b", "--set", "eval.trials=3", "--device", "cpu")
    line = one_error_line(p)
    assert p.returncode == exit_codes.USAGE
    assert "--strategy, --device, --set eval.trials cannot change" in line and "--llm, --fix-model, --budget" in line
    p = pike("optimize", "--resume", out, "--time-limit", "soon")
    assert p.returncode == exit_codes.USAGE and "--time-limit (search.time_limit_min): expected a duration" in one_error_line(p)
    p = pike("optimize", "--resume", out, "--budget", "lots")  # refused by the option's own type
    assert p.returncode == exit_codes.USAGE and "Invalid value for '--budget'" in one_error_line(p)
    # What it may change is used and recorded.
    p = pike("optimize", "--resume", out, "--budget", "5", "--time-limit", "2h", "--set", "llm.concurrency=3",
             env={"PIKE_CACHE_DIR": str(tmp_path / "cache")})
    assert p.returncode == exit_codes.NOTHING_RAN, p.stderr[-3000:]
    saved = cfgmod.load(out / "config.toml")
    assert (saved.search.budget, saved.search.time_limit_min, saved.llm.concurrency) == (5, 120.0, 3)


@pytest.mark.slow
@pytest.mark.slow
def test_some_failed_winner_named_and_80_columns(tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    shutil.copy(TASK, tasks / "ln_mlp.py")
    (tasks / "bad_init.py").write_text(BAD_INIT)
    out = tmp_path / "r"
    p = pike("optimize", tasks, "--out", out, "--time-limit", "90s", "--set", "search.final_compile_modes=default",
             env={"PIKE_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "80"}, timeout=600)
    assert p.returncode == exit_codes.TASKS_FAILED, p.stderr[-3000:]
    doc = json.loads((out / "summary.json").read_text())
    row = next(r for r in doc["rows"] if r["task"] == "ln_mlp")
    # The table fits 80 columns with every figure whole.
    lines = p.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert "…" not in p.stdout
    assert f"{row['eager_ms']:.4f}" in p.stdout and f"{row['best_ms']:.4f}" in p.stdout
    lo, hi = row["speedup_eager_ci"]
    assert f"{row['speedup_eager']:.2f}x [{lo:.2f}-{hi:.2f}]" in p.stdout
    # The winner is named: a candidate by id and variant, or the baseline that won.
    winner = next(line for line in lines if line.startswith("ln_mlp: winner") or line.startswith("ln_mlp: no candidate"))
    if row.get("winner"):
        assert f"ln_mlp: winner {row['winner']}" in winner and row["winner"].startswith("#")
    assert "bad_init:" in p.stdout and "boom in init" in p.stdout
    # Without a terminal each evaluation names its candidate.
    assert "ln_mlp: evaluated #1 variant eager: ok" in p.stderr


@pytest.mark.slow
def test_ctrl_c_prints_the_resume_command(tmp_path):
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "pike", "optimize", str(TASK), "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PIKE_CACHE_DIR": str(tmp_path / "cache")})
    seen, t0 = "", time.monotonic()
    while "evaluated" not in seen and time.monotonic() - t0 < 300:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    assert "evaluated" in seen, seen[-3000:]
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == exit_codes.INTERRUPTED, err[-3000:]
    assert f"continue with `pike optimize --resume {out}`" in err and "Traceback" not in err
    assert (out / "run.db").exists()


def _row(task, **kw):
    row = dict(task=task, status="done", error=None, queries=0, usd=0.0, eager_ms=2.0, compile_ms=1.5, best_ms=1.0, fallback=False,
               delivered="solution:7", speedup_eager=2.0, speedup_compile=1.5, speedup_best_compile=1.5, best_compile_mode="default",
               speedup_eager_ci=[1.9, 2.1], speedup_compile_ci=[1.4, 1.6], speedup_best_compile_ci=[1.4, 1.6], winner=None)
    return {**row, **kw}


def test_final_table_names_winners_and_keeps_tracebacks_for_debug(capsys, monkeypatch):
    from pike.commands import common
    from pike.commands.search import print_table

    doc = {"rows": [
        _row("a", winner="#7 (coa, phase 2, from #3): fuse the norm"),
        _row("b", fallback=True, delivered="eager", winner=None, best_ms=2.0, speedup_eager=1.0),
        _row("c", fallback=True, delivered="compile:default", winner=None, best_ms=1.5, speedup_eager=1.33),
        _row("d", status="error", error="RuntimeError: pool lost\nTraceback (most recent call last):\n  File ..."),
    ], "geomean_eager": 1.4}
    print_table(doc, title="t")
    out = capsys.readouterr().out
    assert "a: winner #7 (coa, phase 2, from #3): fuse the norm, 2.00x vs eager" in out
    assert "b: no candidate beat eager; best/b.py is the task's own model" in out
    assert "c: winner the baseline compile:default, 1.33x vs eager" in out
    assert "d: RuntimeError: pool lost (pike --debug ... shows the traceback)" in out and "Traceback" not in out
    assert "[lo-hi]: 95% interval" in out  # notes are text, not markup
    monkeypatch.setattr(common, "DEBUG", True)
    print_table(doc, title="t")
    assert "Traceback (most recent call last)" in capsys.readouterr().out


def test_a_resume_uses_and_records_the_settings_it_may_change(tmp_path, monkeypatch):
    """The engine side of `--resume --llm/--set llm.prices_file/--budget`: the new model's client, the
    new price table frozen in the store, the changed config recorded; a failed resume keeps the run."""
    from pike.llm.base import ConfigError
    from pike.search.engine import Engine, resume_config
    from pike.store import Store

    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_text("model,input_per_mtok,output_per_mtok\nlocal/first@*,1.0,2.0\n")
    second.write_text("model,input_per_mtok,output_per_mtok\nlocal/second@*,3.0,4.0\n")
    run = tmp_path / "run"
    cfg = cfgmod.apply_overrides(cfgmod.load(strategy="pike-b"), [
        "eval.device=cpu", "llm.model=local/first@http://127.0.0.1:9/v1", f"llm.prices_file={first}", "search.max_usd=1"])
    Engine(cfg, run).close()
    Store(run / "run.db").add_task("t", "t.py", None, "source", "key")  # the run got as far as a task
    again = cfgmod.apply_overrides(resume_config(run), [
        "llm.model=local/second@http://127.0.0.1:9/v1", f"llm.prices_file={second}", "search.budget=42"])
    engine = Engine(again, run, resume=True)
    assert engine.clients["coa"].model == "local/second@http://127.0.0.1:9/v1"
    engine.close()
    store = Store(run / "run.db")
    assert ["local/second@*", 3.0, 4.0] in store.get_meta("prices")["rows"]
    saved = resume_config(run)
    assert saved.llm.model.startswith("local/second") and saved.search.budget == 42
    # A resume whose new model has no price under a USD budget fails, and the run stays as it was.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    bad = cfgmod.apply_overrides(saved, ["llm.model=openai/no-such-model"])
    with pytest.raises(ConfigError, match="no price for model"):
        Engine(bad, run, resume=True)
    assert (run / "run.db").exists() and resume_config(run).llm.model.startswith("local/second")


def test_a_failed_api_start_leaves_no_run_directory(tmp_path):
    import pike as pkg

    out = tmp_path / "r"
    with pytest.raises(pkg.PikeError, match="cannot tell the provider of model 'nonsense'"):
        pkg.optimize(torch.nn.Linear(4, 4), torch.randn(2, 4), llm="nonsense", out=out, device="cpu", progress=False)
    assert not out.exists()
    with pytest.raises(pkg.PikeError, match="search.time_limit_min: expected a duration"):
        pkg.optimize(torch.nn.Linear(4, 4), torch.randn(2, 4), time_limit="soon", out=out, device="cpu", progress=False)
    assert not out.exists()


@pytest.mark.parametrize("args,says", [
    (["optimize", "--budget", "lots"], "Invalid value for '--budget'"),
    (["optimize", "--bogus"], "No such option: --bogus"),
    (["bogus"], "No such command 'bogus'"),
    (["eval"], "Missing argument 'task'"),
])
def test_usage_errors_are_one_line(args, says):
    """click's own usage errors too: one line naming the flag or argument and where help is."""
    p = pike(*args)
    line = one_error_line(p)
    assert p.returncode == exit_codes.USAGE and says in line and "-h` for help" in line
