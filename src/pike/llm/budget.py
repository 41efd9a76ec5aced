"""Query and dollar budgets, enforced before a request is sent.

A query counts when it is reserved, so N concurrent callers can never start more than max_queries,
and a request that reached the provider counts even if it failed (as in the paper, every query
counts). Dollars are reserved at the worst case (max_tokens at the output price) and settled to the
real cost on the reply, so concurrency cannot overshoot max_usd by more than a retry's extra cost.
A lock (not an asyncio one) makes it safe from threads and tasks alike: nothing inside awaits.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


class BudgetExhausted(Exception):
    """No query may be started: `reason` is "queries" or "usd"."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):
        return BudgetExhausted, (self.reason, str(self))


@dataclass(eq=False)
class Reservation:
    usd: float
    open: bool = field(default=True, repr=False)


class Budget:
    def __init__(
        self,
        max_queries: int | None = None,
        max_usd: float | None = None,
        spent_queries: int = 0,
        spent_usd: float = 0.0,
    ) -> None:
        if max_queries is not None and max_queries < 0:
            raise ValueError("max_queries must be >= 0")
        if max_usd is not None and max_usd < 0:
            raise ValueError("max_usd must be >= 0")
        self.max_queries = max_queries
        self.max_usd = max_usd
        # spent_* come from the store when a run resumes (pending records count at their reservation).
        self._queries = spent_queries
        self._spent_usd = spent_usd
        self._reserved_usd = 0.0
        self._open = 0
        self._lock = threading.Lock()

    def reserve(self, max_cost_usd: float = 0.0) -> Reservation:
        if max_cost_usd < 0:
            raise ValueError("max_cost_usd must be >= 0")
        with self._lock:
            if self.max_queries is not None and self._queries >= self.max_queries:
                raise BudgetExhausted("queries", f"query budget spent: {self._queries}/{self.max_queries}")
            if self.max_usd is not None:
                committed = self._spent_usd + self._reserved_usd
                if committed + max_cost_usd > self.max_usd * (1 + 1e-12):
                    raise BudgetExhausted(
                        "usd",
                        f"USD budget: ${committed:.4f} spent or reserved of ${self.max_usd:.4f}, "
                        f"next query may cost up to ${max_cost_usd:.4f}",
                    )
            self._queries += 1
            self._reserved_usd += max_cost_usd
            self._open += 1
            return Reservation(max_cost_usd)

    def adopt(self, usd: float) -> Reservation:
        """A query an earlier invocation sent and left out of this budget's start (a batch round's,
        claimed back): counted now, without a limit check, since it was paid for when it was sent."""
        with self._lock:
            self._queries += 1
            self._reserved_usd += usd
            self._open += 1
            return Reservation(usd)

    def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """The request was sent: the query stays counted and costs `actual_usd`."""
        with self._lock:
            self._close(reservation)
            self._spent_usd += max(0.0, actual_usd)

    def release(self, reservation: Reservation) -> None:
        """The request was never sent: give the query and its dollars back."""
        with self._lock:
            self._close(reservation)
            self._queries -= 1

    def _close(self, reservation: Reservation) -> None:
        if not reservation.open:
            raise RuntimeError("reservation already settled or released")
        reservation.open = False
        self._open -= 1
        # Reset exactly when nothing is in flight, so float drift cannot accumulate.
        self._reserved_usd = 0.0 if self._open == 0 else max(0.0, self._reserved_usd - reservation.usd)

    @property
    def queries_used(self) -> int:
        """Queries started, in flight ones included."""
        return self._queries

    @property
    def usd_used(self) -> float:
        """Dollars of settled queries (in flight ones are in `usd_reserved`)."""
        return self._spent_usd

    @property
    def usd_reserved(self) -> float:
        return self._reserved_usd

    @property
    def remaining_queries(self) -> int | None:
        return None if self.max_queries is None else max(0, self.max_queries - self._queries)

    @property
    def remaining_usd(self) -> float | None:
        if self.max_usd is None:
            return None
        return max(0.0, self.max_usd - self._spent_usd - self._reserved_usd)

    @property
    def exhausted(self) -> bool:
        """True when not even a free query could be reserved now."""
        return self.remaining_queries == 0 or self.remaining_usd == 0.0

    def __repr__(self) -> str:
        return (
            f"Budget(queries={self._queries}/{self.max_queries}, usd={self._spent_usd:.4f}"
            f"+{self._reserved_usd:.4f} reserved/{self.max_usd})"
        )


@dataclass
class GroupReservation:
    parts: list[Reservation]
    usd: float
    open: bool = field(default=True, repr=False)


class BudgetGroup:
    """Several budgets charged together (a task's query budget and the run's USD budget): a query is
    reserved on all of them or on none."""

    def __init__(self, *budgets: Budget) -> None:
        self.budgets = budgets
        self.max_usd = next((b.max_usd for b in budgets if b.max_usd is not None), None)

    def reserve(self, max_cost_usd: float = 0.0) -> GroupReservation:
        parts: list[Reservation] = []
        try:
            for b in self.budgets:
                parts.append(b.reserve(max_cost_usd))
        except BudgetExhausted:
            for b, r in zip(self.budgets, parts):
                b.release(r)
            raise
        return GroupReservation(parts, max_cost_usd)

    def adopt(self, usd: float) -> GroupReservation:
        return GroupReservation([b.adopt(usd) for b in self.budgets], usd)

    def settle(self, reservation: GroupReservation, actual_usd: float) -> None:
        reservation.open = False
        for b, r in zip(self.budgets, reservation.parts):
            b.settle(r, actual_usd)

    def release(self, reservation: GroupReservation) -> None:
        reservation.open = False
        for b, r in zip(self.budgets, reservation.parts):
            b.release(r)
