"""The report as plain Markdown (no HTML, no collapsible blocks); figures are PNG files written next
to the Markdown file and linked by relative path."""

from __future__ import annotations

from pathlib import Path

from pike.report import tables
from pike.report.build import PLOT_TITLES, Report


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(cols: list[str], rows: list[list[str]]) -> str:
    right = [c != cols[0] for c in cols]
    out = ["| " + " | ".join(_cell(c) for c in cols) + " |",
           "|" + "|".join("---:" if r else ":---" for r in right) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _fence(text: str, lang: str) -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}{lang}\n{text.rstrip(chr(10))}\n{ticks}"


def render(report: Report, md_path: Path) -> str:
    """Writes the figures next to ``md_path`` (``<stem>_<figure>.png``) and returns the Markdown."""
    md_path = Path(md_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    out = ["# PIKE report", ""]
    out += ["## Runs", "", md_table(*tables.runs_table(report.runs)), ""]
    out += ["## Summary by configuration", "", md_table(*tables.config_table(report.groups)), "", tables.CONFIG_NOTES, ""]
    for name, data in report.plots().items():
        fname = f"{md_path.stem}_{name}.png"
        (md_path.parent / fname).write_bytes(data)
        out += [f"## {PLOT_TITLES[name]}", "", f"![{PLOT_TITLES[name]}]({fname})", ""]
    for run in report.runs:
        doc = run.summary
        out += [f"## Run: {run.label}", "", f"Directory `{run.path}`, strategy {run.strategy}, seed {run.seed}.", ""]
        out += ["### Per-task results", "", md_table(*tables.final_table(doc)), "", tables.geomean_line(doc), "",
                *[line + "  " for line in tables.table_notes(doc)], ""]
        out += [f"- {e}" for e in tables.errors(doc)]
        out += ["### Lineage of the best solutions", "",
                "From each task's best solution back to the reference (search timings; fixes are followed "
                "through the candidates they repaired).", ""]
        out += [f"- **{task}**: {text}" for task, text in tables.lineage_text(run)]
        out += ["", "### Best solutions against the reference", ""]
        for t in run.tasks:
            out += [f"#### {t.name}", ""]
            out += [_fence(t.diff, "diff") if t.diff else "No solution beat eager: the best is the reference itself.", ""]
    return "\n".join(out).rstrip() + "\n"


def write(report: Report, md_path: Path) -> Path:
    md_path = Path(md_path)
    md_path.write_text(render(report, md_path))
    return md_path
