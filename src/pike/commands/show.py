"""`pike show`: a run in the terminal: its final table, every candidate, each task's lineage tree and
the LLM exchanges; or one candidate (verdict, diff against the candidate it came from, code) or one
exchange (prompt, reply, code, verdict) in full. Reads the store without writing it."""

from __future__ import annotations

import json
import sqlite3
import traceback
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

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
    for col in ("id", "task", "role", "phase/branch", "status", "candidate", "speedup", "tokens in/out", "cost $", "latency s", "note"):
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
    head = f"exchange #{e.id} · task {e.task or '-'} · {e.role} · phase/branch {e.where()} · {e.status}"
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


def _load_candidates(run_dir: Path):
    from pike.report import candidates

    try:
        return candidates.load(run_dir)
    except sqlite3.Error as e:
        fail(f"{run_dir}: cannot read the run's store ({e})", detail=traceback.format_exc())


def _final_table(run_dir: Path) -> None:
    from pike.commands.search import print_table
    from pike.search.output import summary
    from pike.store import Store

    store = Store(run_dir / "run.db", readonly=True)
    try:
        doc = summary(store)
        strategy = ((store.get_meta("config") or {}).get("search") or {}).get("strategy")
    finally:
        store.close()
    if doc["rows"]:
        print_table(doc, title=f"final table ({strategy})" if strategy else "final table")


def _candidates_table(t) -> Table:
    table = Table(title=f"{t.name}: {len(t.rows)} candidate{'s' if len(t.rows) != 1 else ''} (★ delivered)", title_justify="left")
    for col, right in (("id", True), ("origin", False), ("from", True), ("status", False), ("ms ± IQR/2", True),
                       ("vs eager", True), ("beside eager [95%]", True), ("idea · tags", False), ("message", False)):
        table.add_column(col, justify="right" if right else "left", overflow="fold")
    for c in t.rows:
        note = " · ".join(x for x in (c.idea or "", ", ".join(c.tags)) if x)
        table.add_row(Text(f"#{c.id}" + (" ★" if c.id == t.best_id else "")), Text(c.origin), Text(c.base_label()),
                      Text(c.status, style=STATUS_STYLE.get(c.status, "")), Text(c.time_text()), Text(c.speedup_text()), Text(c.interval_text()),
                      Text(note), Text(c.message))
    return table


def _tree(t) -> Tree:
    ids = t.by_id()
    root = Tree(Text(f"{t.name}: the task", style="bold"))

    def label(c) -> Text:
        sp = f" {c.speedup:.2f}x" if c.speedup else ""
        text = Text(f"#{c.id} {c.origin} ")
        text.append(c.status + sp, style=STATUS_STYLE.get(c.status, ""))
        text.append((f" · {c.idea}" if c.idea else "") + (" ★" if c.id == t.best_id else ""))
        return text

    stack = [(root, c) for c in reversed(t.roots())]
    seen: set[int] = set()
    while stack:  # iterative: a long chain of fixes is deeper than Python's recursion allows
        parent, c = stack.pop()
        if c.id in seen:
            continue
        seen.add(c.id)
        node = parent.add(label(c))
        stack += [(node, ids[k]) for k in reversed(c.children) if k in ids]
    return root


def _print_candidate(c) -> None:
    head = f"candidate #{c.id} · task {c.task} · {c.origin}" + (f" · idea {c.idea}" if c.idea else "")
    console.print(f"[bold]{_plain(head)}[/]", highlight=False)
    base = "the task's source" if c.base is None else f"#{c.base}" + (" (it fixes it)" if c.fix_of is not None else "")
    lines = [f"{c.status}: {c.message}" if c.message else c.status,
             f"time {c.time_text()} ms · vs eager {c.speedup_text()} (search)"
             + (f" · re-timed beside eager {c.interval_text()}" if c.interval else "") + (f" · tags {', '.join(c.tags)}" if c.tags else ""),
             f"made from {base} · led to {', '.join(f'#{k}' for k in c.children) or 'none'}"]
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    _section(f"diff against {'the task source' if c.base is None else f'#{c.base}'}", c.diff or "(identical)")
    _section("code", c.code)


@app.command("show")
def show_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory (the one holding run.db)."),
    task: list[str] = typer.Option([], "--task", help="Only this task's exchanges (repeatable)."),
    role: list[str] = typer.Option([], "--role", help="Only these roles: coa, efa, iba (repeatable or a comma list)."),
    exchange: Optional[int] = typer.Option(None, "--exchange", help="Print this exchange in full: prompt, reply, code and verdict."),
    candidate: Optional[int] = typer.Option(None, "--candidate", help="Print this candidate in full: verdict, diff against the candidate it came from, code."),
    as_json: bool = typer.Option(False, "--json", help="Machine output: the selected exchanges (prompts and replies included), or the --candidate."),
) -> None:
    """A run in the terminal: the final table, every candidate (time, interval, status, message, tags,
    the candidate it came from), each task's lineage tree and every LLM exchange (role, phase/branch,
    verdict, tokens, cost, why a reply held no code); --role/--exchange show the exchanges only.
    Reads the store without writing it; `pike report RUN --html FILE` writes the same as one page."""
    from pike.report.exchanges import select

    roles = _roles(role)
    names, every = _load(run_dir)
    unknown = [t for t in task if t not in names]
    if unknown:
        fail(f"no task {', '.join(unknown)} in {run_dir}; its tasks: {', '.join(names) or '(none)'}")
    if candidate is not None:
        found = [c for t in _load_candidates(run_dir) for c in t.rows if c.id == candidate]
        if not found:
            fail(f"no candidate {candidate} in {run_dir} (`pike show {run_dir}` lists them)")
        if as_json:
            print(json.dumps(found[0].to_json(), indent=2))
        else:
            _print_candidate(found[0])
        return
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
    if not roles:
        _final_table(run_dir)
        for t in _load_candidates(run_dir):
            if task and t.name not in task:
                continue
            console.print(_candidates_table(t))
            console.print(_tree(t))
        console.print(f"`pike show {run_dir} --candidate ID` prints one candidate in full.", markup=False, highlight=False)
    if not every:
        console.print(f"{run_dir}: no LLM exchanges (an offline run)", highlight=False)
        return
    console.print(_table(selected, f"exchanges of {run_dir}"))
    usd = sum(e.cost_usd for e in selected)
    tin, tout = sum(e.input_tokens for e in selected), sum(e.output_tokens for e in selected)
    console.print(f"{len(selected)} of {len(every)} exchanges; tokens {tin} in / {tout} out; ${_money(usd)}."
                  f" `pike show {run_dir} --exchange ID` prints one in full.", markup=False, highlight=False)
