"""Every LLM exchange of a run as the model saw it: the prompt, the reply, the code taken from it and
that candidate's verdict, read from the run's store without writing to it.

The store is opened read-only (:func:`pike.store.connect_readonly`): a live run can be read, and
reading leaves no file behind.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

from pike.store import connect_readonly

ROLES = ("coa", "efa", "iba")


@dataclass
class Candidate:
    """The solution an exchange's reply produced, with its search evaluation's verdict."""

    id: int
    origin: str
    status: str
    message: str  # the evaluator's one-line verdict ("correct", the mismatch, the error...)
    runtime_ms: float | None
    speedup: float | None  # vs eager, search timing; only for a correct candidate
    fix_of: int | None
    parent_id: int | None
    idea: str | None
    tags: list[str]
    code: str

    def verdict(self) -> str:
        """One line: status and message, runtime, speedup vs eager, tags."""
        parts = [f"{self.status}: {self.message}" if self.message else self.status]
        if self.runtime_ms is not None:
            parts.append(f"runtime {self.runtime_ms:.3f} ms")
        if self.speedup:
            parts.append(f"{self.speedup:.2f}x vs eager")
        if self.tags:
            parts.append("tags " + ", ".join(self.tags))
        return " · ".join(parts)


@dataclass
class Exchange:
    id: int
    task: str | None
    role: str
    model: str
    phase: int | None
    branch: int | None
    status: str  # pending (in flight at a kill), done, failed
    error: str | None  # why the request failed
    unusable: str | None  # why the reply held no usable code
    reask_of: int | None  # the exchange this one asked again
    reasked_by: int | None  # the exchange that asked this one again
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_s: float | None
    attempts: int | None
    prompt: list[dict]  # the messages sent: {"role", "content"}
    response: str | None
    candidate: Candidate | None

    def note(self) -> str:
        """What the table's last column says: no code and why, a failed request, re-asks, a fix."""
        parts = []
        if self.unusable:
            parts.append(f"no code: {self.unusable}")
        if self.error:
            parts.append(f"error: {self.error}")
        if self.reask_of is not None:
            parts.append(f"re-ask of #{self.reask_of}")
        if self.reasked_by is not None:
            parts.append(f"re-asked in #{self.reasked_by}")
        if self.candidate and self.candidate.fix_of is not None:
            parts.append(f"fixes #{self.candidate.fix_of}")
        return "; ".join(parts)

    def verdict(self) -> str:
        c = self.candidate
        return f"#{c.id} {c.status}" if c else ""

    def speedup(self) -> str:
        c = self.candidate
        return f"{c.speedup:.2f}x" if c and c.speedup else ""

    def where(self) -> str:
        return "/".join("-" if v is None else str(v) for v in (self.phase, self.branch))

    def to_json(self) -> dict:
        return asdict(self) | {"note": self.note()}


def exchange_usd(row) -> float:
    """An exchange's dollars: a finished one at its cost, one in flight at a kill at its reservation."""
    return float((row["reserved_usd"] if row["status"] == "pending" else row["cost_usd"]) or 0.0)


def store_path(run: Path) -> Path:
    return run / "run.db" if run.is_dir() else run


def connect(db: Path) -> sqlite3.Connection:
    """A read-only connection (module doc); sqlite3.Error where the file is not a readable store."""
    return connect_readonly(db)


def _prompt(text: str | None) -> list[dict]:
    if not text:
        return []
    try:
        messages = json.loads(text)
    except ValueError:
        return [{"role": "user", "content": text}]
    return messages if isinstance(messages, list) else [{"role": "user", "content": str(messages)}]


def _candidates(conn: sqlite3.Connection) -> dict[int, Candidate]:
    verdicts: dict[int, str] = {}
    for r in conn.execute("SELECT solution_id, result FROM evaluations WHERE kind = 'search' ORDER BY id"):
        try:
            verdicts[r["solution_id"]] = json.loads(r["result"]).get("message", "")
        except ValueError:
            pass
    out = {}
    for r in conn.execute("SELECT * FROM solutions WHERE id IN (SELECT solution_id FROM exchanges)"):
        out[r["id"]] = Candidate(
            id=r["id"], origin=r["origin"], status=r["status"], message=verdicts.get(r["id"], ""),
            runtime_ms=r["runtime_ms"], speedup=r["speedup_eager"] if r["status"] == "ok" else None,
            fix_of=r["fix_of"], parent_id=r["parent_id"], idea=r["idea"],
            tags=json.loads(r["tags"]) if r["tags"] else [], code=r["code"])
    return out


def read(conn: sqlite3.Connection) -> tuple[list[str], list[Exchange]]:
    """(the run's task names, its exchanges in id order)."""
    names = {r["id"]: r["name"] for r in conn.execute("SELECT id, name FROM tasks ORDER BY id")}
    candidates = _candidates(conn)
    rows = conn.execute("SELECT * FROM exchanges ORDER BY id").fetchall()
    reasked = {r["reask_of"]: r["id"] for r in rows if r["reask_of"] is not None}
    out = [Exchange(
        id=r["id"], task=names.get(r["task_id"]), role=r["role"], model=r["model"] or "", phase=r["phase"],
        branch=r["branch"], status=r["status"], error=r["error"], unusable=r["unusable"], reask_of=r["reask_of"],
        reasked_by=reasked.get(r["id"]), input_tokens=r["input_tokens"] or 0, output_tokens=r["output_tokens"] or 0,
        cost_usd=exchange_usd(r),
        latency_s=r["latency_s"], attempts=r["attempts"], prompt=_prompt(r["prompt"]), response=r["response"],
        candidate=candidates.get(r["solution_id"]) if r["solution_id"] is not None else None,
    ) for r in rows]
    return list(names.values()), out


def load(run: str | Path) -> tuple[list[str], list[Exchange]]:
    """(task names, exchanges) of the run directory (or store file) ``run``."""
    conn = connect(store_path(Path(run)))
    try:
        return read(conn)
    finally:
        conn.close()


def select(exchanges: list[Exchange], tasks: list[str] | None = None, roles: list[str] | None = None) -> list[Exchange]:
    return [e for e in exchanges if (not tasks or e.task in tasks) and (not roles or e.role in roles)]
