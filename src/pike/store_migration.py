"""Upgrades of an older run store to the current schema (``pike.store.SCHEMA_VERSION``), applied in
place, in the opener's transaction, when the store is opened.

Version 1 (the stores before versions, PRAGMA user_version 0) kept run state in strings and JSON: a
branch of a phase in a column called ``slot``, an offline variant's knobs only in its display name
(``idea``, knobs joined by ``+``), the side-by-side re-timings in ``tasks.state`` (``confirmed``,
``window``, ``retimed``) and PIKE-O's iterations and library in ``tasks.state["pike_o"]``. Version 2
holds them in columns and tables; this is the one place that reads the old forms.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
from typing import Callable

from pike import store_pike_o
from pike.knobs import VariantKnobs


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in db.execute(f"PRAGMA table_info({table})")}


def migrate(db: sqlite3.Connection, version: int, create_schema: Callable[[], None]) -> None:
    """From ``version`` to the current one; ``create_schema`` creates what is missing of the current schema."""
    if version < 2:
        _v1_to_v2(db, create_schema)


def _v1_to_v2(db: sqlite3.Connection, create_schema: Callable[[], None]) -> None:
    have = _columns(db, "exchanges")  # empty where the table is missing: created below, complete
    for name, kind in (("unusable", "TEXT"), ("reask_of", "INTEGER"), ("batch_round", "INTEGER")):
        if have and name not in have:  # columns added to version 1 over time
            db.execute(f"ALTER TABLE exchanges ADD COLUMN {name} {kind}")
    for table in ("solutions", "exchanges"):
        if "slot" in _columns(db, table):
            db.execute(f"ALTER TABLE {table} RENAME COLUMN slot TO branch")
    create_schema()
    _variants_from_names(db)
    for task_id, text in db.execute("SELECT id, state FROM tasks WHERE state IS NOT NULL").fetchall():
        state = json.loads(text) if text else None
        if isinstance(state, dict):
            _retimings_from_state(db, task_id, state)
            if isinstance(state.get("pike_o"), dict):
                store_pike_o.write(db, task_id, state.pop("pike_o"))
            db.execute("UPDATE tasks SET state = ? WHERE id = ?", (json.dumps(state), task_id))


def _variants_from_names(db: sqlite3.Connection) -> None:
    """An offline solution's knobs, from its name: ``eager`` or knob names joined by ``+``."""
    rows = db.execute("SELECT s.id, s.idea FROM solutions s LEFT JOIN variants v ON v.solution_id = s.id"
                      " WHERE s.origin = 'offline' AND v.solution_id IS NULL").fetchall()
    for sid, name in rows:
        names = () if name in (None, "", "eager") else tuple(name.split("+"))
        try:
            knobs = VariantKnobs.of(names)
        except ValueError:
            continue  # a name this version cannot read: left without knobs (shown by its name)
        insert_variant(db, sid, knobs)


def insert_variant(db: sqlite3.Connection, solution_id: int, knobs: VariantKnobs) -> None:
    db.execute("INSERT INTO variants(solution_id, compile_mode, autocast, tf32, cuda_graph, channels_last,"
               " cudnn_benchmark, precision) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (solution_id, knobs.compile_mode, knobs.autocast, int(knobs.tf32), int(knobs.cuda_graph),
                int(knobs.channels_last), int(knobs.cudnn_benchmark), knobs.precision))


def _retimings_from_state(db: sqlite3.Connection, task_id: int, state: dict) -> None:
    """``confirmed`` (solution -> interval vs eager of its latest re-timing), ``window`` (the samples of
    the latest re-timing's members) and ``retimed`` (solution -> ms, from before intervals) as rows:
    window 1 for the latest re-timing, 0 for what earlier ones confirmed."""
    confirmed = state.pop("confirmed", None) or {}
    window = state.pop("window", None) or {}
    retimed = state.pop("retimed", None) or {}
    for key, ms in retimed.items():
        if key not in confirmed:
            db.execute("INSERT INTO retimings(task_id, window, purpose, solution_id, ms) VALUES (?, 0, 'contenders', ?, ?)",
                       (task_id, int(key), ms))
    for key, ci in confirmed.items():
        samples = window.get(key)
        db.execute(
            "INSERT INTO retimings(task_id, window, purpose, solution_id, ms, speedup, lo, hi, rounds, paired, samples)"
            " VALUES (?, ?, 'contenders', ?, ?, ?, ?, ?, ?, ?, ?)",
            (task_id, 1 if samples else 0, int(key), statistics.median(samples) if samples else None, ci["value"],
             ci["lo"], ci["hi"], ci["n"], int(ci.get("paired", True)), json.dumps(samples) if samples else None))
