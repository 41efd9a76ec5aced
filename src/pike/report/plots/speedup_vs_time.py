"""Geomean best-so-far speedup vs eager against the wall time since the run's start."""

from __future__ import annotations

from pike.report.curves import ConfigGroup
from pike.report.plots._common import best_so_far


def plot(groups: list[ConfigGroup]) -> bytes:
    return best_so_far(groups, "time", "seconds since the run's start", "Speedup vs wall time")
