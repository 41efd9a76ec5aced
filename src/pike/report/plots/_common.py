"""Shared figure plumbing: an Agg canvas (no pyplot, no display) and the best-so-far curve drawing."""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from pike.report.curves import ConfigGroup, band, grid

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def figure(width: float = 7.0, height: float = 4.2) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def speedup_axis(ax, values, axis: str = "y") -> None:
    """Speedups are ratios: a log scale once they span more than a factor of 8, ticks as "2x"."""
    vals = [v for v in values if v and v > 0]
    target = ax.yaxis if axis == "y" else ax.xaxis
    if vals and max(vals) / min(vals) > 8:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        target.set_minor_formatter(NullFormatter())
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))


def best_so_far(groups: list[ConfigGroup], axis: str, xlabel: str, title: str) -> bytes:
    """Geomean over tasks of the best-so-far confirmed speedup vs eager, each task at least 1.0 (eager
    is always there to fall back on), so a curve never goes down; one curve per configuration (the
    mean over its seeds, with the 5-95% bootstrap band when it has several)."""
    fig = figure()
    ax = fig.add_subplot()
    xs = grid([r for g in groups for r in g.runs], axis)
    for i, g in enumerate(groups):
        end = grid(g.runs, axis)[-1]  # each curve stops where its configuration's spending did
        gx = xs[xs <= end + 1e-12]
        b = band(g, axis, gx, clamp=True)
        n = len(g.runs)
        label = g.label + (f" (mean of {n} seeds, 5-95% bootstrap band)" if n > 1 else "")
        ax.plot(b.x, b.mean, drawstyle="steps-post", color=color(i), label=label, lw=1.8, marker="o" if len(b.x) == 1 else None)
        if b.lo is not None:
            ax.fill_between(b.x, b.lo, b.hi, step="post", color=color(i), alpha=0.2, lw=0)
    ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
    speedup_axis(ax, [v for line in ax.get_lines() for v in line.get_ydata()])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("geomean best-so-far speedup vs eager")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig)
