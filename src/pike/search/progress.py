"""Live progress of a run: per task, queries used, best speedup so far, valid rate, USD."""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.table import Table


class RunProgress:
    def __init__(self, console: Console, pool_stats=None):
        self.console = console
        self.live: Live | None = None
        self.rows: dict[str, dict] = {}
        self.t0 = time.monotonic()
        self.pool_stats = pool_stats

    def __call__(self, run, event: str, **info) -> None:
        row = self.rows.setdefault(run.task.name, {"status": "starting", "evaluated": 0, "ok": 0, "best": None, "last": ""})
        if event == "evaluated":
            r = info["result"]
            row["evaluated"] += 1
            row["ok"] += r.ok
            sp = r.speedup_vs_eager
            if r.ok and sp and (row["best"] is None or sp > row["best"]):
                row["best"] = sp
            row["last"] = f"{r.status}" + (f" {sp:.2f}x" if r.ok and sp else "")
            row["status"] = "searching"
        elif event in ("started", "done", "error", "stalled"):
            row["status"] = event if event != "started" else "searching"
            if event == "error":
                row["last"] = info.get("error", "")[:60]
        elif event == "time_limit":
            row["status"], row["last"] = "finishing", "time limit reached"
        elif event == "llm_error":
            row["last"] = f"{info.get('role')}: {info.get('error', '')[:50]}"
        elif event == "phase":
            row["phase"] = info.get("phase")
        self.pool_stats = getattr(run.pool, "stats", None)
        row["queries"] = run.budget.queries_used
        row["usd"] = run.store.spent(run.task_id)[1]
        if self.live is not None:
            self.live.update(self.table())
        elif event in ("evaluated", "done", "error", "stalled", "time_limit"):
            self.console.print(f"{run.task.label}: {event} {row['last']} (queries {row['queries']}, best {row['best'] or 0:.2f}x)", highlight=False)

    def table(self) -> Table:
        title = f"pike optimize ({time.monotonic() - self.t0:.0f} s)"
        st = self.pool_stats
        if st is not None:
            held = ", ".join(f"{u:.0%}" for u in st.utilisation())
            title += f"  evaluation slots held: {held}; waiting {st.waiting}, building {st.building}"
            active = st.activity.fractions() if st.activity is not None else []
            if any(a is not None for a in active):
                title += "; kernels active: " + ", ".join("-" if a is None else f"{a:.0%}" for a in active)
        t = Table(title=title, expand=False)
        for col in ("task", "status", "phase", "queries", "evaluated", "valid", "best vs eager", "USD", "last"):
            t.add_column(col, justify="right" if col not in ("task", "status", "last") else "left")
        for name, r in self.rows.items():
            valid = f"{r['ok'] / r['evaluated']:.0%}" if r["evaluated"] else "-"
            t.add_row(name, r["status"], str(r.get("phase", "-")), str(r.get("queries", 0)), str(r["evaluated"]), valid,
                      f"{r['best']:.2f}x" if r["best"] else "-", f"{r.get('usd', 0):.3f}", r["last"])
        return t

    def __enter__(self):
        if self.console.is_terminal:
            self.live = Live(self.table(), console=self.console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)
            self.live = None
