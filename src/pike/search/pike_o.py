"""PIKE-O: an OpenEvolve-style evolutionary search in PIKE's engine.

A :class:`~pike.search.library.Library` of correct programs organised in islands (each with a capped population) plus one
elite archive shared by all islands. One *iteration* = one parent sampled from an island, one COA
query from it (with the island's top programs in the prompt), then up to ``max_fix_attempts`` EFA
repairs (:meth:`TaskRun.branch`); the final child joins the island when it is correct. Every
``migration_interval`` iterations of an island, each island copies its best programs to its ring
neighbours. Iterations run concurrently (a bounded number in flight) until the task's budget is spent.

Fitness is 1 / runtime (ms) of a correct program; the reference (the initial program, parent None)
has fitness 1 / eager runtime. The library and the iterations are stored in the run store's
``pike_o*`` tables (:mod:`pike.store_pike_o`) after every change, so a killed run resumes with the same
islands, archive and random stream; iterations in flight at the kill are finished from the store by
:meth:`TaskRun.branch`, never asked again.

Its knobs are the ``search.pike_o`` section (:class:`pike.config.PikeOConfig`): ``islands``, ``population`` (per island),
``archive``, ``elite_ratio``, ``exploration``, ``exploitation``, ``top_programs``,
``migration_interval`` and ``migration_rate`` (and ``search.max_fix_attempts``, ``search.retime_top``); with ``feature_grid`` on, each
island is a MAP-Elites grid over ``grid_features`` with ``grid_bins`` bins (one program per cell; see
:mod:`pike.search.library`), each program's features measured here when its iteration is folded.
"""

from __future__ import annotations

import asyncio
import random

from pike.agents import HistoryEntry
from pike.search.library import REFERENCE, Grid, Library, parse_features
from pike.search.taskrun import TaskRun
from pike.store import Solution

__all__ = ["REFERENCE", "Grid", "Library", "PikeO"]

# -------------------------------------------------------------------- prompt history

async def branch_with_history(run: TaskRun, phase: int, parent: Solution | None, island: int,
                              history: list[HistoryEntry]) -> Solution | None:
    """One iteration's COA query (and fixes), showing the island's top programs in the prompt."""
    return await run.branch(phase, 0, parent, None, island=island, history=history)


def describe(s: Solution) -> str:
    """How a program is named in another query's prompt."""
    text = f"solution {s.id}, " + (f"from solution {s.parent_id}" if s.parent_id else "from the reference")
    if s.idea:
        text += f" ({s.idea})"
    if s.origin == "efa":
        text += f", repaired by the fixer after {s.attempt} attempt(s)"
    return text


# -------------------------------------------------------------------- the strategy

class PikeO:
    """OpenEvolve-style islands + elite archive over :class:`TaskRun` primitives (see the module doc)."""

    kind = "pike-o"
    needs_llm = True
    phase_synchronous = False  # iterations run concurrently, each folded into the library when done
    seeds_from_offline = True
    compile_variants = False

    def __init__(self, cfg, rng: random.Random | None = None):
        self.full_cfg = cfg
        self.search = cfg.search  # what the strategies share (retime_top)
        self.cfg = cfg.search.pike_o
        self.rng = rng if rng is not None else random.Random(cfg.seed)
        self.lib: Library | None = None
        self.next_iteration = 0
        self.pending: dict[int, int] = {}  # iteration -> island: launched, not yet folded into the library
        self.parents: dict[int, int] = {}  # iteration -> its parent's id (REFERENCE for the reference)
        self.drawn: dict[int, str] = {}  # iteration -> where its parent was drawn from (explore, exploit, random)
        self.finished: dict[int, tuple[str, int | None]] = {}  # left `pending` since the last save: (status, child)
        self.top_changed = False  # a child entered the search-time top since the last side-by-side re-timing
        self.grid_features = parse_features(self.cfg.grid_features) if self.cfg.feature_grid else None

    # ------------------------------------------------------------ state

    def _fitness(self, run: TaskRun, sid: int) -> float | None:
        if sid == REFERENCE:
            return 1.0 / run.eager_ms if run.eager_ms else 1e-12
        s = run.store.solution(sid)
        return 1.0 / run.rank_ms(s) if s.ok and s.runtime_ms else None

    @staticmethod
    def _code(run: TaskRun, sid: int) -> str:
        return run.task.source if sid == REFERENCE else run.store.solution(sid).code

    def _features(self, run: TaskRun, grid: Grid, sid: int) -> dict:
        """The grid's features of a program, its diversity against the grid's anchors (itself left out)."""
        anchors = [self._code(run, a) for a in grid.anchors if a != sid]
        return grid.measure(self._code(run, sid), anchors)

    def _save(self, run: TaskRun) -> None:
        version, internal, gauss = self.rng.getstate()
        run.store.save_pike_o(run.task_id, {
            **self.lib.to_json(), "next_iteration": self.next_iteration, "pending": dict(self.pending),
            "rng": [version, list(internal), gauss], "finished": self.finished,
            "parents": {k: v for k, v in self.parents.items() if k in self.pending},
            "drawn": {k: v for k, v in self.drawn.items() if k in self.pending},
        })
        self.finished = {}

    def _restore(self, run: TaskRun, initial: int) -> None:
        c = self.cfg
        st = run.store.pike_o(run.task_id)
        if st is None:
            grid = Grid(self.grid_features, c.grid_bins) if self.grid_features else None
            features = self._features(run, grid, initial) if grid else None
            self.lib = Library.new(c.islands, c.population, c.archive, initial, self._fitness(run, initial), grid, features)
        else:
            self.lib = Library.from_json(st, c.population, c.archive)
            for sid in self.lib.members():
                self.lib.fitness[sid] = self._fitness(run, sid) or 0.0
            self.next_iteration = st.get("next_iteration", 0)
            self.pending = {int(k): v for k, v in st.get("pending", {}).items()}
            self.parents = {int(k): v for k, v in st.get("parents", {}).items()}
            self.drawn = {int(k): v for k, v in st.get("drawn", {}).items()}
            if st.get("rng"):
                version, internal, gauss = st["rng"]
                self.rng.setstate((version, tuple(internal), gauss))
        self.lib.beats = run.beats  # a program displaces another only by a win beyond the noise
        # Never reuse an iteration number the store already holds (its (phase, branch) must stay unique).
        phases = [s.phase for s in run.solutions if s.phase is not None]
        self.next_iteration = max([self.next_iteration] + [p + 1 for p in phases])

    def prompt_programs(self, run: TaskRun, island: int, parent_id: int) -> list[HistoryEntry]:
        """The island's ``top_programs`` best, then as many inspirations (archive elites first, then,
        with the grid, programs of the cells next to the parent's)."""
        if not run.eager_ms or self.cfg.top_programs <= 0:
            return []
        top = self.lib.top(island, self.cfg.top_programs)
        more = self.lib.inspirations(island, self.cfg.top_programs, self.cfg.elite_ratio, self.rng, set(top) | {parent_id},
                                     near=parent_id)
        out = []
        for sid in top + more:
            fit = self.lib.fitness.get(sid)
            if fit:
                out.append(HistoryEntry(run.eager_ms * fit, describe(run.store.solution(sid))))
        return out

    # ------------------------------------------------------------ iterations

    def _fold(self, run: TaskRun, iteration: int, island: int, child: Solution | None) -> None:
        """A finished iteration into the library; it leaves `pending` in the same step (no await between)
        that saves the state, so a resumed run never folds it twice."""
        self.pending.pop(iteration, None)
        self.parents.pop(iteration, None)
        self.drawn.pop(iteration, None)
        self.finished[iteration] = ("done", child.id if child is not None else None)
        if child is not None:
            fitness = self._fitness(run, child.id)
            grid = self.lib.grid
            features = self._features(run, grid, child.id) if grid is not None and fitness else None
            self.lib.add(island, child.id, fitness, features)
            if fitness and self.search.retime_top > 1:
                self.top_changed |= child.id in {s.id for s in run.contenders(self.search.retime_top)}
            moves = self.lib.finished_iteration(island, self.cfg.migration_interval, self.cfg.migration_rate)
            if moves:
                run.notify("migration", copies=len(moves))
        self._save(run)

    async def _retime_contenders(self, run: TaskRun) -> None:
        """Before the next parent is drawn: the contenders timed side by side with eager; their
        confirmed figures become their fitness, so one lucky search timing does not breed alone."""
        self.top_changed = False
        await run.retime(run.contenders(self.search.retime_top))
        for sid in self.lib.members():
            if sid != REFERENCE:
                self.lib.fitness[sid] = self._fitness(run, sid) or 0.0

    async def _iterate(self, run: TaskRun, iteration: int, island: int, parent: Solution | None,
                       history: list[HistoryEntry] | None) -> Solution | None:
        run.notify("phase", phase=iteration)
        if history is None:  # resuming a chain already in the store: no new COA prompt is built
            child = await run.branch(iteration, 0, parent, None, island=island)
        else:
            child = await branch_with_history(run, iteration, parent, island, history)
        self._fold(run, iteration, island, child)
        return child

    async def run(self, run: TaskRun, seed: Solution | None = None) -> None:
        """``seed``: the library's initial program (None: the reference)."""
        self._restore(run, seed.id if seed is not None else REFERENCE)
        self._save(run)
        bound = asyncio.Semaphore(max(1, self.full_cfg.llm.concurrency))
        tasks: list[asyncio.Task] = []
        results: list[Solution | None] = []  # in the order iterations finished
        errors: list[BaseException] = []

        async def bounded(coro):
            try:
                results.append(await coro)
            except BaseException as e:
                errors.append(e)
                raise
            finally:
                bound.release()

        # Iterations that were in flight when the run stopped: finish their chains from the store.
        held = {s.phase for s in run.solutions if s.branch == 0}
        for iteration, island in sorted(self.pending.items()):
            if iteration in held:
                await bound.acquire()
                tasks.append(asyncio.create_task(bounded(self._iterate(run, iteration, island, None, None))))
            elif run.waiting_in_round(iteration, 0):
                # Its COA query went out in a batch round: claimed back with the round's reply (the
                # prompt is not rebuilt for it, so no history is needed).
                parent_id = self.parents.get(iteration, REFERENCE)
                parent = None if parent_id == REFERENCE else run.store.solution(parent_id)
                await bound.acquire()
                tasks.append(asyncio.create_task(bounded(self._iterate(run, iteration, island, parent, []))))
            else:
                self.pending.pop(iteration)  # its query (if sent) was paid; nothing came back
                self.finished[iteration] = ("lost", None)
        self._save(run)

        # New iterations until the budget is spent. A run of iterations that produce nothing (provider
        # down, replies without code, a USD budget too small for one more query) stops the search.
        stall_limit = max(10, 2 * self.full_cfg.llm.concurrency)
        while True:
            await bound.acquire()
            tail = results[-stall_limit:]
            stalled = len(tail) == stall_limit and all(r is None for r in tail)
            if run.exhausted or errors or stalled:
                bound.release()
                if stalled and not run.exhausted and not errors:
                    run.notify("stalled", phase=self.next_iteration)
                break
            if self.top_changed:
                await self._retime_contenders(run)
            iteration = self.next_iteration
            island = iteration % len(self.lib.islands)
            parent_id = self.lib.sample_parent(island, self.rng, self.cfg.exploration, self.cfg.exploitation)
            parent = None if parent_id == REFERENCE else run.store.solution(parent_id)
            history = self.prompt_programs(run, island, parent_id)
            self.next_iteration += 1
            self.pending[iteration] = island
            self.parents[iteration] = parent_id
            self.drawn[iteration] = self.lib.drawn_from
            self._save(run)  # before the query: a resumed run never reuses this iteration number
            tasks.append(asyncio.create_task(bounded(self._iterate(run, iteration, island, parent, history))))
        await asyncio.gather(*tasks)
