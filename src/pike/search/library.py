"""PIKE-O's program library: islands, their populations, the elite archive, migration, and the optional
MAP-Elites feature grid.

Programs are store ids (:data:`REFERENCE` for the task's own Model) with a known fitness (1 / ms). The
library holds no code: whoever adds a program measures its features first (:meth:`Grid.measure`).

The feature grid (``SearchConfig.feature_grid``)
-------------------------------------------------
Each program gets a few *features*, measured once when it is added and kept with the library:

* ``complexity``: its non-blank, non-comment lines (a line starting with ``#`` or ``//`` is a comment;
  C preprocessor lines such as ``#include`` are code).
* ``diversity``: its mean line distance (1 - difflib's similarity ratio of the stripped, non-blank
  lines) to the *anchors*: the first :data:`DIVERSITY_ANCHORS` programs the library ever admitted, the
  initial program first. A fixed sample once full, so values measured at different times are
  comparable (the first few programs are measured against the anchors there were: the first program
  has diversity 0, the second its distance to the first, ...).
* ``backend``: the lowest-level kind of code it uses, from its static tags
  (:func:`pike.evaluate.static.check_source`): ``cuda`` (CUDA C++ / a C++ extension), else ``triton``,
  else ``torch_compile``, else ``pytorch``.

Bins are *fixed*, not adapted to what has been seen: ``complexity`` is log2-scaled between
:data:`COMPLEXITY_LINES` (8 and 1024 lines; outside values go to the end bins), ``diversity`` is linear
over [0, 1], each with ``grid_bins`` bins; ``backend`` has one bin per kind. So a program's cell never
moves (no re-binning that would evict occupants as ranges grow), every cell is a pure function of the
stored feature values, and a resumed run rebuilds nothing.

With the grid on, each island keeps at most one program per cell: a correct program takes an empty
cell, or replaces the occupant when it is fitter beyond the measurement's noise (``Library.beats``);
otherwise it stays out of the island (it may still enter the elite archive). The island's population is exactly its cell occupants, still capped by
``population`` (the lowest-fitness occupant leaves, never the best or the newest). Parent sampling's
exploration branch draws uniformly over the occupied cells, so one crowded kind of program cannot
drown the others; inspirations add occupants of the cells next to the parent's (within one bin in
every feature). Migrants are placed by the same cell rule on the receiving island.
"""

from __future__ import annotations

import difflib
import math
import random
import re
from dataclasses import dataclass, field
from typing import Callable

REFERENCE = 0  # the library's id for the task's own Model (store ids start at 1)

FEATURES = ("complexity", "diversity", "backend")
BACKENDS = ("pytorch", "torch_compile", "triton", "cuda")  # the backend feature's bins, in order
DIVERSITY_ANCHORS = 5
COMPLEXITY_LINES = (8, 1024)

_COMMENT = re.compile(r"\s*(//|#(?!\s*(include|define|undef|if|ifdef|ifndef|elif|else|endif|pragma|error)\b))")


# -------------------------------------------------------------------- features

def complexity(code: str) -> int:
    """Non-blank, non-comment lines."""
    return sum(1 for line in code.splitlines() if line.strip() and not _COMMENT.match(line))


def distance(a: str, b: str) -> float:
    """0: the same lines (indentation and blank lines ignored); 1: no line in common."""
    la = [line.strip() for line in a.splitlines() if line.strip()]
    lb = [line.strip() for line in b.splitlines() if line.strip()]
    return 1.0 - difflib.SequenceMatcher(None, la, lb, autojunk=False).ratio()


def backend(tags) -> str:
    tags = set(tags)
    if tags & {"cuda", "cpp_ext"}:
        return "cuda"
    if "triton" in tags:
        return "triton"
    if "torch_compile" in tags:
        return "torch_compile"
    return "pytorch"


def parse_features(spec: str) -> list[str]:
    """``"complexity,diversity"`` -> the names, checked (at least one, no repeats)."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in FEATURES]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f"search.pike_o.grid_features={spec!r}: expected distinct names among {', '.join(FEATURES)}")
    return names


@dataclass
class Grid:
    """Feature values of every program added, the diversity anchors, and each island's cells."""

    names: list[str]
    bins: int  # per continuous feature
    cells: list[dict[str, int]] = field(default_factory=list)  # per island: "i,j" -> its occupant
    values: dict[int, dict] = field(default_factory=dict)  # program -> {feature: raw value}
    anchors: list[int] = field(default_factory=list)

    def measure(self, code: str, anchor_codes: list[str]) -> dict:
        """Raw feature values of a program (``anchor_codes``: the anchors' code, the program's own left out)."""
        out: dict = {}
        for name in self.names:
            if name == "complexity":
                out[name] = complexity(code)
            elif name == "diversity":
                d = [distance(code, other) for other in anchor_codes]
                out[name] = round(sum(d) / len(d), 4) if d else 0.0
            else:
                from pike.evaluate.static import check_source

                out[name] = backend(check_source(code).tags)
        return out

    def record(self, sid: int, features: dict) -> None:
        """A program's features, kept from its first addition on; the first few become the anchors."""
        if sid not in self.values:
            self.values[sid] = dict(features)
        if len(self.anchors) < DIVERSITY_ANCHORS and sid not in self.anchors:
            self.anchors.append(sid)

    def bin(self, name: str, value) -> int:
        if name == "backend":
            return BACKENDS.index(value)
        n = max(1, self.bins)
        if name == "complexity":
            lo, hi = (math.log2(v) for v in COMPLEXITY_LINES)
            x = (math.log2(max(value, 1)) - lo) / (hi - lo)
        else:
            x = float(value)
        return min(n - 1, max(0, math.floor(x * n)))

    def coords(self, sid: int) -> tuple[int, ...]:
        v = self.values[sid]
        return tuple(self.bin(name, v[name]) for name in self.names)

    def key(self, sid: int) -> str:
        return ",".join(map(str, self.coords(sid)))

    def occupants(self, island: int) -> list[int]:
        """One program per occupied cell, in cell order."""
        cells = self.cells[island]
        return [cells[k] for k in sorted(cells, key=lambda k: tuple(map(int, k.split(","))))]

    def neighbours(self, island: int, sid: int) -> list[int]:
        """Occupants (``sid`` left out) of the cells within one bin of ``sid``'s in every feature."""
        if sid not in self.values:
            return []
        here = self.coords(sid)
        return [m for m in self.occupants(island) if m != sid
                and max(abs(a - b) for a, b in zip(self.coords(m), here)) <= 1]

    def to_json(self) -> dict:
        return {"features": self.names, "bins": self.bins, "cells": self.cells,
                "values": {str(k): v for k, v in self.values.items()}, "anchors": self.anchors}

    @classmethod
    def from_json(cls, d: dict) -> "Grid":
        return cls(list(d["features"]), d["bins"], [dict(c) for c in d["cells"]],
                   {int(k): dict(v) for k, v in d["values"].items()}, list(d["anchors"]))


# -------------------------------------------------------------------- the library

@dataclass
class Library:
    """Islands, their populations and the elite archive, as ids of programs with a known fitness.

    Only correct programs enter (``add`` refuses a missing or non-positive fitness). This differs on
    purpose from OpenEvolve, which stores failed programs with score 0, where they can be drawn as
    parents: here a failed candidate is only ever a starting point for the fixer, inside its iteration.
    """

    islands: list[list[int]]  # members of each island, oldest first
    migrants: list[list[int]]  # members of each island that arrived by migration (never migrated again)
    archive: list[int]
    population: int  # cap per island
    archive_size: int
    fitness: dict[int, float] = field(default_factory=dict)  # id -> 1/ms (not persisted: from the store)
    generations: list[int] = field(default_factory=list)  # finished iterations per island
    last_migration: int = 0  # max(generations) at the last migration
    migrations: int = 0
    moves: list[list[int]] = field(default_factory=list)  # [program, from island, to island] of every copy
    grid: Grid | None = None  # the MAP-Elites feature grid, when on
    drawn_from: str | None = field(default=None, compare=False)  # where the last parent came from: explore, exploit, random
    # (a, b) -> a is faster than b beyond the measurement's noise; None: any higher fitness. Who may
    # displace whom (a cell's occupant, the archive's worst); not persisted.
    beats: Callable[[int, int], bool] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def new(cls, islands: int, population: int, archive: int, initial: int, fitness: float,
            grid: Grid | None = None, features: dict | None = None) -> "Library":
        """Every island and the archive start from the initial program (the reference by default)."""
        k = max(1, islands)
        lib = cls([[initial] for _ in range(k)], [[] for _ in range(k)], [], max(1, population), max(0, archive),
                  {initial: fitness}, [0] * k, grid=grid)
        if grid is not None:
            if features is None:
                raise ValueError("the feature grid needs the initial program's features")
            grid.record(initial, features)
            grid.cells = [{grid.key(initial): initial} for _ in range(k)]
        lib.admit(initial)
        return lib

    # ------------------------------------------------------------ membership

    def members(self) -> list[int]:
        """Every program in the library, each once (islands in order, then the archive)."""
        seen: dict[int, None] = {}
        for pop in self.islands:
            seen.update(dict.fromkeys(pop))
        seen.update(dict.fromkeys(self.archive))
        return list(seen)

    def _fit(self, sid: int) -> float:
        return self.fitness.get(sid, 0.0)

    def _better(self, a: int, b: int) -> bool:
        return self._fit(a) > self._fit(b) and (self.beats is None or self.beats(a, b))

    def ranked(self, ids: list[int]) -> list[int]:
        """Best first; ties: the older (lower id) first."""
        return sorted(ids, key=lambda m: (-self._fit(m), m))

    def add(self, island: int, sid: int, fitness: float | None, features: dict | None = None) -> bool:
        """A finished iteration's child joins ``island`` (and may enter the archive) if it is correct.
        With the grid on, ``features`` (its measured values) are required and the child joins the island
        only through its cell. True when it entered the island or the archive."""
        if fitness is None or not fitness > 0:
            return False
        self.fitness[sid] = fitness
        if self.grid is None:
            if sid not in self.islands[island]:
                self.islands[island].append(sid)
                self._evict(island)
            self.admit(sid)
            return True
        if features is None and sid not in self.grid.values:
            raise ValueError(f"program {sid}: the feature grid needs its features")
        self.grid.record(sid, features)
        placed = self._place(island, sid)
        return self.admit(sid) or placed

    def _place(self, island: int, sid: int) -> bool:
        """Grid: ``sid`` takes its cell on ``island`` if the cell is empty or holds a less fit program."""
        cells = self.grid.cells[island]
        key = self.grid.key(sid)
        holder = cells.get(key)
        if holder == sid:
            return True
        if holder is not None:
            if not self._better(sid, holder):
                return False
            self._drop(island, holder)
        cells[key] = sid
        self.islands[island].append(sid)
        self._evict(island)
        return True

    def _drop(self, island: int, sid: int) -> None:
        self.islands[island].remove(sid)
        if sid in self.migrants[island]:
            self.migrants[island].remove(sid)
        if self.grid is not None:
            cells = self.grid.cells[island]
            key = self.grid.key(sid)
            if cells.get(key) == sid:
                del cells[key]

    def _evict(self, island: int) -> None:
        """Population cap: drop the lowest fitness (the oldest of equals), never the best or the newest."""
        pop = self.islands[island]
        while len(pop) > self.population:
            newest, best = pop[-1], self.ranked(pop)[0]
            victims = [m for m in pop if m not in (newest, best)]
            if not victims:
                return
            self._drop(island, min(victims, key=lambda m: (self._fit(m), pop.index(m))))

    def admit(self, sid: int) -> bool:
        """Elite archive: admit while not full; when full, replace its worst only if ``sid`` is better."""
        if sid in self.archive or self.archive_size <= 0 or not self._fit(sid) > 0:
            return False
        if len(self.archive) < self.archive_size:
            self.archive.append(sid)
            return True
        worst = min(self.archive, key=lambda m: (self._fit(m), self.archive.index(m)))  # the oldest of equals
        if self._better(sid, worst):
            self.archive[self.archive.index(worst)] = sid
            return True
        return False

    # ------------------------------------------------------------ sampling

    def sample_parent(self, island: int, rng: random.Random, exploration: float, exploitation: float) -> int:
        """r < exploration: uniform over the island's population (with the grid: over its occupied
        cells); r < exploration + exploitation: uniform over the archive, restricted to its members on
        this island when there are any; else uniform over the whole library. Not fitness-weighted."""
        r = rng.random()
        pop = self.islands[island]
        if r < exploration:
            pool = self.grid.occupants(island) if self.grid is not None else pop
            self.drawn_from = "explore"
        elif r < exploration + exploitation:
            pool = [m for m in self.archive if m in pop] or list(self.archive)
            self.drawn_from = "exploit"
        else:
            pool = self.members()
            self.drawn_from = "random"
        pool = pool or pop or [REFERENCE]
        return rng.choice(pool)

    def top(self, island: int, n: int) -> list[int]:
        """The island's ``n`` best programs, the reference left out (it is in every prompt anyway)."""
        return [m for m in self.ranked(self.islands[island]) if m != REFERENCE][: max(0, n)]

    def inspirations(self, island: int, n: int, elite_ratio: float, rng: random.Random, exclude: set[int],
                     near: int | None = None) -> list[int]:
        """Up to ``n`` more programs for the prompt, OpenEvolve-style: the archive's best (a share
        ``elite_ratio`` of ``n``, at least one), then (grid) occupants of the cells next to ``near``'s
        (the parent's), then random members of the island."""
        if n <= 0:
            return []
        out: list[int] = []
        taken = set(exclude) | {REFERENCE}
        for m in self.ranked(self.archive):
            if len(out) >= max(1, int(n * elite_ratio)):
                break
            if m not in taken:
                out.append(m)
                taken.add(m)
        rest = [m for m in self.islands[island] if m not in taken]
        rng.shuffle(rest)
        if self.grid is not None and near is not None:
            close = [m for m in self.grid.neighbours(island, near) if m not in taken]
            rng.shuffle(close)
            rest = close + [m for m in rest if m not in close]
        return out + rest[: n - len(out)]

    # ------------------------------------------------------------ migration

    def finished_iteration(self, island: int, interval: int, rate: float) -> list[tuple[int, int, int]]:
        """Count an iteration of ``island``; migrate when some island has done ``interval`` more since
        the last migration. Returns the copies made."""
        self.generations[island] += 1
        if len(self.islands) < 2 or interval <= 0 or max(self.generations) - self.last_migration < interval:
            return []
        self.last_migration = max(self.generations)
        return self.migrate(rate)

    def migrate(self, rate: float) -> list[tuple[int, int, int]]:
        """Each island copies its top max(1, int(n * rate)) own programs (migrants are not migrated
        again) to its ring neighbours, where they are marked as migrants (with the grid: where they win
        their cell)."""
        k = len(self.islands)
        if k < 2:
            return []
        before = [list(p) for p in self.islands]
        moves = []
        for i, pop in enumerate(before):
            natives = [m for m in pop if m not in self.migrants[i]]
            top = self.ranked(natives)[: max(1, int(len(pop) * rate))]
            for target in sorted({(i + 1) % k, (i - 1) % k} - {i}):
                for m in top:
                    if m in self.islands[target]:
                        continue
                    if self.grid is not None:
                        if not self._place(target, m):
                            continue
                    else:
                        self.islands[target].append(m)
                        self._evict(target)
                    self.migrants[target].append(m)
                    moves.append((m, i, target))
        self.migrations += 1
        self.moves += [list(mv) for mv in moves]
        return moves

    # ------------------------------------------------------------ persistence

    def to_json(self) -> dict:
        d = {"islands": self.islands, "migrants": self.migrants, "archive": self.archive,
             "generations": self.generations, "last_migration": self.last_migration,
             "migrations": self.migrations, "moves": self.moves}
        if self.grid is not None:
            d["grid"] = self.grid.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict, population: int, archive: int) -> "Library":
        return cls([list(p) for p in d["islands"]], [list(p) for p in d["migrants"]], list(d["archive"]),
                   max(1, population), max(0, archive), {}, list(d["generations"]), d.get("last_migration", 0),
                   d.get("migrations", 0), [list(m) for m in d.get("moves", [])],
                   Grid.from_json(d["grid"]) if d.get("grid") else None)
