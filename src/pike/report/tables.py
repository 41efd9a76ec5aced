"""The report's tables as plain cells (strings), shared by the terminal, Markdown and HTML outputs.

:func:`final_table` is the per-task table of ``pike optimize`` (same columns and formats as
:func:`pike.commands.search.print_table`), built from :func:`pike.search.output.summary`.
"""

from __future__ import annotations

from pike.report.curves import ConfigGroup, config_summary
from pike.report.data import RunData


def _f(v, fmt: str) -> str:
    return fmt.format(v) if v is not None else "-"


def _sp(v, ci) -> str:
    """A speedup and, where it was re-timed side by side, its 95% interval."""
    if v is None:
        return "-"
    return f"{v:.2f}x" + (f" [{ci[0]:.2f}-{ci[1]:.2f}]" if ci else "")


def delivered_label(r: dict) -> str:
    """What ``best/`` holds, where it is not a solution of the search."""
    if not r["fallback"]:
        return ""
    return " (fallback: eager)" if r.get("delivered", "eager") == "eager" else f" (baseline won: {r['delivered']})"


def final_table(doc: dict) -> tuple[list[str], list[list[str]]]:
    llm = any(r["queries"] for r in doc["rows"])
    cols = ["task", "eager ms", "compile ms", "best ms", "vs eager", "vs compile", "vs best compile"]
    if llm:
        cols += ["candidates/queries", "USD", "valid", "fixed/fixes"]
    rows = []
    for r in doc["rows"]:
        if r["status"] == "error":
            rows.append([r["task"], "error", *[""] * (len(cols) - 2)])
            continue
        cells = [
            r["task"] + delivered_label(r) + (" (noisy)" if r.get("noisy") else ""),
            _f(r["eager_ms"], "{:.4f}"), _f(r["compile_ms"], "{:.4f}"), _f(r["best_ms"], "{:.4f}"),
            _sp(r["speedup_eager"], r.get("speedup_eager_ci")), _sp(r["speedup_compile"], r.get("speedup_compile_ci")),
            _sp(r["speedup_best_compile"], r.get("speedup_best_compile_ci")) + (f" ({r['best_compile_mode']})" if r.get("best_compile_mode") else ""),
        ]
        if llm:
            cells += [f"{r.get('candidates', '-')}/{r['queries']}", f"{r['usd']:.3f}", _f(r["valid_rate"], "{:.0%}"),
                      f"{r['chains_fixed']}/{r['fix_attempts']}"]
        rows.append(cells)
    return cols, rows


def unusable_lines(doc: dict) -> list[str]:
    """Per task whose LLM replies were not all usable: "N candidates from M queries" and why."""
    out = []
    for r in doc["rows"]:
        if r.get("unusable"):
            why = ", ".join(f"{reason} ({n})" for reason, n in r["unusable_reasons"].items())
            out.append(f"{r['task']}: {r['candidates']} candidates from {r['queries']} queries; "
                       f"{r['unusable']} replies had no usable code: {why}")
    return out


def table_notes(doc: dict) -> list[str]:
    """Below the table: what the intervals are, and which figures stayed noisy (with their spread)."""
    out = []
    if any(r.get("speedup_eager_ci") for r in doc["rows"]):
        out.append("[lo-hi]: 95% interval of the speedup, paired bootstrap over the rounds of the final re-timing "
                   "(eager, compile modes and the best, A B A B ... in one process).")
    objective = {r.get("objective", "latency") for r in doc["rows"]}
    out.append(f"Figures: {' and '.join(sorted(objective))} (latency: one forward from an idle queue; throughput: "
               "back-to-back calls, one sync, do_bench style).")
    for r in doc["rows"]:
        b2b = r.get("throughput_ms") or {}
        if b2b:
            out.append(f"{r['task']}: back to back, ms per call: " + ", ".join(f"{k} {v:.4f}" for k, v in b2b.items()) + ".")
    for r in doc["rows"]:
        if r.get("noisy"):
            spread = ", ".join(f"{k} {v:.0%}" for k, v in (r.get("spread") or {}).items())
            out.append(f"{r['task']}: noisy, the interval vs {', '.join(r['noisy'])} stayed wide (IQR/median: {spread}).")
    return out


def geomean_line(doc: dict) -> str:
    g = doc
    llm = any(r["queries"] for r in doc["rows"])
    parts = [f"geomean vs eager {g['geomean_eager']:.2f}x" if g.get("geomean_eager") else None,
             f"(clamped at 1: {g['geomean_eager_clamped']:.2f}x)" if g.get("geomean_eager_clamped") else None,
             f"vs compile {g['geomean_compile']:.2f}x" if g.get("geomean_compile") else None,
             f"vs best compile mode {g['geomean_best_compile']:.2f}x" if g.get("geomean_best_compile") else None,
             f"{g['queries']} queries, ${g['usd']:.3f}" if llm else None]
    return "  ".join(p for p in parts if p)


def errors(doc: dict) -> list[str]:
    return [f"{r['task']}: {r['error']}" for r in doc["rows"] if r["status"] == "error"]


def _x(mean_lo_hi) -> str:
    m, lo, hi = mean_lo_hi
    if m is None:
        return "-"
    return f"{m:.2f}x" + (f" [{lo:.2f}-{hi:.2f}]" if lo is not None else "")


def config_table(groups: list[ConfigGroup]) -> tuple[list[str], list[list[str]]]:
    """One line per configuration: means over seeds, [5-95% bootstrap interval] when several."""
    cols = ["config", "seeds", "tasks", "vs eager", "clamped", "vs compile", "vs best compile",
            "search", "search fp32", "queries", "USD", "valid", "LLM valid", "fixed/tried"]
    rows = []
    for g in groups:
        s = config_summary(g)
        rows.append([
            s["config"], ", ".join(str(x) for x in s["seeds"]), str(s["tasks"]),
            _x(s["geomean_eager"]), _x(s["geomean_eager_clamped"]), _x(s["geomean_compile"]), _x(s["geomean_best_compile"]),
            _x(s["search_geomean"]), _x(s["search_geomean_same_precision"]),
            f"{s['queries']:.0f}", f"{s['usd']:.3f}", _f(s["valid_rate"], "{:.0%}"), _f(s["llm_valid_rate"], "{:.0%}"),
            f"{s['chains_fixed']}/{s['chains_tried']}" + (f", {s['failed_chains'] - s['chains_tried']} untried" if s["failed_chains"] > s["chains_tried"] else ""),
        ])
    return cols, rows


CONFIG_NOTES = (
    "Geomeans over tasks of the final table's speedups (re-timed interleaved; a task without a correct "
    "solution counts as 1.0; \"clamped\": each task at least 1.0, as in the paper). Several seeds: mean over "
    "seeds, [5-95% bootstrap interval over seeds]. \"search\": geomean of each task's best confirmed speedup "
    "vs eager at the end of the budget (side-by-side re-timings where there were some, else search timings, "
    "never above the final table's figure); \"search fp32\": the same among solutions that do "
    "not lower precision. Queries and USD: per run (mean over seeds). Valid: correct / evaluated candidates. "
    "Fixed/tried: failed candidates that the error-fixing agent repaired, of those it tried (untried: "
    "failed candidates that got no fix attempt)."
)


def lineage_text(run: RunData) -> list[tuple[str, str]]:
    """(task, "best <- ... <- reference") per task."""
    return [(t.name, "  <-  ".join(s.text() for s in t.lineage)) for t in run.tasks]


def runs_table(runs: list[RunData]) -> tuple[list[str], list[list[str]]]:
    cols = ["run", "directory", "strategy", "seed", "model", "device", "tasks"]
    rows = [[r.label, str(r.path), r.strategy, str(r.seed), str((r.config.get("llm") or {}).get("model") or "-"),
             str(r.device or (r.config.get("eval") or {}).get("device") or "-"), str(len(r.tasks))] for r in runs]
    return cols, rows
