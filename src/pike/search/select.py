"""Noise-aware selection: who wins among candidates timed side by side.

The fastest median wins only where it is faster beyond the interval. Everything it does not beat so
is tied with it, and a tie goes to the candidate that keeps the reference's precision, then to the
simpler one (fewer code lines), then to the earlier one (baselines before solutions, then by id). A
candidate thus displaces a parent, the best or a baseline only by a win the measurement can tell.
"""

from __future__ import annotations

from dataclasses import dataclass

from pike.evaluate import stats
from pike.evaluate.static import check_source, lowered_precision
from pike.search.library import complexity


@dataclass
class Contender:
    name: str  # "eager", "compile:MODE", "solution:ID"
    samples: list[float]  # ms, one per round of a re-timing (paired with the others'), or one evaluation's
    lowered: bool = False  # lowers precision below the reference's fp32
    lines: int = 0  # simplicity: non-blank, non-comment lines
    order: float = 0.0  # earlier first: baselines, then solutions by id

    @property
    def median_ms(self) -> float:
        return stats.median(self.samples)

    @property
    def preference(self) -> tuple:
        return (self.lowered, self.lines, self.order)


def contender(name: str, samples: list[float], code: str, order: float, tags: list[str] | None = None) -> Contender:
    tags = check_source(code).tags if tags is None else tags
    return Contender(name, list(samples), lowered_precision(tags), complexity(code), order)


def beats(a: Contender, b: Contender, paired: bool = True) -> bool:
    """``a`` is faster than ``b`` beyond the interval."""
    return stats.speedup(b.samples, a.samples, paired=paired).faster


def pick(contenders: list[Contender], paired: bool = True) -> Contender:
    """The fastest, unless it ties (no win beyond the interval) with one preferred to it."""
    if not contenders:
        raise ValueError("nothing to pick from")
    fastest = min(contenders, key=lambda c: (c.median_ms, c.preference))
    tied = [c for c in contenders if c is fastest or not beats(fastest, c, paired)]
    return min(tied, key=lambda c: c.preference)


def rank(contenders: list[Contender], paired: bool = True) -> list[Contender]:
    """Best first: the pick, then the pick of the rest, and so on."""
    rest, out = list(contenders), []
    while rest:
        best = pick(rest, paired)
        out.append(best)
        rest.remove(best)
    return out
