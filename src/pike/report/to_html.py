"""The report as one self-contained HTML page: figures as base64 data URIs, inline CSS, tables as
HTML, diffs in <pre>, the LLM exchanges with an inline script to filter them; no external asset,
script or link."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from pike.report import exchange_html, tables
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


def render(report: Report) -> str:
    p = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>PIKE report</title>',
         f"<style>{CSS}{exchange_html.CSS}</style></head><body>", "<h1>PIKE report</h1>"]
    p += ["<h2>Runs</h2>", html_table(*tables.runs_table(report.runs))]
    p += ["<h2>Summary by configuration</h2>", html_table(*tables.config_table(report.groups)),
          f'<p class="note">{escape(tables.CONFIG_NOTES)}</p>']
    for name, data in report.plots().items():
        uri = "data:image/png;base64," + base64.b64encode(data).decode()
        p += [f"<h2>{escape(PLOT_TITLES[name])}</h2>", f'<img alt="{escape(PLOT_TITLES[name])}" src="{uri}">']
    for run in report.runs:
        doc = run.summary
        p += [f"<h2>Run: {escape(run.label)}</h2>",
              f'<p class="note">Directory {escape(str(run.path))}, strategy {escape(run.strategy)}, seed {escape(str(run.seed))}.</p>',
              "<h3>Per-task results</h3>", html_table(*tables.final_table(doc)), f"<p>{escape(tables.geomean_line(doc))}</p>",
              *[f"<p>{escape(line)}</p>" for line in tables.table_notes(doc)]]
        p += [f'<p class="del">{escape(e)}</p>' for e in tables.errors(doc)]
        p += ["<h3>Lineage of the best solutions</h3>", '<p class="note">From each task\'s best solution back to the reference (search timings).</p>', "<ul>"]
        p += [f"<li><b>{escape(task)}</b>: {escape(text)}</li>" for task, text in tables.lineage_text(run)]
        p += ["</ul>", "<h3>Best solutions against the reference</h3>"]
        for t in run.tasks:
            p += [f"<h4>{escape(t.name)}</h4>",
                  diff_pre(t.diff) if t.diff else "<p>No solution beat eager: the best is the reference itself.</p>"]
    p += [exchange_html.section(report.runs), "</body></html>"]
    return "\n".join(p) + "\n"


def write(report: Report, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(report))
    return path
