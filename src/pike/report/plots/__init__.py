"""One module per figure; each ``plot(...)`` returns a PNG as bytes (matplotlib's Agg canvas, no
display, no pyplot state)."""

from pike.report.plots import fix_histogram, speedup_vs_queries, speedup_vs_time, speedup_vs_usd, step_granularity, valid_rate

PLOTS = {
    "speedup_vs_queries": speedup_vs_queries.plot,
    "speedup_vs_usd": speedup_vs_usd.plot,
    "speedup_vs_time": speedup_vs_time.plot,
    "valid_rate": valid_rate.plot,
    "fix_histogram": fix_histogram.plot,
    "step_granularity": step_granularity.plot,
}

__all__ = ["PLOTS"]
