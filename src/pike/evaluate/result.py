"""The structured outcome of evaluating one candidate (docs/architecture.md, evaluator step 10)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

STATUSES = ("ok", "rejected", "build_error", "runtime_error", "timeout", "mismatch", "suspect")


OBJECTIVES = ("latency", "throughput")


@dataclass
class Timing:
    """Latency of one forward from an idle queue (median, IQR), and the back-to-back throughput time
    per call, in milliseconds. ``objective`` says which of the two is the figure (``value_ms``)."""

    median_ms: float
    iqr_ms: float
    runs: int
    host_median_ms: float | None = None  # host clock around the same region (GPU)
    event_median_ms: float | None = None  # CUDA events (GPU)
    out_of_stream: bool = False  # host time well above event time: work ran outside the stream
    peak_mem_bytes: int | None = None
    samples_ms: list[float] = field(default_factory=list)  # the objective's samples, in order
    throughput_ms: float | None = None  # median over back-to-back batches of the mean ms per call
    objective: str = "latency"

    @property
    def spread(self) -> float:
        """IQR relative to the median."""
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else 0.0

    @property
    def value_ms(self) -> float:
        """The figure that is ranked and reported: latency, or throughput where that is the objective."""
        return self.throughput_ms if self.objective == "throughput" and self.throughput_ms else self.median_ms

    @classmethod
    def from_raw(cls, raw: dict, cuda: bool, objective: str = "latency") -> "Timing":
        """From a child's raw readings (``timing.time_forward``, ``timing.interleaved``): every
        statistic is computed here, in the orchestrator."""
        from pike.evaluate import stats

        latency, out_of_stream = stats.latency_samples(raw, cuda)
        q1, med, q3 = stats.quartiles(latency)
        batches = [float(x) for x in raw.get("batch_ms") or []]
        return cls(
            median_ms=med, iqr_ms=q3 - q1, runs=len(latency), host_median_ms=stats.median(raw["host_ms"]),
            event_median_ms=stats.median(raw["event_ms"]) if cuda else None, out_of_stream=out_of_stream,
            peak_mem_bytes=raw.get("peak_mem_bytes"), samples_ms=batches if objective == "throughput" and batches else latency,
            throughput_ms=stats.median(batches) if batches else None, objective=objective,
        )


@dataclass
class EvalResult:
    status: str
    message: str = ""
    # Text a fixer needs: tail of compiler output or traceback, max diffs, which trial.
    feedback: str = ""
    timing: Timing | None = None
    eager_ms: float | None = None
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    tags: list[str] = field(default_factory=list)  # precision ones from the dtypes a checked forward used
    precision_hints: list[str] = field(default_factory=list)  # static precision tags the forward did not show
    state_dict_compatible: bool | None = None
    trials: int = 0
    task_flags: list[str] = field(default_factory=list)  # e.g. stateful, random, weak_tolerance
    device: str = "cpu"
    stage: str = ""  # static, build, import, init, forward, compare, timing
    durations_s: dict[str, float] = field(default_factory=dict)  # wall time per evaluator stage
    # The speedup vs eager timed side by side with it (stats.Interval as JSON), where it was
    speedup_interval: dict | None = None

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def runtime_ms(self) -> float | None:
        return self.timing.value_ms if self.timing else None

    @property
    def speedup_vs_eager(self) -> float | None:
        if self.eager_ms and self.runtime_ms:
            return self.eager_ms / self.runtime_ms
        return None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["runtime_ms"] = self.runtime_ms
        d["speedup_vs_eager"] = self.speedup_vs_eager
        if self.timing:
            d["timing"].pop("samples_ms", None)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "EvalResult":
        d = dict(d)
        d.pop("runtime_ms", None)
        d.pop("speedup_vs_eager", None)
        t = d.pop("timing", None)
        return cls(timing=Timing(**t) if t else None, **d)
