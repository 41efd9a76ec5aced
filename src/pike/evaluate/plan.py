"""The plan of one candidate's run: which input sets are checked, with which weights, at which size,
and which are timed and refilled. Made here, once per run; the candidate's job is written from it
and its outputs are checked against it (``verdict``)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from pike.evaluate.jobs import TimingPlan

PROBE_PAIRS = 4  # A B pairs of one fresh-content probe


@dataclass
class Plan:
    trials: list[int]  # seeded correctness trials (input sets of the reference pool)
    random_trials: list[int]  # trials with re-randomised weights (set i with the weights' output i)
    alt_trials: list[int]  # trials at the alternate size ([] without one)
    timing: TimingPlan | None  # None: not timed

    @property
    def time(self) -> bool:
        return self.timing is not None

    def main_sets(self) -> list[int]:
        """Every input set of the task's size that the candidate's process reads."""
        sets = set(self.trials) | set(self.random_trials)
        if self.timing is not None:
            sets |= set(self.timing.sets) | set(self.timing.refill) | {i for g in self.timing.probe or [] for i in g}
        return sorted(sets)


def plan_candidate(c, ref, alt_ref, rng: random.Random, *, time_it: bool | None, trusted: bool) -> Plan:
    """Trials, timing sets and their refills drawn from ``ref``'s pool without overlap where the pool
    allows (held-out sets are what catch outputs cached by pointer or call count). ``c``: EvalConfig."""
    n = ref.meta["pool"]
    order = list(range(n))
    rng.shuffle(order)
    trials = sorted(order[: min(c.trials, n)])
    rest = order[min(c.trials, n):] or order
    timing_sets = rest[: c.timing_sets] or order[:1]
    refill = [i for i in rest if i not in timing_sets][: len(timing_sets)]
    refill += [i for i in order if i not in timing_sets and i not in refill][: len(timing_sets) - len(refill)]
    refill = refill[: len(timing_sets)]
    # The fresh-content probe's sets: held-out sets this run uses nowhere else, drawn at random
    # (``order`` is shuffled), a group for the probe and one for its confirmation.
    reserve = [i for i in order if i not in trials and i not in timing_sets and i not in refill]
    k = min(PROBE_PAIRS, len(reserve) // 2)
    probe = [reserve[:k], reserve[k:2 * k]] if k >= 3 and c.fresh_ratio and not trusted else None
    random_trials = list(range(min(c.random_weight_trials, ref.meta["random_count"])))
    do_time = c.time if time_it is None else time_it
    timing = TimingPlan(
        config=c.timing.to_json(), sets=timing_sets, refill=refill, seed=rng.randrange(2**31), probe=probe,
    ) if do_time else None
    alt_trials = list(range(alt_ref.meta["pool"])) if alt_ref is not None else []
    return Plan(trials, random_trials, alt_trials, timing)
