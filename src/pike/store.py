"""The run store: one SQLite file per run holding everything needed to report, resume and replay.

Tables: ``meta`` (config, prices, versions, device), ``tasks``, ``solutions`` (code and lineage; the
search's ``phase`` and ``branch``), ``variants`` (an offline solution's knobs), ``evaluations`` (every
evaluator result), ``retimings`` (every side-by-side re-timing: ``contenders`` during the search,
``final`` for the final table), PIKE-O's ``pike_o*`` (:mod:`pike.store_pike_o`) and ``exchanges``
(every LLM exchange with tokens, cost and latency; a row is written *before* its request is sent, so a run killed with the
request in flight still counts it as spent when it resumes). An exchange leads to its candidate
(``solution_id``: the extracted code and, through the solution, its verdict) or says why its reply
was unusable (``unusable``); a re-ask names the exchange it repeats (``reask_of``).

A batch round (``rounds``, :mod:`pike.llm.rounds`) lists the exchanges that went out together and
where they went (a file, a provider's batch id); its exchanges name it (``batch_round``).

Writes are committed immediately (WAL mode): a ``kill -9`` loses nothing that had finished.

The schema's version is the file's ``PRAGMA user_version`` (``SCHEMA_VERSION``); a store of an older
version is migrated when it is opened (:mod:`pike.store_migration`): in place by a writer, in a copy in
memory by a read-only reader.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pike import store_pike_o
from pike.evaluate import stats
from pike.evaluate.result import EvalResult
from pike.knobs import FLAGS, VariantKnobs
from pike.store_migration import insert_variant, migrate

SCHEMA_VERSION = 2  # PRAGMA user_version of a store this code writes; older stores are migrated on open
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, path TEXT, size TEXT, source TEXT NOT NULL,
    key TEXT, baselines TEXT, state TEXT, status TEXT DEFAULT 'pending', error TEXT, updated REAL
);
CREATE TABLE IF NOT EXISTS solutions (
    id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL REFERENCES tasks(id), parent_id INTEGER,
    origin TEXT NOT NULL, idea TEXT, code TEXT NOT NULL, code_hash TEXT NOT NULL,
    phase INTEGER, branch INTEGER, island INTEGER, fix_of INTEGER, attempt INTEGER DEFAULT 0,
    status TEXT DEFAULT 'pending', runtime_ms REAL, speedup_eager REAL, tags TEXT, created REAL
);
CREATE INDEX IF NOT EXISTS solutions_task ON solutions(task_id, phase, branch);
CREATE TABLE IF NOT EXISTS variants (
    solution_id INTEGER PRIMARY KEY REFERENCES solutions(id), compile_mode TEXT, autocast TEXT,
    tf32 INTEGER NOT NULL DEFAULT 0, cuda_graph INTEGER NOT NULL DEFAULT 0,
    channels_last INTEGER NOT NULL DEFAULT 0, cudnn_benchmark INTEGER NOT NULL DEFAULT 0, precision TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY, solution_id INTEGER NOT NULL REFERENCES solutions(id), kind TEXT,
    status TEXT, result TEXT NOT NULL, created REAL
);
CREATE TABLE IF NOT EXISTS retimings (
    id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL REFERENCES tasks(id), window INTEGER NOT NULL,
    purpose TEXT NOT NULL, solution_id INTEGER, baseline TEXT, ms REAL, speedup REAL, lo REAL, hi REAL,
    rounds INTEGER, paired INTEGER, samples TEXT, created REAL
);
CREATE INDEX IF NOT EXISTS retimings_task ON retimings(task_id, purpose, window);
CREATE TABLE IF NOT EXISTS exchanges (
    id INTEGER PRIMARY KEY, task_id INTEGER, solution_id INTEGER, role TEXT, model TEXT,
    phase INTEGER, branch INTEGER, prompt TEXT, response TEXT, input_tokens INTEGER, output_tokens INTEGER,
    cost_usd REAL, reserved_usd REAL, latency_s REAL, attempts INTEGER, error TEXT,
    status TEXT DEFAULT 'pending', created REAL, finished REAL, unusable TEXT, reask_of INTEGER,
    batch_round INTEGER
);
CREATE INDEX IF NOT EXISTS exchanges_task ON exchanges(task_id);
CREATE TABLE IF NOT EXISTS pike_o (
    task_id INTEGER PRIMARY KEY REFERENCES tasks(id), next_iteration INTEGER NOT NULL, last_migration INTEGER NOT NULL,
    migrations INTEGER NOT NULL, grid_features TEXT, grid_bins INTEGER, rng TEXT
);
CREATE TABLE IF NOT EXISTS pike_o_iterations (
    task_id INTEGER NOT NULL REFERENCES tasks(id), n INTEGER NOT NULL, island INTEGER NOT NULL, parent_id INTEGER,
    drawn_from TEXT, child_id INTEGER, status TEXT NOT NULL, PRIMARY KEY (task_id, n)
);
CREATE TABLE IF NOT EXISTS pike_o_islands (
    task_id INTEGER NOT NULL REFERENCES tasks(id), island INTEGER NOT NULL, generations INTEGER NOT NULL,
    PRIMARY KEY (task_id, island)
);
CREATE TABLE IF NOT EXISTS pike_o_members (
    task_id INTEGER NOT NULL REFERENCES tasks(id), island INTEGER, position INTEGER NOT NULL,
    solution_id INTEGER NOT NULL, migrant INTEGER, cell TEXT
);
CREATE INDEX IF NOT EXISTS pike_o_members_task ON pike_o_members(task_id);
CREATE TABLE IF NOT EXISTS pike_o_moves (
    task_id INTEGER NOT NULL REFERENCES tasks(id), n INTEGER NOT NULL, solution_id INTEGER NOT NULL,
    source INTEGER NOT NULL, target INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pike_o_features (
    task_id INTEGER NOT NULL REFERENCES tasks(id), solution_id INTEGER NOT NULL, complexity INTEGER, diversity REAL,
    backend TEXT, anchor INTEGER, PRIMARY KEY (task_id, solution_id)
);
CREATE TABLE IF NOT EXISTS rounds (
    n INTEGER PRIMARY KEY, mode TEXT NOT NULL, ref TEXT, status TEXT DEFAULT 'sending', exchanges TEXT,
    error TEXT, created REAL, submitted REAL, collected REAL
);
"""


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()[:16]


@dataclass
class Solution:
    id: int
    task_id: int
    parent_id: int | None
    origin: str  # reference, offline, iba, coa, efa, seed
    idea: str | None
    code: str
    phase: int | None  # PIKE-B: the phase; PIKE-O: the iteration
    branch: int | None  # PIKE-B: the branch of its phase (PIKE-O: 0); a chain of fixes shares it
    island: int | None
    fix_of: int | None
    attempt: int
    status: str
    runtime_ms: float | None
    speedup_eager: float | None
    tags: list[str]
    created: float
    knobs: VariantKnobs | None = None  # an offline variant's knobs (None: not an offline variant)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def connect_readonly(db: Path, **kw) -> sqlite3.Connection:
    """A connection that cannot write. Where no ``-wal`` file exists no connection is writing the
    store, so it is opened as immutable (a read-only connection to a WAL database would otherwise
    leave ``-wal`` and ``-shm`` files behind); a live run is read through SQLite's read-only locking.
    A store of an older schema is read through a migrated copy in memory (it is never written to).
    sqlite3.Error where the file is not a readable store."""
    live = db.with_name(db.name + "-wal").exists()
    uri = f"{db.resolve().as_uri()}?mode=ro" + ("" if live else "&immutable=1")
    conn = sqlite3.connect(uri, uri=True, **kw)
    conn.row_factory = sqlite3.Row
    if 0 < _version(conn) < SCHEMA_VERSION:
        return _migrated_copy(conn, **kw)
    return conn


def _version(db: sqlite3.Connection) -> int:
    """The store's schema version: PRAGMA user_version, where 0 with tables is a store of before versions (1)."""
    v = db.execute("PRAGMA user_version").fetchone()[0]
    if v == 0 and db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'").fetchone():
        return 1
    return v


def _upgrade(db: sqlite3.Connection) -> None:
    """A new store gets the schema; an older one is migrated in place, in one transaction."""
    if _version(db) == SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        version = _version(db)  # again under the write lock: another process may have just upgraded it
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"{SCHEMA_VERSION=} of this PIKE is older than the store's ({version}):"
                                        " read it with the PIKE that wrote it")
        if version == 0:
            _script(db, SCHEMA)
        elif version < SCHEMA_VERSION:
            migrate(db, version, lambda: _script(db, SCHEMA))
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _script(db: sqlite3.Connection, script: str) -> None:
    """The statements of ``script`` inside the caller's transaction (executescript would commit it)."""
    for stmt in script.split(";"):
        if stmt.strip():
            db.execute(stmt)


def _migrated_copy(db: sqlite3.Connection, **kw) -> sqlite3.Connection:
    """An older store read without writing to it: migrated in a copy in memory, which cannot be written."""
    mem = sqlite3.connect(":memory:", **{**kw, "isolation_level": None})
    db.backup(mem)
    db.close()
    mem.row_factory = sqlite3.Row
    _upgrade(mem)
    mem.execute("PRAGMA query_only = ON")
    return mem


def confirmed_speedups(conn: sqlite3.Connection, task_id: int) -> dict[int, stats.Interval]:
    """Solution id -> its speedup vs eager from the latest side-by-side re-timing of the search that had it."""
    rows = conn.execute("SELECT solution_id, speedup, lo, hi, rounds, paired FROM retimings WHERE task_id = ?"
                        " AND purpose = 'contenders' AND speedup IS NOT NULL AND solution_id IS NOT NULL"
                        " ORDER BY window, id", (task_id,)).fetchall()
    return {r[0]: stats.Interval(r[1], r[2], r[3], r[4], bool(r[5])) for r in rows}


_SOLUTIONS = ("SELECT s.*, v.compile_mode, v.autocast, v.tf32, v.cuda_graph, v.channels_last, v.cudnn_benchmark,"
              " v.precision FROM solutions s LEFT JOIN variants v ON v.solution_id = s.id")


class Store:
    def __init__(self, path: str | Path, *, readonly: bool = False):
        """``readonly``: read an existing store without writing to it (no schema, no pragma, no
        ``-wal``/``-shm`` files left behind where none were there); any write raises
        ``sqlite3.OperationalError``."""
        self.path = Path(path)
        self._lock = threading.Lock()
        self._claimed: set[int] = set()  # round exchanges claimed back by this invocation
        if readonly:
            self._db = connect_readonly(self.path, check_same_thread=False)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        _upgrade(self._db)

    def _x(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------ meta

    def set_meta(self, key: str, value: Any) -> None:
        self._x("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._x("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row["value"]) if row else default

    # ------------------------------------------------------------ tasks

    def add_task(self, name: str, path: str, size: str | None, source: str, key: str) -> int:
        row = self._x("SELECT id FROM tasks WHERE name = ?", (name,)).fetchone()
        if row:
            return row["id"]
        cur = self._x(
            "INSERT INTO tasks(name, path, size, source, key, updated) VALUES (?, ?, ?, ?, ?, ?)",
            (name, path, size, source, key, time.time()),
        )
        return cur.lastrowid

    def tasks(self) -> list[sqlite3.Row]:
        return self._x("SELECT * FROM tasks ORDER BY id").fetchall()

    def task(self, task_id: int) -> sqlite3.Row:
        return self._x("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()

    def task_id(self, name: str) -> int | None:
        row = self._x("SELECT id FROM tasks WHERE name = ?", (name,)).fetchone()
        return row["id"] if row else None

    def set_task(self, task_id: int, **fields: Any) -> None:
        cols = []
        vals = []
        for k, v in fields.items():
            cols.append(f"{k} = ?")
            vals.append(json.dumps(v) if k in ("baselines", "state") else v)
        self._x(f"UPDATE tasks SET {', '.join(cols)}, updated = ? WHERE id = ?", (*vals, time.time(), task_id))

    def task_json(self, task_id: int, field: str) -> Any:
        row = self.task(task_id)
        return json.loads(row[field]) if row and row[field] else None

    # ------------------------------------------------------------ solutions

    def add_solution(
        self, task_id: int, code: str, origin: str, *, parent_id: int | None = None, idea: str | None = None,
        phase: int | None = None, branch: int | None = None, island: int | None = None,
        fix_of: int | None = None, attempt: int = 0, knobs: VariantKnobs | None = None,
    ) -> int:
        """A new solution; ``knobs``: an offline variant's, recorded with it in one step."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                cur = self._db.execute(
                    "INSERT INTO solutions(task_id, parent_id, origin, idea, code, code_hash, phase, branch, island, fix_of,"
                    " attempt, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (task_id, parent_id, origin, idea, code, code_hash(code), phase, branch, island, fix_of, attempt,
                     time.time()))
                if knobs is not None:
                    insert_variant(self._db, cur.lastrowid, knobs)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return cur.lastrowid

    def record_evaluation(self, solution_id: int, result: EvalResult, kind: str = "search") -> None:
        self._x(
            "INSERT INTO evaluations(solution_id, kind, status, result, created) VALUES (?, ?, ?, ?, ?)",
            (solution_id, kind, result.status, json.dumps(result.to_json()), time.time()),
        )
        if kind == "search":
            self._x(
                "UPDATE solutions SET status = ?, runtime_ms = ?, speedup_eager = ?, tags = ? WHERE id = ?",
                (result.status, result.runtime_ms, result.speedup_vs_eager, json.dumps(result.tags), solution_id),
            )

    def _solution(self, row: sqlite3.Row) -> Solution:
        return Solution(
            id=row["id"], task_id=row["task_id"], parent_id=row["parent_id"], origin=row["origin"], idea=row["idea"],
            code=row["code"], phase=row["phase"], branch=row["branch"], island=row["island"], fix_of=row["fix_of"],
            attempt=row["attempt"], status=row["status"], runtime_ms=row["runtime_ms"], speedup_eager=row["speedup_eager"],
            tags=json.loads(row["tags"]) if row["tags"] else [], created=row["created"],
            knobs=None if row["precision"] is None else VariantKnobs(
                row["compile_mode"], row["autocast"], **{k: bool(row[k]) for k in FLAGS}),
        )

    def solutions(self, task_id: int) -> list[Solution]:
        rows = self._x(f"{_SOLUTIONS} WHERE s.task_id = ? ORDER BY s.id", (task_id,)).fetchall()
        return [self._solution(r) for r in rows]

    def solution(self, solution_id: int) -> Solution:
        return self._solution(self._x(f"{_SOLUTIONS} WHERE s.id = ?", (solution_id,)).fetchone())

    # ------------------------------------------------------------ side-by-side re-timings

    def add_retiming(self, task_id: int, purpose: str, rows: list[dict]) -> int:
        """One re-timing window: its entries timed side by side (``purpose``: ``contenders`` during the
        search, ``final`` for the final table). Each row: ``solution_id`` or ``baseline`` (eager,
        compile:MODE), ``samples`` (ms per round) and ``speedup`` (an Interval vs eager, if any).
        Returns the window's number (per task and purpose, from 1)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                window = self._db.execute("SELECT COALESCE(MAX(window), 0) + 1 FROM retimings WHERE task_id = ? AND purpose = ?",
                                          (task_id, purpose)).fetchone()[0]
                now = time.time()
                for r in rows:
                    ci, samples = r.get("speedup"), r.get("samples") or []
                    self._db.execute(
                        "INSERT INTO retimings(task_id, window, purpose, solution_id, baseline, ms, speedup, lo, hi, rounds,"
                        " paired, samples, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (task_id, window, purpose, r.get("solution_id"), r.get("baseline"),
                         stats.median(samples) if samples else None, ci.value if ci else None, ci.lo if ci else None,
                         ci.hi if ci else None, ci.n if ci else len(samples), None if ci is None else int(ci.paired),
                         json.dumps(samples),
                         now))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return window

    def confirmed(self, task_id: int) -> dict[int, stats.Interval]:
        with self._lock:
            return confirmed_speedups(self._db, task_id)

    def retimings(self, task_id: int, purpose: str = "contenders") -> list[sqlite3.Row]:
        """A task's re-timing rows of ``purpose``, oldest window first."""
        return self._x("SELECT * FROM retimings WHERE task_id = ? AND purpose = ? ORDER BY window, id",
                       (task_id, purpose)).fetchall()

    # ------------------------------------------------------------ PIKE-O

    def pike_o(self, task_id: int) -> dict | None:
        """PIKE-O's library and iterations of a task (:mod:`pike.store_pike_o`), None before its first save."""
        with self._lock:
            return store_pike_o.read(self._db, task_id)

    def save_pike_o(self, task_id: int, state: dict) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                store_pike_o.write(self._db, task_id, state)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def pike_o_iterations(self, task_id: int) -> list[sqlite3.Row]:
        return self._x("SELECT * FROM pike_o_iterations WHERE task_id = ? ORDER BY n", (task_id,)).fetchall()

    def evaluation(self, solution_id: int, kind: str = "search") -> EvalResult | None:
        row = self._x(
            "SELECT result FROM evaluations WHERE solution_id = ? AND kind = ? ORDER BY id DESC LIMIT 1", (solution_id, kind)
        ).fetchone()
        return EvalResult.from_json(json.loads(row["result"])) if row else None

    def evaluated_at(self, task_id: int) -> dict[int, float]:
        """Solution id -> when its search evaluation was recorded (the first, where there are several)."""
        rows = self._x("SELECT e.solution_id AS sid, MIN(e.created) AS at FROM evaluations e JOIN solutions s"
                       " ON s.id = e.solution_id WHERE s.task_id = ? AND e.kind = 'search' GROUP BY e.solution_id",
                       (task_id,)).fetchall()
        return {r["sid"]: r["at"] for r in rows if r["at"] is not None}

    # ------------------------------------------------------------ LLM exchanges

    def start_exchange(self, role: str, model: str, messages: list[dict], reserved_usd: float, meta: dict | None = None) -> int:
        meta = meta or {}
        cur = self._x(
            "INSERT INTO exchanges(task_id, solution_id, role, model, phase, branch, prompt, reserved_usd, status, created, reask_of)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
            (meta.get("task_id"), meta.get("solution_id"), role, model, meta.get("phase"), meta.get("branch"),
             json.dumps(messages), reserved_usd, time.time(), meta.get("reask_of")),
        )
        return cur.lastrowid

    def finish_exchange(self, exchange_id: int, completion, error: str | None, attempts: int) -> None:
        c = completion
        self._x(
            "UPDATE exchanges SET response = ?, input_tokens = ?, output_tokens = ?, cost_usd = ?, latency_s = ?,"
            " attempts = ?, error = ?, status = ?, finished = ? WHERE id = ?",
            (c.text if c else None, c.input_tokens if c else 0, c.output_tokens if c else 0, c.cost_usd if c else 0.0,
             c.latency_s if c else None, attempts, error, "failed" if error else "done", time.time(), exchange_id),
        )

    def link_exchange(self, exchange_id: int, solution_id: int) -> None:
        self._x("UPDATE exchanges SET solution_id = ? WHERE id = ?", (solution_id, exchange_id))

    # ------------------------------------------------------------ batch rounds

    def add_round(self, mode: str, exchange_ids: list[int]) -> int:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                cur = self._db.execute("INSERT INTO rounds(mode, exchanges, created) VALUES (?, ?, ?)",
                                       (mode, json.dumps(exchange_ids), time.time()))
                n = cur.lastrowid
                self._db.executemany("UPDATE exchanges SET batch_round = ? WHERE id = ?", [(n, i) for i in exchange_ids])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return n

    def set_round(self, n: int, **fields: Any) -> None:
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._x(f"UPDATE rounds SET {cols} WHERE n = ?", (*fields.values(), n))

    def round(self, n: int) -> dict | None:
        row = self._x("SELECT * FROM rounds WHERE n = ?", (n,)).fetchone()
        return dict(row) if row else None

    def rounds(self) -> list[dict]:
        return [dict(r) for r in self._x("SELECT * FROM rounds ORDER BY n").fetchall()]

    def claim_exchange(self, role: str, meta: dict) -> tuple[int, float, int] | None:
        """The query a batch round holds for this place in the search (task, role, phase, branch, re-ask)
        still waiting for its reply, if any: (exchange id, reserved USD, round). Each once."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, reserved_usd, batch_round FROM exchanges WHERE status = 'pending' AND batch_round IS NOT NULL"
                " AND role = ? AND task_id IS ? AND phase IS ? AND branch IS ? AND reask_of IS ? ORDER BY id",
                (role, meta.get("task_id"), meta.get("phase"), meta.get("branch"), meta.get("reask_of"))).fetchall()
            for r in rows:
                if r["id"] not in self._claimed:
                    self._claimed.add(r["id"])
                    return r["id"], r["reserved_usd"] or 0.0, r["batch_round"]
        return None

    def mark_unusable(self, exchange_id: int, reason: str) -> None:
        """Why nothing could be taken from this exchange's reply (no code block, code that does not parse...)."""
        self._x("UPDATE exchanges SET unusable = ? WHERE id = ?", (reason, exchange_id))

    def unusable(self, task_id: int, roles: tuple[str, ...] = ("coa", "efa")) -> list[str]:
        """The reasons of a task's replies that gave nothing usable, in order."""
        rows = self._x(f"SELECT unusable FROM exchanges WHERE task_id = ? AND unusable IS NOT NULL"
                       f" AND role IN ({', '.join('?' * len(roles))}) ORDER BY id", (task_id, *roles)).fetchall()
        return [r["unusable"] for r in rows]

    def exchanges(self, task_id: int | None = None) -> list[sqlite3.Row]:
        if task_id is None:
            return self._x("SELECT * FROM exchanges ORDER BY id").fetchall()
        return self._x("SELECT * FROM exchanges WHERE task_id = ? ORDER BY id", (task_id,)).fetchall()

    def spent(self, task_id: int | None = None, roles: tuple[str, ...] | None = None, *,
              outside_rounds: bool = False) -> tuple[int, float]:
        """(queries, USD) spent: finished exchanges at their cost, pending ones (in flight at a kill) at
        their reservation. ``outside_rounds``: without the pending ones of batch rounds, which a
        resumed search counts when it claims them back."""
        where, args = [], []
        if outside_rounds:
            where.append("NOT (status = 'pending' AND batch_round IS NOT NULL)")
        if task_id is not None:
            where.append("task_id = ?")
            args.append(task_id)
        if roles:
            where.append(f"role IN ({', '.join('?' * len(roles))})")
            args.extend(roles)
        sql = "SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN status = 'pending' THEN reserved_usd ELSE cost_usd END), 0) AS usd FROM exchanges"
        if where:
            sql += " WHERE " + " AND ".join(where)
        row = self._x(sql, tuple(args)).fetchone()
        return row["n"], float(row["usd"])


class StoreRecorder:
    """The LLM client's recorder, writing to the store with the caller's context (task, phase, branch)."""

    def __init__(self, store: Store, meta: dict | None = None):
        self.store = store
        self.meta = meta or {}
        self.last_id: int | None = None

    def start(self, role: str, model: str, messages: list[dict], reserved_usd: float) -> int:
        self.last_id = self.store.start_exchange(role, model, messages, reserved_usd, self.meta)
        return self.last_id

    def claim(self, role: str) -> tuple[int, float, int] | None:
        """A query of a batch round that an earlier invocation sent from this place (see Store.claim_exchange)."""
        held = self.store.claim_exchange(role, self.meta)
        if held is not None:
            self.last_id = held[0]
        return held

    def finish(self, record_id: int, completion, error: str | None, attempts: int) -> None:
        self.store.finish_exchange(record_id, completion, error, attempts)
