"""Where a child job is: its stage, how far, since when (``progress.json`` in its job directory).

A big model's reference job runs for minutes (import, building the model, each input set, the
probes); the child writes each stage as it starts, and the orchestrator shows it while waiting and
names it when the job runs out of time or memory. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

FILE = "progress.json"


class Progress:
    """The child's side: ``progress("input sets", 3, 9)`` before each step."""

    def __init__(self, job_dir: Path):
        self.path = Path(job_dir) / FILE
        self.t0 = time.monotonic()

    def __call__(self, stage: str, done: int | None = None, total: int | None = None, note: str = "") -> None:
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"stage": stage, "done": done, "total": total, "note": note,
                                       "elapsed_s": round(time.monotonic() - self.t0, 1)}))
            os.replace(tmp, self.path)
        except OSError:  # the job directory is gone: nobody is watching
            pass


def read(job_dir: Path) -> dict | None:
    try:
        return json.loads((Path(job_dir) / FILE).read_text())
    except (OSError, ValueError):
        return None


def describe(p: dict | None) -> str:
    """"input sets 3/9 (12 s in)" or ""."""
    if not p:
        return ""
    text = p["stage"] + (f" {p['done']}/{p['total']}" if p.get("total") else "")
    text += f" ({p['note']})" if p.get("note") else ""
    return text + f", {p['elapsed_s']:.0f} s into the job"


class Watcher:
    """The orchestrator's side, around a running job: calls ``on_change(progress)`` when the child
    reports a new stage (polled, from a thread); ``last`` is the last one seen."""

    def __init__(self, job_dir: Path, on_change=None, every_s: float = 0.5):
        self.job_dir, self.on_change, self.every_s = Path(job_dir), on_change, every_s
        self.last: dict | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> dict | None:
        p = read(self.job_dir)
        if p is not None and p != self.last:
            self.last = p
            if self.on_change is not None:
                self.on_change(p)
        return self.last

    def __enter__(self):
        if self.on_change is not None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="pike-progress")
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.poll()

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()
