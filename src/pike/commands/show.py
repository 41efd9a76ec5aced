"""`pike show`: what the model saw in a run: every LLM exchange, or one in full."""

from __future__ import annotations

import json
import sqlite3
import traceback
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from pike.commands.common import STATUS_STYLE, console, fail

app = typer.Typer()


def _roles(values: list[str]) -> list[str]:
    from pike.report.exchanges import ROLES

    roles = [r.strip().lower() for v in values for r in v.split(",") if r.strip()]
    bad = [r for r in roles if r not in ROLES]
    if bad:
        fail(f"unknown role {', '.join(bad)}: choose from {', '.join(ROLES)}")
    return roles


def _load(run_dir: Path):
    from pike.report import exchanges

    if not run_dir.exists():
        fail(f"{run_dir}: no such directory")
    db = exchanges.store_path(run_dir)
    if not db.is_file():
        fail(f"{run_dir}: not a run directory (no run.db)")
    try:
        return exchanges.load(db)
    except sqlite3.Error as e:
        fail(f"{db}: cannot read the run's store ({e})", detail=traceback.format_exc())


def _money(usd: float) -> str:
    return f"{usd:.4f}"


def _table(selected: list, title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("id", "task", "role", "phase/slot", "status", "candidate", "speedup", "tokens in/out", "cost $", "latency s", "note"):
        t.add_column(col, justify="right" if col in ("id", "speedup", "tokens in/out", "cost $", "latency s") else "left")
    for e in selected:
        c = e.candidate
        cells = [str(e.id), e.task or "-", e.role, e.where(), e.status, e.verdict(), e.speedup(),
                 f"{e.input_tokens}/{e.output_tokens}", _money(e.cost_usd),
                 f"{e.latency_s:.1f}" if e.latency_s is not None else "", e.note()]
        styles = {5: STATUS_STYLE.get(c.status, "") if c else "", 10: "yellow" if e.unusable or e.error else ""}
        t.add_row(*(Text(v, style=styles.get(i, "")) for i, v in enumerate(cells)))  # Text: no markup in names
    return t


def _plain(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _section(title: str, text: str | None) -> None:
    console.rule(f"[bold]{_plain(title)}[/]", align="left")
    console.print(text if text else "(empty)", markup=False, highlight=False, soft_wrap=True)


def _print_full(e) -> None:
    head = f"exchange #{e.id} · task {e.task or '-'} · {e.role} · phase/slot {e.where()} · {e.status}"
    console.print(f"[bold]{_plain(head)}[/]", highlight=False)
    latency = f"{e.latency_s:.1f} s" if e.latency_s is not None else "-"
    console.print(f"model {e.model} · tokens {e.input_tokens} in / {e.output_tokens} out · ${_money(e.cost_usd)}"
                  f" · latency {latency} · attempts {e.attempts if e.attempts is not None else '-'}",
                  markup=False, highlight=False, soft_wrap=True)
    if e.note():
        console.print(e.note(), markup=False, highlight=False, soft_wrap=True)
    for m in e.prompt:
        _section(f"prompt: {m.get('role', '?')}", str(m.get("content", "")))
    _section("reply", e.response)
    c = e.candidate
    if c is None:
        why = f"no code: {e.unusable}" if e.unusable else "no candidate from this exchange"
        console.rule("[bold]code[/]", align="left")
        console.print(why, markup=False, highlight=False)
        return
    _section(f"code: candidate #{c.id} ({c.origin})", c.code)
    console.rule("[bold]verdict[/]", align="left")
    console.print(c.verdict(), style=STATUS_STYLE.get(c.status, ""), markup=False, highlight=False, soft_wrap=True)


@app.command("show")
def show_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory (the one holding run.db)."),
    task: list[str] = typer.Option([], "--task", help="Only this task's exchanges (repeatable)."),
    role: list[str] = typer.Option([], "--role", help="Only these roles: coa, efa, iba (repeatable or a comma list)."),
    exchange: Optional[int] = typer.Option(None, "--exchange", help="Print this exchange in full: prompt, reply, code and verdict."),
    as_json: bool = typer.Option(False, "--json", help="Machine output of the same selection, prompts and replies included."),
) -> None:
    """What the model saw: every LLM exchange of a run (role, phase/slot, the candidate's verdict,
    tokens, cost, why a reply held no code), or one in full. Reads the store without writing it."""
    from pike.report.exchanges import select

    roles = _roles(role)
    names, every = _load(run_dir)
    unknown = [t for t in task if t not in names]
    if unknown:
        fail(f"no task {', '.join(unknown)} in {run_dir}; its tasks: {', '.join(names) or '(none)'}")
    selected = select(every, task, roles)
    if exchange is not None:
        if not any(e.id == exchange for e in every):
            span = f"ids {every[0].id}-{every[-1].id}" if every else "it has none"
            fail(f"no exchange {exchange} in {run_dir} ({span})")
        one = [e for e in selected if e.id == exchange]
        if not one:
            fail(f"exchange {exchange} is not among those --task/--role select")
        if as_json:
            print(json.dumps(one[0].to_json(), indent=2))
        else:
            _print_full(one[0])
        return
    if as_json:
        print(json.dumps([e.to_json() for e in selected], indent=2))
        return
    if not every:
        console.print(f"{run_dir}: no LLM exchanges (an offline run)", highlight=False)
        return
    console.print(_table(selected, f"exchanges of {run_dir}"))
    usd = sum(e.cost_usd for e in selected)
    tin, tout = sum(e.input_tokens for e in selected), sum(e.output_tokens for e in selected)
    console.print(f"{len(selected)} of {len(every)} exchanges; tokens {tin} in / {tout} out; ${_money(usd)}."
                  f" `pike show {run_dir} --exchange ID` prints one in full.", markup=False, highlight=False)
