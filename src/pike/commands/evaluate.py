"""`pike eval` and `pike baseline`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from pike.commands import flags
from pike.commands.common import (STATUS_STYLE, console, err_console, fail, load_one_task, load_tasks, progress_bar, resolve_size,
                                 sandbox_text, usable_device)

app = typer.Typer()


EVAL_FLAGS = ["--device", "--size", "--timeout", "--trials", "--strict", "--allow-seeded-only", "--objective", "--start-method",
              "--sandbox", "--memory-limit-gb"]
BASELINE_FLAGS = ["--device", "--size", "--baseline-timeout"]
SET_HELP = "Any eval key: eval.key=value (repeatable), e.g. eval.keep_jobs=true, eval.trials=3 (README: Configuration)."


def eval_settings(given: dict, names: list[str], assignments: list[str]):
    """The eval section as the flags among ``names`` and ``--set`` make it (a flag wins over --set
    of its key), and the device it resolves to; one line and exit on a bad key or value."""
    from pike import config as cfgmod

    other = [a for a in assignments if not a.split("=", 1)[0].strip().startswith("eval.")]
    if other:
        fail(f"--set {other[0]}: this command takes eval.* keys only (the evaluator's settings)")
    from_flags, by_key = flags.assignments(given, names)
    try:
        cfg = cfgmod.apply_overrides(cfgmod.RunConfig(), list(assignments) + from_flags)
    except ValueError as e:
        fail(flags.explain(str(e), by_key))
    device, how = usable_device(cfg.eval.device)
    return cfg, device, how


@app.command("eval")
def eval_cmd(
    task: str = typer.Argument(..., help="Task file (or built-in task name)."),
    solution: Path = typer.Argument(..., help="Solution file defining ModelNew (or Model)."),
    device: Optional[str] = flags.option("--device"),
    size: Optional[str] = flags.option("--size"),
    timeout: Optional[float] = flags.option("--timeout"),
    trials: Optional[int] = flags.option("--trials"),
    strict: bool = flags.option("--strict"),
    allow_seeded_only: bool = flags.option("--allow-seeded-only"),
    no_time: bool = typer.Option(False, "--no-time", help="Check correctness only."),
    objective: Optional[str] = flags.option("--objective"),
    start_method: Optional[str] = flags.option("--start-method"),
    sandbox: Optional[str] = flags.option("--sandbox"),
    memory_limit_gb: Optional[float] = flags.option("--memory-limit-gb"),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Check a solution against its task and time it side by side with eager PyTorch (one process,
    A B A B ...): the speedup comes with its 95% interval."""
    from pike.evaluate.evaluator import EvalConfig, Evaluator
    from pike.task import TaskError

    settings, device, how = eval_settings(locals(), EVAL_FLAGS, set_)
    t = load_one_task(task, resolve_size(settings.eval.size, device))
    if how and not as_json:
        err_console.print(f"device: {device} ({how})", highlight=False)
    if not solution.is_file():
        fail(f"{solution}: no such file")
    source = solution.read_text()
    try:
        cfg = EvalConfig.from_settings(settings.eval, device, time=not no_time, seed=settings.seed)
    except ValueError as e:
        fail(str(e))
    confined = sandbox_text(cfg)
    try:
        with Evaluator(cfg) as ev:
            # Eager is timed in the same process as the candidate (paired), never read from a cache.
            result = ev.evaluate(t, source, paired=not no_time)
    except TaskError as e:
        fail(str(e), detail=e.detail)
    out = {"task": t.name, "size": t.size, "solution": str(solution), **result.to_json(), "sandbox": confined}
    if as_json:
        print(json.dumps(out))
    else:
        _print_verdict(out)
    raise typer.Exit(0 if result.ok else 1)



@app.command("baseline")
def baseline_cmd(
    target: str = typer.Argument(..., help="Task file, directory of tasks, built-in task name or 'builtin'."),
    modes: Optional[str] = typer.Option(None, help="Comma-separated: eager and compile modes (default: eager + every compile mode of the device)."),
    device: Optional[str] = flags.option("--device"),
    size: Optional[str] = flags.option("--size"),
    max_autotune: bool = typer.Option(False, help="Also torch.compile(mode='max-autotune') (slow to compile)."),
    interleaved: bool = typer.Option(True, help="Re-time the correct baselines A B A B ... in one process."),
    baseline_timeout: Optional[float] = flags.option("--baseline-timeout"),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    out: Optional[Path] = typer.Option(None, help="Write the results as JSON to this file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Time eager PyTorch and each torch.compile mode on tasks (cached per task, device and torch)."""
    import asyncio

    from pike.evaluate.baselines import compile_modes, measure_baselines
    from pike.evaluate.evaluator import EvalConfig
    from pike.evaluate.pool import EvalPool
    from pike.task import TaskError

    settings, device, how = eval_settings(locals(), BASELINE_FLAGS, set_)
    if how and not as_json:
        err_console.print(f"device: {device} ({how})", highlight=False)
    tasks = load_tasks(target, resolve_size(settings.eval.size, device))
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    mode_list = modes.split(",") if modes else ["eager", *compile_modes(dev_type, max_autotune)]
    try:
        cfg = EvalConfig.from_settings(settings.eval, device, timeout_s=settings.eval.baseline_timeout_s, seed=settings.seed)
    except ValueError as e:
        fail(str(e))
    rows: list[dict] = []

    async def run_all() -> None:
        with EvalPool(cfg) as pool:
            with progress_bar() as progress:
                bar = progress.add_task("baselines", total=len(tasks) * len(mode_list))
                for t in tasks:
                    if isinstance(t, TaskError):
                        rows.append({"task": Path(t.path).stem, "error": t.problem})
                        progress.advance(bar, len(mode_list))
                        continue
                    progress.update(bar, description=t.label)
                    try:
                        rows.append(await measure_baselines(pool, t, mode_list, interleaved=interleaved, on_mode=lambda m, r, t=t: _mode_done(progress, bar, t, m, r)))
                    except TaskError as e:
                        rows.append({"task": t.name, "error": e.problem})
                    if out:  # after every task, so that a long suite run that is cut short keeps its numbers
                        out.write_text(json.dumps({"device": device, "modes": mode_list, "tasks": rows}, indent=1))

    asyncio.run(run_all())
    doc = {"device": device, "modes": mode_list, "tasks": rows}
    if out:
        out.write_text(json.dumps(doc, indent=1))
    if as_json:
        print(json.dumps(doc))
    else:
        _print_baselines(doc)
        if out:
            console.print(f"written to {out}")



def _mode_done(progress, bar, task, mode, r) -> None:
    progress.advance(bar)
    if not err_console.is_terminal:  # logs and CI: one line per result instead of a live bar
        ms = f"{r.runtime_ms:.4f} ms" if r.runtime_ms else r.message[:120]
        err_console.print(f"{task.label} {mode}: {r.status} {ms} ({r.durations_s.get('total_s', 0):.1f} s)", highlight=False)


def _print_baselines(doc: dict) -> None:
    from rich.table import Table

    table = Table(title=f"baselines on {doc['device']} (ms; speedup vs eager)")
    table.add_column("task")
    for m in doc["modes"]:
        table.add_column(m, justify="right")
    for row in doc["tasks"]:
        if "error" in row:
            table.add_row(row["task"], *["[red]task error[/]"] + [""] * (len(doc["modes"]) - 1))
            continue
        cells = []
        for m in doc["modes"]:
            r = row["modes"].get(m, {})
            if r.get("status") != "ok":
                cells.append(f"[red]{r.get('status', '-')}[/]")
                continue
            ms = r.get("interleaved_ms", r["runtime_ms"])
            sp = r.get("interleaved_speedup", r.get("speedup_vs_eager"))
            cells.append(f"{ms:.4f}" + (f" ({sp:.2f}x)" if sp and m != "eager" else ""))
        table.add_row(row["task"] + (f" \\[{row['size']}]" if row.get("size") else ""), *cells)
    console.print(table)
    for row in doc["tasks"]:
        if "error" in row:
            console.print(f"[red]{row['task']}:[/] {row['error']}", highlight=False)
        else:
            for m, r in row["modes"].items():
                if r.get("status") != "ok":
                    console.print(f"[red]{row['task']} {m}:[/] {r.get('message', '')[:300]}", highlight=False)


def _print_verdict(r: dict) -> None:
    from pike.evaluate.stats import NOISY_SPREAD, Interval

    style = STATUS_STYLE.get(r["status"], "bold")
    size = f" \\[{r['size']}]" if r["size"] else ""
    console.print(f"[{style}]{r['status'].upper()}[/]  {r['task']}{size} on {r['device']}: {r['message']}", highlight=False)
    if r.get("runtime_ms") is not None:
        t = r["timing"]
        latency = f"latency {t['median_ms']:.4f} ms (IQR {t['iqr_ms']:.4f}, {t['runs']} runs)"
        b2b = f"back to back {t['throughput_ms']:.4f} ms per call" if t.get("throughput_ms") else ""
        line = "  " + "; ".join(p for p in ((b2b, latency) if t["objective"] == "throughput" else (latency, b2b)) if p)
        ci = r.get("speedup_interval")
        if r.get("eager_ms"):
            line += f"; eager {r['eager_ms']:.4f} ms; speedup {r['speedup_vs_eager']:.2f}x"
            if ci:
                line += f" [{ci['lo']:.2f}-{ci['hi']:.2f}] (95% interval, {ci['n']} rounds side by side with eager)"
                if Interval.from_json(ci).noisy(NOISY_SPREAD):
                    line += f"; noisy: the interval spans {Interval.from_json(ci).spread:.0%} of the speedup"
            else:
                line += " (not timed side by side with eager)"
        console.print(line, highlight=False)
    if r.get("max_abs_err") is not None:
        console.print(f"  max abs error {r['max_abs_err']:.3g}, max rel error {r['max_rel_err']:.3g} over {r['trials']} trials")
    if r.get("tags"):
        console.print(f"  tags: {', '.join(r['tags'])}")
    if r.get("state_dict_compatible") is not None:
        console.print(f"  state-dict compatible: {'yes' if r['state_dict_compatible'] else 'no'}")
    if r.get("task_flags"):
        console.print(f"  task flags: {', '.join(r['task_flags'])}")
    console.print(f"  sandbox: {r['sandbox']}", highlight=False)
    if r["status"] != "ok" and r.get("feedback"):
        console.print("  [dim]" + r["feedback"].strip()[-1500:].replace("[", "\\[") + "[/]")
