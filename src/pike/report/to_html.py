"""The report as one self-contained HTML page: figures as base64 data URIs, inline CSS, tables as
HTML, the run viewer (:mod:`pike.report.viewer_html`: candidates, lineage trees, code and diffs) and
the LLM exchanges, with inline scripts to sort and filter; no external asset, script or link, so the
file opens offline."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from pike.report import candidates, exchange_html, tables, viewer_html
from pike.report.build import PLOT_TITLES, Report

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.6em; overflow-x: auto; font-size: 0.82em; }
.add { color: #116611; } .del { color: #aa1111; } .hunk { color: #555588; }
.note { color: #555; font-size: 0.9em; }
img { max-width: 100%; border: 1px solid #eee; }
nav { font-size: 0.9em; margin-bottom: 1em; } nav a { margin-right: 1em; }
"""


def html_table(cols: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def diff_pre(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        cls = ("hunk" if line.startswith("@@") else "add" if line.startswith("+") and not line.startswith("+++")
               else "del" if line.startswith("-") and not line.startswith("---") else None)
        lines.append(f'<span class="{cls}">{escape(line)}</span>' if cls else escape(line))
    return "<pre>" + "\n".join(lines) + "</pre>"


def _pre(text: str) -> str:
    return f"<pre>{escape(text)}</pre>"


def render(report: Report) -> str:
    loaded = [candidates.load(run.path) for run in report.runs]
    p = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>PIKE report</title>',
         f"<style>{CSS}{exchange_html.CSS}{viewer_html.CSS}</style></head><body>", "<h1>PIKE report</h1>"]
    nav = [("runs", "Runs"), ("curves", "Curves")]
    nav += [(f"run-{i}", f"Run: {run.label}") for i, run in enumerate(report.runs)]
    if report.has_llm:
        nav.append(("exchanges", "LLM exchanges"))
    p.append("<nav>" + "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t in nav) + "</nav>")
    p += ['<h2 id="runs">Runs</h2>', html_table(*tables.runs_table(report.runs))]
    p += ["<h2>Summary by configuration</h2>", html_table(*tables.config_table(report.groups)),
          f'<p class="note">{escape(tables.CONFIG_NOTES)}</p>']
    p += ['<h2 id="curves">Curves</h2>', f'<p class="note">{escape(CURVE_NOTE)}</p>']
    for name, data in report.plots().items():
        uri = "data:image/png;base64," + base64.b64encode(data).decode()
        p += [f"<h3>{escape(PLOT_TITLES[name])}</h3>", f'<img alt="{escape(PLOT_TITLES[name])}" src="{uri}">']
    for i, (run, tasks) in enumerate(zip(report.runs, loaded)):
        doc = run.summary
        p += [f'<h2 id="run-{i}">Run: {escape(run.label)}</h2>',
              f'<p class="note">Directory {escape(str(run.path))}, strategy {escape(run.strategy)}, seed {escape(str(run.seed))}.</p>',
              "<h3>Final table</h3>", html_table(*tables.final_table(doc)), f"<p>{escape(tables.geomean_line(doc))}</p>",
              *[f"<p>{escape(line)}</p>" for line in tables.table_notes(doc)]]
        p += [f'<p class="del">{escape(e)}</p>' for e in tables.errors(doc)]
        p += ["<h3>Candidates</h3>",
              '<p class="note">Every candidate of the run: search timing (median ms, half its interquartile range) and '
              "its speedup vs eager; where it was re-timed side by side with eager, that speedup and its 95% interval; "
              "the evaluator's message. "
              "Click a heading to sort, a row to open the candidate; ★ marks each task's delivered best.</p>",
              viewer_html.candidates_table(i, tasks)]
        p += ["<h3>Lineage</h3>", '<p class="note">Each candidate under the one it was made from (an error fix under '
              "the candidate it repairs); the path to the best is open.</p>"]
        p += [viewer_html.lineage_tree(i, t) for t in tasks]
        p += [viewer_html.panel(i, c, _pre, diff_pre) for t in tasks for c in t.rows]
    p += [exchange_html.section(report.runs), f"<script>{viewer_html.SCRIPT}</script>", "</body></html>"]
    return "\n".join(p) + "\n"


CURVE_NOTE = ("Geomean over tasks of each task's best confirmed speedup vs eager so far (side-by-side re-timings "
              "where there were some, never above the final table's figure), each task at least 1.0: eager is "
              "always there to fall back on, so a curve never goes down. Several seeds of one configuration: "
              "their mean, with a 5-95% bootstrap band; runs that repeat a seed are drawn separately.")


def write(report: Report, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(report))
    return path
