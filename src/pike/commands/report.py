"""`pike report`: tables and figures over one or more run directories."""

from __future__ import annotations

import sqlite3
import traceback
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from pike.commands.common import console, fail, writable_file

app = typer.Typer()


def _rich(cols: list[str], rows: list[list[str]], title: str) -> Table:
    t = Table(title=title)
    for c in cols:
        t.add_column(c, justify="left" if c == cols[0] else "right")
    for row in rows:
        t.add_row(*row)
    return t


@app.command("report")
def report_cmd(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories; several = several configurations (runs differing only in seed are grouped)."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write one self-contained HTML page (figures embedded, no server or network needed)."),
    md: Optional[Path] = typer.Option(None, "--md", help="Write Markdown; the figures go next to it as PNG files."),
) -> None:
    """The paper's figures and tables for runs: geomean best-so-far speedup vs queries, dollars and wall
    time, valid-solution rate, fix success, the final table; with --html, one offline page that also
    browses every candidate (sortable, filterable), each task's lineage tree, every candidate's code
    and diff against its parent, and the LLM exchanges. Reads the stores without writing them."""
    from pike.commands.search import print_table
    from pike.report import tables, to_html, to_markdown
    from pike.report.build import load_report

    for d in run_dirs:
        if not (d / "run.db").exists():
            fail(f"{d}: not a run directory (no run.db)")
    for path, flag in ((html, "--html"), (md, "--md")):
        if path:
            writable_file(path, flag)
    try:
        report = load_report(run_dirs)
    except sqlite3.Error as e:
        fail(f"cannot read a run's store ({e}): is every directory a run directory?", detail=traceback.format_exc())
    if md:
        to_markdown.write(report, md)
        console.print(f"markdown: {md}", highlight=False)
    if html:
        to_html.write(report, html)
        console.print(f"html: {html}", highlight=False)
    if md or html:
        return
    console.print(_rich(*tables.runs_table(report.runs), title="runs"))
    console.print(_rich(*tables.config_table(report.groups), title="by configuration"))
    console.print(tables.CONFIG_NOTES, style="dim", highlight=False)
    for run in report.runs:
        print_table(run.summary, title=f"{run.label} ({run.path})")
        for task, text in tables.lineage_text(run):
            console.print(f"  [bold]{task}[/]: {text}", highlight=False)
