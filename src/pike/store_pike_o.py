"""PIKE-O's state in the run store: its iterations, islands, archive, migrations and MAP-Elites
features as rows (the tables ``pike_o*`` of :data:`pike.store.SCHEMA`), read back on resume.

The exchange form is the dict of :meth:`pike.search.library.Library.to_json` plus the strategy's own
fields (``next_iteration``, ``pending``: iteration -> island, ``parents``: iteration -> parent,
``drawn``: iteration -> where its parent was drawn from, ``rng``: the random stream's state) and, when
saving, ``finished``: iteration -> (status, child id) of iterations that left ``pending`` since the last
save. One save is one transaction, so an iteration leaves ``pending`` and joins the library together.
Program id 0 is the task's own Model (the reference), as in the library.
"""

from __future__ import annotations

import json
import sqlite3

FEATURE_COLUMNS = ("complexity", "diversity", "backend")


def write(db: sqlite3.Connection, task_id: int, d: dict) -> None:
    """``d`` into the tables, inside the caller's transaction."""
    grid = d.get("grid")
    db.execute("INSERT OR REPLACE INTO pike_o(task_id, next_iteration, last_migration, migrations, grid_features,"
               " grid_bins, rng) VALUES (?, ?, ?, ?, ?, ?, ?)",
               (task_id, d.get("next_iteration", 0), d.get("last_migration", 0), d.get("migrations", 0),
                ",".join(grid["features"]) if grid else None, grid["bins"] if grid else None,
                json.dumps(d["rng"]) if d.get("rng") else None))
    for table in ("pike_o_islands", "pike_o_members", "pike_o_moves", "pike_o_features"):
        db.execute(f"DELETE FROM {table} WHERE task_id = ?", (task_id,))
    db.executemany("INSERT INTO pike_o_islands(task_id, island, generations) VALUES (?, ?, ?)",
                   [(task_id, i, g) for i, g in enumerate(d["generations"])])
    cells = [{sid: key for key, sid in c.items()} for c in grid["cells"]] if grid else None
    # migrant: its place among the island's migrants (None: a native)
    rows = [(task_id, i, pos, sid, d["migrants"][i].index(sid) if sid in d["migrants"][i] else None,
             cells[i].get(sid) if cells else None)
            for i, pop in enumerate(d["islands"]) for pos, sid in enumerate(pop)]
    rows += [(task_id, None, pos, sid, None, None) for pos, sid in enumerate(d["archive"])]
    db.executemany("INSERT INTO pike_o_members(task_id, island, position, solution_id, migrant, cell)"
                   " VALUES (?, ?, ?, ?, ?, ?)", rows)
    db.executemany("INSERT INTO pike_o_moves(task_id, n, solution_id, source, target) VALUES (?, ?, ?, ?, ?)",
                   [(task_id, n, m, a, b) for n, (m, a, b) in enumerate(d.get("moves", []))])
    if grid:
        anchors = grid["anchors"]
        db.executemany(
            "INSERT INTO pike_o_features(task_id, solution_id, complexity, diversity, backend, anchor)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(task_id, int(sid), *(v.get(c) for c in FEATURE_COLUMNS), anchors.index(int(sid)) if int(sid) in anchors else None)
             for sid, v in grid["values"].items()])
    for n, (status, child) in (d.get("finished") or {}).items():
        db.execute("UPDATE pike_o_iterations SET status = ?, child_id = ? WHERE task_id = ? AND n = ?",
                   (status, child, task_id, int(n)))
    parents, drawn = d.get("parents", {}), d.get("drawn", {})
    for n, island in d.get("pending", {}).items():
        db.execute("INSERT INTO pike_o_iterations(task_id, n, island, parent_id, drawn_from, status)"
                   " VALUES (?, ?, ?, ?, ?, 'pending') ON CONFLICT(task_id, n) DO NOTHING",
                   (task_id, int(n), island, parents.get(n, parents.get(str(n))), drawn.get(n, drawn.get(str(n)))))


def read(db: sqlite3.Connection, task_id: int) -> dict | None:
    """The dict ``write`` was given (without ``finished``), or None where the task has no PIKE-O state."""
    head = db.execute("SELECT * FROM pike_o WHERE task_id = ?", (task_id,)).fetchone()
    if head is None:
        return None
    head = dict(zip([c[0] for c in db.execute("SELECT * FROM pike_o LIMIT 0").description], head))
    generations = [r[0] for r in db.execute("SELECT generations FROM pike_o_islands WHERE task_id = ? ORDER BY island",
                                            (task_id,))]
    k = len(generations)
    islands: list[list[int]] = [[] for _ in range(k)]
    migrants: list[list[tuple[int, int]]] = [[] for _ in range(k)]
    cells: list[dict[str, int]] = [{} for _ in range(k)]
    archive = []
    for island, sid, migrant, cell in db.execute(
            "SELECT island, solution_id, migrant, cell FROM pike_o_members WHERE task_id = ? ORDER BY island, position",
            (task_id,)):
        if island is None:
            archive.append(sid)
            continue
        islands[island].append(sid)
        if migrant is not None:
            migrants[island].append((migrant, sid))
        if cell is not None:
            cells[island][cell] = sid
    moves = [list(r) for r in db.execute("SELECT solution_id, source, target FROM pike_o_moves WHERE task_id = ?"
                                         " ORDER BY n", (task_id,))]
    d = {"islands": islands, "migrants": [[sid for _, sid in sorted(m)] for m in migrants], "archive": archive, "generations": generations,
         "last_migration": head["last_migration"], "migrations": head["migrations"], "moves": moves,
         "next_iteration": head["next_iteration"]}
    if head["rng"]:
        d["rng"] = json.loads(head["rng"])
    if head["grid_features"]:
        values, anchors = {}, []
        for sid, *feats, anchor in db.execute(
                "SELECT solution_id, complexity, diversity, backend, anchor FROM pike_o_features WHERE task_id = ?"
                " ORDER BY solution_id", (task_id,)):
            values[str(sid)] = {c: v for c, v in zip(FEATURE_COLUMNS, feats) if v is not None}
            if anchor is not None:
                anchors.append((anchor, sid))
        d["grid"] = {"features": head["grid_features"].split(","), "bins": head["grid_bins"], "cells": cells,
                     "values": values, "anchors": [sid for _, sid in sorted(anchors)]}
    pending = db.execute("SELECT n, island, parent_id, drawn_from FROM pike_o_iterations WHERE task_id = ?"
                         " AND status = 'pending' ORDER BY n", (task_id,)).fetchall()
    d["pending"] = {n: island for n, island, _, _ in pending}
    d["parents"] = {n: parent for n, _, parent, _ in pending if parent is not None}
    d["drawn"] = {n: drawn for n, _, _, drawn in pending if drawn is not None}
    return d
