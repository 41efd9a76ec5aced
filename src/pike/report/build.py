"""A report over one or more runs: load, group into configurations, draw the figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pike.report.curves import ConfigGroup, group_runs
from pike.report.data import RunData, load_run


@dataclass
class Report:
    runs: list[RunData]
    groups: list[ConfigGroup]

    @property
    def has_llm(self) -> bool:
        return any(r.summary["queries"] for r in self.runs)

    def plots(self) -> dict[str, bytes]:
        """Figure name -> PNG. The curves over queries and dollars, the fix histogram and the step
        granularity only where an LLM ran (an offline run spends neither)."""
        from pike.report.plots import PLOTS

        names = ["speedup_vs_time", "valid_rate"]
        if self.has_llm:
            names = ["speedup_vs_queries", "speedup_vs_usd", "speedup_vs_time", "valid_rate", "fix_histogram", "step_granularity"]
        return {n: PLOTS[n](self.groups) for n in names}


PLOT_TITLES = {
    "speedup_vs_queries": "Geomean speedup vs queries",
    "speedup_vs_usd": "Geomean speedup vs cost",
    "speedup_vs_time": "Geomean speedup vs wall time",
    "valid_rate": "Valid-solution rate",
    "fix_histogram": "Fix success",
    "step_granularity": "Step granularity",
}


def load_report(run_dirs: list[str | Path]) -> Report:
    runs = [load_run(d) for d in run_dirs]
    return Report(runs, group_runs(runs))
