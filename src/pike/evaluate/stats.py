"""Statistics of timings, computed in the orchestrator from a child's raw samples.

Nothing here runs in a process that imported candidate code, so a candidate that patches
``statistics``, ``numpy`` or ``time`` in its own process cannot change a reported figure: the child
only appends the clock's readings to lists, and every median, interquartile range and interval is
made here.

A speedup is a ratio of medians, ``median(base) / median(x)``, of samples taken in the same window
(the re-timing job runs one of each entry per round, A B A B ...). Its interval comes from a paired
bootstrap: whole rounds are resampled, so what one round's load did to both sides stays together.
Deterministic for a given seed, so a report computed twice says the same thing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

N_BOOT = 1000
LEVEL = 0.95  # two-sided confidence of every interval
NOISY_SPREAD = 0.1  # an interval wider than this, relative to its value, is labelled noisy (eval.noisy_spread)
SEED = 0


def median(samples) -> float:
    return float(np.median(np.asarray(samples, dtype=float))) if len(samples) else 0.0


def quartiles(samples) -> tuple[float, float, float]:
    """(lower quartile, median, upper quartile); a single sample is all three."""
    if not len(samples):
        return 0.0, 0.0, 0.0
    q1, q2, q3 = np.percentile(np.asarray(samples, dtype=float), [25, 50, 75])
    return float(q1), float(q2), float(q3)


def iqr(samples) -> float:
    q1, _, q3 = quartiles(samples)
    return q3 - q1


@dataclass(frozen=True)
class Interval:
    """A speedup (``value``: base / x, above 1 when x is faster) with its confidence interval
    [``lo``, ``hi``] over ``n`` rounds (paired) or samples (unpaired)."""

    value: float
    lo: float
    hi: float
    n: int
    paired: bool = True

    @property
    def spread(self) -> float:
        """Width of the interval relative to the value."""
        return (self.hi - self.lo) / self.value if self.value > 0 else float("inf")

    @property
    def faster(self) -> bool:
        """x is faster than the base beyond the interval."""
        return self.lo > 1.0

    @property
    def slower(self) -> bool:
        return self.hi < 1.0

    def noisy(self, max_spread: float) -> bool:
        return self.spread > max_spread

    def text(self) -> str:
        return f"{self.value:.2f}x [{self.lo:.2f}-{self.hi:.2f}]"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict | None) -> "Interval | None":
        return cls(**d) if d else None

    def inverse(self) -> "Interval":
        """The same comparison read the other way (x over base)."""
        return Interval(1 / self.value, 1 / self.hi, 1 / self.lo, self.n, self.paired)


def _bootstrap(base: np.ndarray, x: np.ndarray, paired: bool, seed: int, n_boot: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if paired:
        idx = rng.integers(0, len(base), size=(n_boot, len(base)))
        return np.median(base[idx], axis=1) / np.median(x[idx], axis=1)
    ia = rng.integers(0, len(base), size=(n_boot, len(base)))
    ib = rng.integers(0, len(x), size=(n_boot, len(x)))
    return np.median(base[ia], axis=1) / np.median(x[ib], axis=1)


def speedup(base, x, *, paired: bool = True, seed: int = SEED, n_boot: int = N_BOOT, level: float = LEVEL) -> Interval:
    """``median(base) / median(x)`` with a bootstrap interval. ``paired``: ``base[i]`` and ``x[i]``
    were taken in the same round (same length required); else each is resampled on its own."""
    a = np.asarray(base, dtype=float)
    b = np.asarray(x, dtype=float)
    if not len(a) or not len(b):
        raise ValueError("a speedup needs samples on both sides")
    if paired and len(a) != len(b):
        raise ValueError(f"paired samples of different lengths ({len(a)} and {len(b)})")
    value = float(np.median(a) / np.median(b))
    if min(len(a), len(b)) < 2:
        return Interval(value, 0.0, float("inf"), min(len(a), len(b)), paired)
    ratios = _bootstrap(a, b, paired, seed, n_boot)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(ratios, [tail, 100 - tail])
    return Interval(value, float(min(lo, value)), float(max(hi, value)), min(len(a), len(b)), paired)


MIN_ROUNDS = 10  # below this a bootstrap interval is too optimistic to stop on


def tight(rounds: dict[str, list[float]], anchor: str, max_spread: float, *, n_boot: int = 200) -> bool:
    """Whether every entry's speedup over ``anchor`` is known within ``max_spread`` (relative width
    of its interval): when the re-timing can stop early."""
    base = rounds[anchor]
    if len(base) < MIN_ROUNDS:
        return False
    return all(speedup(base, s, n_boot=n_boot).spread <= max_spread for name, s in rounds.items() if name != anchor)


def readings(raw: dict, key: str) -> list[float]:
    """One list of a child's raw readings, as finite non-negative floats (ValueError otherwise: a
    child's file is not to be trusted with anything but numbers)."""
    vals = [float(x) for x in raw[key]]
    if not vals or not all(0.0 <= v < float("inf") for v in vals):
        raise ValueError(f"timing readings '{key}' are empty, negative or not finite")
    return vals


def latency_samples(raw: dict, cuda: bool) -> tuple[list[float], bool]:
    """(the samples that count, out of stream) from a child's per-run readings. On a GPU, host time
    well above event time (forward and copy-out) means work ran outside the current stream: then the
    host time of the forward (host minus copy) counts. On the CPU both clocks are one."""
    event, host, copy = readings(raw, "event_ms"), readings(raw, "host_ms"), readings(raw, "copy_ms")
    if not (len(event) == len(host) == len(copy)):
        raise ValueError("timing readings of different lengths")
    if not cuda:
        return event, False
    out_of_stream = median(host) > 1.5 * (median(event) + median(copy)) + 0.05
    return ([max(h - c, 0.0) for h, c in zip(host, copy)] if out_of_stream else event), out_of_stream


def cache_signs(probe: dict, ratio: float, min_gap_ms: float) -> bool:
    """One fresh-content probe (``timing.fresh_content_probe``'s readings) looks like outputs cached
    by input content: every run on new inputs slower than every run on repeated ones, the medians
    ``ratio`` apart and more than timer noise."""
    a, b = readings(probe, "repeat_ms"), readings(probe, "fresh_ms")
    return min(b) > max(a) and median(b) > ratio * median(a) and median(b) - median(a) > min_gap_ms
