"""Live progress of a run: per task, queries used, best speedup so far, valid rate, USD.

"best" is a confirmed figure: a speedup vs eager from a side-by-side re-timing, with its interval
(the search's re-timing of contenders, then the final table). "est." is the best search-time
estimate (one candidate's timing against eager measured earlier, in another process), labelled so.
"""

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
        self.batch_seen: set = set()  # (round, state) already printed

    def __call__(self, run, event: str, **info) -> None:
        row = self.rows.setdefault(run.task.name, {"status": "starting", "evaluated": 0, "ok": 0, "best": None, "est": None,
                                                   "last": "", "in_flight": {}, "unusable": 0})
        if event == "evaluating":
            row["in_flight"][info["solution"]] = (info.get("label") or "", time.monotonic())
        elif event == "cut":
            row["in_flight"].pop(info["solution"], None)
        elif event == "evaluated":
            row["in_flight"].pop(info.get("solution"), None)
            r = info["result"]
            row["evaluated"] += 1
            row["ok"] += r.ok
            sp = r.speedup_vs_eager
            if r.ok and sp and (row["est"] is None or sp > row["est"]):
                row["est"] = sp
            row["last"] = f"{r.status}" + (f" {sp:.2f}x est." if r.ok and sp else "")
            row["status"] = "searching"
        elif event == "confirmed":
            ci = info["speedup"]  # the final table's figure replaces the search's confirmations
            if info.get("final") or row["best"] is None or ci.value > row["best"].value:
                row["best"] = ci
        elif event == "preparing":  # start-up: the reference, the eager baseline (minutes for a big model)
            row["status"], row["last"] = "preparing", info.get("text", "")
            row.setdefault("prep_t0", time.monotonic())
        elif event in ("started", "done", "error", "stalled"):
            row["status"] = event if event != "started" else "searching"
            if event == "error":
                row["last"] = info.get("error", "")[:60]
        elif event == "time_limit":
            row["status"], row["last"] = "finishing", "time limit reached"
        elif event == "final_table":
            # Compiles the compile modes and re-times the finalists side by side: minutes on big tasks.
            row["status"], row["final_t0"] = "final table", time.monotonic()
        elif event == "no_code":  # a reply with nothing usable: counted against the valid rate
            row["unusable"] += 1
            row["last"] = f"{info.get('role')} reply unusable: {info.get('error', '')}"[:60]
        elif event == "warning":
            row["last"] = info.get("error", "")[:60]
        elif event == "llm_error":
            row["last"] = f"{info.get('role')}: {info.get('error', '')[:50]}"
        elif event == "phase":
            row["phase"] = info.get("phase")
        elif event == "batch":  # a batch round's state (pike.llm.rounds): the same for every task
            n, state = info["round"], info["state"]
            text = f"batch round {n} ({info['count']} requests): {state}"
            row["batch"] = None if state == "collected" else (text, time.monotonic() - info["age_s"])
            for problem in info.get("problems", []):
                self.console.print(f"batch round {n}: {problem}", highlight=False)
            if self.live is None and (n, state) not in self.batch_seen:
                self.batch_seen.add((n, state))
                self.console.print(f"{text} after {info['age_s']:.0f} s", highlight=False)
        self.pool_stats = getattr(run.pool, "stats", None)
        row["queries"] = run.budget.queries_used
        row["usd"] = run.store.spent(run.task_id)[1]
        if self.live is not None:
            self.live.refresh()
        elif event == "final_table":
            self.console.print(f"{run.task.label}: final table (compile baselines and the finalists, re-timed side by side)", highlight=False)
        elif event == "preparing":
            self.console.print(f"{run.task.label}: preparing: {row['last']} ({time.monotonic() - row['prep_t0']:.0f} s)", highlight=False)
        elif event in ("evaluated", "confirmed", "no_code", "done", "error", "stalled", "time_limit"):
            self.console.print(f"{run.task.label}: {event} {row['last']} (queries {row['queries']}, {self.best_text(row)})", highlight=False)

    @staticmethod
    def best_text(row: dict) -> str:
        best = f"best {row['best'].text()} confirmed" if row["best"] is not None else "best: none confirmed yet"
        return best + (f", search est. {row['est']:.2f}x" if row["est"] else "")

    @staticmethod
    def now_doing(row: dict) -> str:
        """What the task is waiting on, with its seconds so far: the oldest evaluation in flight (and
        how many more), or the final table; else the last result."""
        now = time.monotonic()
        if row["status"] == "final table" and "final_t0" in row:
            return f"final table, {now - row['final_t0']:.0f} s"
        if row["status"] == "preparing":
            return f"{row['last']}, {now - row['prep_t0']:.0f} s"
        if not row["in_flight"]:
            if row.get("batch"):
                text, t0 = row["batch"]
                return f"{text}, {now - t0:.0f} s"
            return row["last"]
        label, t0 = min(row["in_flight"].values(), key=lambda v: v[1])
        more = len(row["in_flight"]) - 1
        return f"{label[:40]}, {now - t0:.0f} s" + (f" (+{more})" if more else "")

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
        cells = {name: {
            "task": name, "status": r["status"], "phase": str(r.get("phase", "-")), "queries": str(r.get("queries", 0)),
            "evals": str(r["evaluated"]), "no code": str(r["unusable"]),
            "valid": f"{r['ok'] / (r['evaluated'] + r['unusable']):.0%}" if r["evaluated"] + r["unusable"] else "-",
            "best": r["best"].text() if r["best"] is not None else "-",
            "est.": f"~{r['est']:.2f}x" if r["est"] else "-", "USD": f"{r.get('usd', 0):.3f}", "latest": self.now_doing(r),
        } for name, r in self.rows.items()}
        # A run with no LLM (offline) has no phases, queries or dollars: those columns would only take
        # the width that the task's name and what it is doing need on an 80-column terminal.
        unused = {"phase": "-", "queries": "0", "USD": "0.000", "no code": "0"}
        cols = [c for c in ("task", "status", "phase", "queries", "evals", "no code", "valid", "best", "est.", "USD", "latest")
                if c not in unused or any(row[c] != unused[c] for row in cells.values())]
        for col in cols:
            t.add_column(col, justify="left" if col in ("task", "status", "latest") else "right",
                         no_wrap=col in ("task", "status"), overflow="fold" if col == "latest" else "ellipsis")
        for row in cells.values():
            t.add_row(*(row[c] for c in cols))
        return t

    def __enter__(self):
        if self.console.is_terminal:
            # Rebuilt at every refresh, so the elapsed seconds run on between events.
            self.live = Live(console=self.console, refresh_per_second=4, transient=True, get_renderable=self.table)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)
            self.live = None
