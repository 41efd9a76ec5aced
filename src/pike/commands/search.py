"""`pike optimize`, `pike replay` and `pike presets`."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from pike.commands import common, exit_codes, flags
from pike.commands.common import console, err_console, fail, load_tasks, resolve_size, sandbox_text, usable_device, writable_dir
from pike.config import RESUMABLE

app = typer.Typer()

EXAMPLE = Path(__file__).resolve().parent.parent / "suites" / "examples" / "gated_norm.py"


RESUME_FLAGS = "--llm, --fix-model, --budget, --max-usd, --time-limit and --set " + ", ".join(
    k for k in RESUMABLE if k not in ("llm.model", "llm.fix_model", "search.budget", "search.max_usd", "search.time_limit_min"))

# The flags of `pike optimize` that set config keys (pike.commands.flags)
OPTIMIZE_FLAGS = ["--llm", "--fix-model", "--budget", "--max-usd", "--time-limit", "--device", "--size", "--seed-offline", "--gpus",
                  "--executor", "--ray-address"]


@app.command("optimize")
def optimize_cmd(
    target: Optional[str] = typer.Argument(None, help="Task file, directory of tasks, built-in task name or 'builtin' (default: the shipped example)."),
    strategy: Optional[str] = typer.Option(None, help="Preset (see `pike presets`); default: offline without --llm, pike-b-plus with it."),
    llm: Optional[str] = flags.option("--llm"),
    fix_model: Optional[str] = flags.option("--fix-model"),
    budget: Optional[int] = flags.option("--budget"),
    max_usd: Optional[float] = flags.option("--max-usd"),
    time_limit: Optional[str] = flags.option("--time-limit", metavar="DURATION"),
    config: Optional[Path] = typer.Option(None, help="TOML config file."),
    set_: list[str] = typer.Option([], "--set", help="Override any knob: section.key=value (repeatable). LLM knobs: llm.concurrency"
                                   " (requests in flight; 0 = 6 per evaluation slot), llm.temperature, llm.max_tokens, llm.timeout_s,"
                                   " llm.max_retries, llm.iba_model, llm.prices_file, llm.prompt_dir (prompt templates to use instead of"
                                   " the shipped ones), llm.batch (provider batches at the batch price); a strategy's own knobs in"
                                   " search.pike_b, search.pike_o, search.offline (search.pike_b.top_k=2); eval.* (eval.keep_jobs=true)."
                                   " Every key: the README's config table, `pike presets` and config.toml of any run."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default: runs/<target>-<time>)."),
    resume: Optional[Path] = typer.Option(None, help="Continue a stopped run from its directory. It keeps its settings but may change "
                                          + RESUME_FLAGS + "."),
    device: Optional[str] = flags.option("--device"),
    size: Optional[str] = flags.option("--size"),
    seed_offline: bool = flags.option("--seed-offline"),
    gpus: Optional[str] = flags.option("--gpus"),
    executor: Optional[str] = flags.option("--executor"),
    ray_address: Optional[str] = flags.option("--ray-address"),
    as_json: bool = typer.Option(False, "--json", help="Print the final table as JSON."),
) -> None:
    """Search for a faster, verified ModelNew for each task; writes RUN_DIR/best/<task>.py.

    Exit status: 0 every task has a result, 1 some tasks failed, 2 bad input (nothing started),
    3 no task produced a result, 4 an internal error, 130 interrupted (resume with --resume)."""
    from pike import config as cfgmod
    from pike.llm.base import ConfigError
    from pike.search.engine import Engine, check_config, discard_run, eval_config, resume_config, run_started, run_to_end, stored_tasks
    from pike.search.strategies import strategy_class
    from pike.task import TaskError

    given, by_key = flags.assignments(locals(), OPTIMIZE_FLAGS)
    if llm and llm.startswith("batch:"):  # --llm batch:DIR: file rounds for the model named by llm.model (see pike.llm.rounds)
        given = [f"llm.batch_dir={llm.removeprefix('batch:').strip() or 'batch'}" if a.startswith("llm.model=") else a for a in given]
        by_key["llm.batch_dir"] = by_key.pop("llm.model")
    overrides = list(set_) + given  # a flag wins over --set of its key

    def bad(e: ValueError) -> None:
        fail(flags.explain(str(e), by_key))
    skipped = 0
    if resume is not None:
        if not (resume / "run.db").exists():
            fail(f"{resume}: not a run directory (no run.db)")
        fixed = [flag for flag, value in (("TARGET", target), ("--strategy", strategy), ("--config", config), ("--out", out)) if value]
        fixed += [flag for key, flag in by_key.items() if flag != "--llm" and key not in cfgmod.RESUMABLE]
        fixed += [f"--set {a.split('=', 1)[0]}" for a in set_ if a.split("=", 1)[0] not in cfgmod.RESUMABLE]
        if fixed:
            fail(f"--resume keeps the run's settings: {', '.join(fixed)} cannot change (a resume may change {RESUME_FLAGS})")
        try:
            cfg = cfgmod.apply_overrides(resume_config(resume), overrides)
        except FileNotFoundError as e:
            fail(f"{e}: start it again without --resume")
        except ValueError as e:
            bad(e)
        device_how = "as the run started"
        run_dir = resume
        tasks = stored_tasks(run_dir)
    else:
        try:
            cfg = cfgmod.load(config, strategy=strategy)
            cfg = cfgmod.apply_overrides(cfg, overrides)
            cfg, device_how = cfgmod.resolve_device(cfg)
        except ValueError as e:
            bad(e)
        if cfg.llm.batch_dir and not cfg.llm.model:
            fail("--llm batch:DIR writes requests for a model: name it with --set llm.model=PROVIDER/MODEL (it sets their model and prices)")
        try:
            needs_llm = strategy_class(cfg).needs_llm
        except ValueError as e:
            fail(str(e))
        if not cfg.llm.model and needs_llm:
            if strategy or (config and "strategy" in config.read_text()):
                fail(f"strategy {cfg.search.strategy!r} needs an LLM: pass --llm MODEL (or use --strategy offline)")
            cfg = cfgmod.with_strategy(cfg, "offline")
        target = target or str(EXAMPLE)
        found = load_tasks(target, resolve_size(cfg.eval.size, cfg.eval.device))
        for item in found:
            if isinstance(item, TaskError):
                err_console.print(f"[red]skipped[/] {item}", highlight=False)
        tasks = [t for t in found if not isinstance(t, TaskError)]
        skipped = len(found) - len(tasks)
        if not tasks:
            fail("no usable task", code=exit_codes.NOTHING_RAN)
        stem = Path(target).stem if Path(target).exists() else target
        run_dir = out or Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        writable_dir(run_dir, "--out")
        if run_started(run_dir):
            fail(f"{run_dir} already holds a run: use --resume {run_dir} or another --out")
        discard_run(run_dir)  # a start that failed before its first task: nothing there to keep
        if cfg.llm.batch_dir:
            cfg = replace(cfg, llm=replace(cfg.llm, batch_dir=batch_dir_setting(cfg.llm.batch_dir, run_dir)))
    try:
        check_config(cfg)  # before the Engine makes the run directory
    except ValueError as e:
        fail(str(e))
    try:
        engine = Engine(cfg, run_dir, resume=resume is not None)
    except (ConfigError, ValueError) as e:
        fail(str(e))
    device_text = cfg.eval.device + (f" ({device_how})" if device_how else "")
    err_console.print(f"run directory: {run_dir}  strategy: {cfg.search.strategy}  device: {device_text}  tasks: {len(tasks)}", highlight=False)
    err_console.print(f"sandbox: {sandbox_text(eval_config(cfg))}", highlight=False)
    from pike.llm.rounds import RoundDeferred

    try:
        doc = run_to_end(engine, tasks, err_console)
    except RoundDeferred as r:
        print_round_steps(r, run_dir)
        raise typer.Exit(exit_codes.BATCH_ROUND) from None
    except KeyboardInterrupt:
        err_console.print(f"interrupted: nothing is lost; continue with `pike optimize --resume {run_dir}`", highlight=False)
        raise typer.Exit(exit_codes.INTERRUPTED) from None
    if as_json:
        print(json.dumps(doc))
    else:
        print_table(doc, title=f"{cfg.search.strategy} on {cfg.eval.device}")
        if any((run_dir / "best").glob("*.py")):
            console.print(f"best solutions: {run_dir / 'best'}", highlight=False)
    code = exit_codes.for_run(doc, skipped)
    if any(r["status"] == "stopped" for r in doc["rows"]):
        err_console.print(f"stopped by the time limit: continue the search with `pike optimize --resume {run_dir}`", highlight=False)
    raise typer.Exit(code)


def batch_dir_setting(given: str, run_dir: Path) -> str:
    """``llm.batch_dir`` as stored: relative to the run directory when inside it (a moved run takes
    its rounds along), else absolute. ``given`` is relative to the working directory; "batch" (the
    default of a bare ``batch:``) means RUN_DIR/batch."""
    if given == "batch":
        return given
    path = Path(given).resolve()
    try:
        return str(path.relative_to(run_dir.resolve()))
    except ValueError:
        return str(path)


def print_round_steps(r, run_dir: Path) -> None:
    """What to do with a file round the run stopped at."""
    err_console.print(
        f"[bold]batch round {r.round_n}[/]: {r.count} requests in {r.requests} (OpenAI batch input format).\n"
        f"  1. Send them to the model: e.g. upload the file to the OpenAI Batch API (purpose batch, endpoint"
        f" /v1/chat/completions) and download the batch's output file; or any tool that answers each line's body.\n"
        f"  2. Put the replies, in the OpenAI batch output format (one line per custom_id), in {r.responses}\n"
        f"  3. Run: pike optimize --resume {run_dir}\n"
        f"(exit code {exit_codes.BATCH_ROUND}: the run waits for this round's replies)", highlight=False)


def print_table(doc: dict, title: str) -> None:
    """The final table; on a terminal too narrow for it (80 columns), one block per task instead, so
    that every figure stays whole. Then who won, the notes and the errors."""
    from rich.measure import Measurement

    from pike.report.tables import errors, final_table, geomean_line, table_notes, unusable_lines

    cols, rows = final_table(doc)
    t = Table(title=title)
    for col in cols:
        t.add_column(col, justify="left" if col == "task" else "right", no_wrap=True)
    for cells in rows:
        t.add_row(*(f"[red]{c}[/]" if c == "error" and i == 1 else c for i, c in enumerate(cells)))
    if Measurement.get(console, console.options.update_width(100_000), t).maximum <= console.width:
        console.print(t)
    else:
        console.print(f"[bold]{title}[/]", highlight=False)
        for cells in rows:
            block = Table(title=cells[0], title_justify="left", show_header=False, box=None, padding=(0, 2))
            block.add_column(style="dim")
            block.add_column(justify="right")
            for col, cell in zip(cols[1:], cells[1:]):
                if cell:
                    block.add_row(col, f"[red]{cell}[/]" if cell == "error" else cell)
            console.print(block)
    for line in winner_lines(doc):
        console.print(line, highlight=False)
    console.print(geomean_line(doc), highlight=False)
    for line in table_notes(doc) + unusable_lines(doc):
        console.print(line, highlight=False, markup=False)  # "[lo-hi]" is text, not markup
    for line in errors(doc):
        task, _, error = line.partition(": ")
        lines = error.strip().splitlines() or [""]
        if len(lines) > 1 and not common.DEBUG:  # an unexpected error carries its traceback: shown with --debug
            error = f"{lines[0]} (pike --debug ... shows the traceback)"
        console.print(Text.assemble((f"{task}:", "red"), " ", error), highlight=False)


def winner_lines(doc: dict) -> list[str]:
    """Per task, what best/<task>.py holds: the winning candidate by name, or the baseline that won."""
    out = []
    for r in doc["rows"]:
        if r["status"] == "error":
            continue
        sp = f", {r['speedup_eager']:.2f}x vs eager" if r.get("speedup_eager") else ""
        if r.get("winner"):
            out.append(f"{r['task']}: winner {r['winner']}{sp}")
        elif r.get("delivered", "eager") == "eager":
            out.append(f"{r['task']}: no candidate beat eager; best/{r['task']}.py is the task's own model")
        else:
            out.append(f"{r['task']}: winner the baseline {r['delivered']}{sp}")
    return out


@app.command("replay")
def replay_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    device: str = typer.Option("auto", help="Device to re-evaluate on: auto (the first CUDA device when there is one), cpu, cuda or cuda:N."),
    only_best: bool = typer.Option(False, help="Only each task's best solution."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as one JSON object."),
) -> None:
    """Re-evaluate a run's stored candidates on this hardware and print the same table."""
    from pike.commands.replay import replay

    if not (run_dir / "run.db").exists():
        fail(f"{run_dir}: not a run directory (no run.db)")
    device, _ = usable_device(device)
    doc = asyncio.run(replay(run_dir, device, only_best=only_best))
    if as_json:
        print(json.dumps(doc))
    else:
        print_table(doc, title=f"replay of {run_dir} on {device}")


@app.command("presets")
def presets_cmd(as_json: bool = typer.Option(False, "--json", help="Print the presets and their knobs as one JSON object.")) -> None:
    """The named strategy presets and their knobs."""
    from pike.config import PRESET_ALIASES, PRESET_NOTES, PRESETS, dotted

    if as_json:
        print(json.dumps({name: dotted(knobs) for name, knobs in PRESETS.items()}))
        return
    t = Table(title="strategy presets (any knob can be overridden: --set search.KEY=VALUE, e.g. search.pike_b.top_k=2)")
    t.add_column("preset")
    t.add_column("what")
    t.add_column("knobs (search.*)")
    for name, knobs in PRESETS.items():
        t.add_row(name, PRESET_NOTES.get(name, ""), ", ".join(f"{k}={v}" for k, v in dotted(knobs).items()))
    console.print(t)
    for old, new in PRESET_ALIASES.items():
        console.print(f"{old}: the same as {new} (an earlier name)", highlight=False)
