"""The offline portfolio: compiler, graph, precision and layout variants of the task, no LLM."""

from __future__ import annotations

import asyncio

from pike.knobs import VariantKnobs
from pike.search.taskrun import TaskRun
from pike.store import Solution


def _done(run: TaskRun) -> dict[tuple[str, ...], Solution]:
    """The task's offline solutions by their knobs (in KNOB_ORDER; eager: none)."""
    return {s.knobs.names: s for s in run.solutions if s.origin == "offline" and s.knobs is not None}


class Offline:
    """No LLM: a portfolio of compiler, graph, precision and layout variants; eager is one of them.

    Four stages, cheapest first (``variants.stages``): eager and the knobs that need no compile,
    their combinations, the compile modes, the combinations with the fastest mode. With
    ``search.offline.combos = "promising"``, a combination is tried only if each of its knobs helped on
    its own (``variants.promising``)."""

    kind = "offline"
    needs_llm = False
    phase_synchronous = False
    seeds_from_offline = False
    # Its portfolio holds the compile modes: a final table's compile baseline is one of its variants.
    compile_variants = True

    def __init__(self, cfg):
        self.cfg = cfg

    async def run(self, run: TaskRun, seed: Solution | None = None) -> None:
        from pike.search.variants import stages, variants

        device_type = "cuda" if self.cfg.eval.device.startswith("cuda") else "cpu"
        # A resume tries again what an earlier invocation's time limit left out.
        skipped = {k: v for k, v in run.state().get("skipped", {}).items() if v != "not tried: time limit"}
        portfolio = []
        for v in variants(run.task, device_type, with_max_autotune=self.cfg.search.with_max_autotune):
            if v.source is None:
                skipped[v.name] = v.skipped
            else:
                portfolio.append(v)
        run.save_state(skipped=skipped)
        for i, stage in enumerate(stages(portfolio)):
            combos = i % 2 == 1
            await self._evaluate(run, self._promising(run, stage) if combos else stage)

    def _promising(self, run: TaskRun, combos: list) -> list:
        """The combinations worth their evaluation; the others are recorded as skipped, with why."""
        from pike.search.variants import promising

        if run.out_of_time:
            return combos  # _evaluate records them as "not tried: time limit"
        skipped = run.state().get("skipped", {})
        done = _done(run)
        alone = {names[0]: (s.status == "ok", s.runtime_ms) for names, s in done.items() if len(names) == 1}
        eager = done.get(())
        eager_ms = eager.runtime_ms if eager is not None and eager.status == "ok" else run.eager_ms
        keep = []
        for v in combos:
            why = "" if self.cfg.search.offline.combos == "all" else promising(v.knobs, alone, eager_ms)
            if why and v.knobs not in done:
                skipped[v.name] = f"not tried: {why}"
            else:
                skipped.pop(v.name, None)  # a reason from before a resume no longer holds
                keep.append(v)
        run.save_state(skipped=skipped)
        return keep

    @staticmethod
    async def _evaluate(run: TaskRun, todo) -> None:
        done = _done(run)
        # No more in flight than the pool has slots, so that the time limit is checked when a
        # variant is about to start, not when it was queued.
        bound = asyncio.Semaphore(max(1, getattr(run.pool, "size", 1)))
        late: list[str] = []

        async def one(v):
            sol = done.get(v.knobs)
            if sol is not None and sol.status != "pending":
                return  # evaluated before a resume
            async with bound:
                if run.out_of_time:
                    late.append(v.name)
                    return
                if sol is not None:
                    sid = sol.id
                else:
                    sid = run.store.add_solution(run.task_id, v.source, "offline", idea=v.name, knobs=VariantKnobs.of(v.knobs))
                if await run.evaluate(sid, trusted=True, until_deadline=True) is None:
                    late.append(v.name)  # stopped at the time limit

        await asyncio.gather(*(one(v) for v in todo))
        if late:  # a resume tries them
            run.save_state(skipped={**run.state().get("skipped", {}), **{n: "not tried: time limit" for n in late}})
