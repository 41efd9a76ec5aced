"""Live progress of a run: per task, queries used, best speedup so far, valid rate, USD.

"best" is a confirmed figure: a speedup vs eager from a side-by-side re-timing, with its interval
(the search's re-timing of contenders, then the final table). "est." is the best search-time
estimate (one candidate's timing against eager measured earlier, in another process), labelled so.
"""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

QUIET_S = 30.0  # without a terminal: a line on what each task is doing after this long without one


def candidate_text(sol) -> str:
    """A candidate named for the log and the final table: its id, what made it (an offline variant, an
    agent and its phase), its parent or the candidate it fixes, and its idea."""
    if sol.origin == "offline":
        return f"#{sol.id} variant {sol.idea}"
    parts = [sol.origin]
    if sol.phase is not None:
        parts.append(f"phase {sol.phase}")
    if sol.fix_of is not None:
        parts.append(f"fixing #{sol.fix_of}")
    elif sol.parent_id is not None:
        parts.append(f"from #{sol.parent_id}")
    idea = " ".join((sol.idea or "").split())
    return f"#{sol.id} ({', '.join(parts)})" + (f": {idea[:60]}{'...' if len(idea) > 60 else ''}" if idea else "")


class RunProgress:
    def __init__(self, console: Console, pool_stats=None, quiet_s: float = QUIET_S):
        self.console = console
        self.live: Live | None = None
        self.rows: dict[str, dict] = {}
        self.t0 = time.monotonic()
        self.pool_stats = pool_stats
        self.quiet_s = quiet_s
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self.said = time.monotonic()  # the last line without a terminal
        self.batch_seen: set = set()  # (round, state) already printed

    def __call__(self, run, event: str, **info) -> None:
        row = self.rows.setdefault(run.task.name, {"status": "starting", "evaluated": 0, "ok": 0, "best": None, "est": None,
                                                   "last": "", "in_flight": {}, "unusable": 0, "asking": [],
                                                   "label": run.task.label, "said": time.monotonic()})
        candidate = ""
        if event == "evaluating":
            row["in_flight"][info["solution"]] = (info.get("label") or "", time.monotonic(), info.get("candidate") or "")
        elif event == "cut":
            row["in_flight"].pop(info["solution"], None)
        elif event == "evaluated":
            candidate = (row["in_flight"].pop(info.get("solution"), None) or ("", 0, ""))[2] or f"#{info.get('solution')}"
            r = info["result"]
            row["evaluated"] += 1
            row["ok"] += r.ok
            sp = r.speedup_vs_eager
            if r.ok and sp and (row["est"] is None or sp > row["est"]):
                row["est"] = sp
            row["last"] = f"#{info.get('solution')} {r.status}" + (f" {sp:.2f}x est." if r.ok and sp else "")
            row["status"] = "searching"
        elif event == "asking":
            row["asking"].append(time.monotonic())
        elif event == "answered":
            if row["asking"]:
                row["asking"].pop(0)
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
            self.console.print(f"{run.task.label}: final table (compile baselines and the finalists, re-timed side by side)",
                               highlight=False, soft_wrap=True)
        elif event == "preparing":
            self.console.print(f"{run.task.label}: preparing: {row['last']} ({time.monotonic() - row['prep_t0']:.0f} s)",
                               highlight=False, soft_wrap=True)
        elif event == "evaluated":
            r = info["result"]
            sp = r.speedup_vs_eager
            verdict = r.status + (f" {sp:.2f}x est." if r.ok and sp else "")
            self._say(row, f"{run.task.label}: evaluated {candidate}: {verdict} (queries {row['queries']}, {self.best_text(row)})")
        elif event in ("confirmed", "no_code", "done", "error", "stalled", "time_limit"):
            if event == "confirmed":
                who = "in the final table" if info.get("final") else f"#{info.get('solution')}"
                what = f"{who}: {info['speedup'].text()}"
            else:
                what = "" if event == "done" else row["last"]
            self._say(row, f"{run.task.label}: {event}{' ' + what if what else ''} (queries {row['queries']}, {self.best_text(row)})")
        if self.live is None and event in ("final_table", "preparing", "started"):
            row["said"] = self.said = time.monotonic()

    def _say(self, row: dict, line: str) -> None:
        row["said"] = self.said = time.monotonic()
        self.console.print(line, highlight=False, soft_wrap=True)  # one line each, for grep

    def waiting_text(self, row: dict) -> str:
        """What a task is doing when no result has come for a while (the log's heartbeat)."""
        now = time.monotonic()
        if row["status"] in ("preparing", "final table") or row["in_flight"]:
            doing = self.now_doing(row, full=True)
        elif row["asking"]:
            n = len(row["asking"])
            doing = f"waiting for the LLM: {n} repl{'ies' if n > 1 else 'y'} pending, the oldest {now - row['asking'][0]:.0f} s"
        else:
            doing = f"{row['status']}" + (f", last: {row['last']}" if row["last"] else "")
        return f"{row['label']}: {doing} (queries {row.get('queries', 0)}, {self.best_text(row)})"

    def heartbeat(self) -> None:
        """Without a terminal: a line for each task that has been quiet for ``quiet_s`` (and one for
        the run before any task has started: the evaluation pool's start-up)."""
        now = time.monotonic()
        if not self.rows and now - self.said >= self.quiet_s:
            self.said = now
            self.console.print(f"starting the evaluation pool and probing the device ({now - self.t0:.0f} s)", highlight=False,
                               soft_wrap=True)
        for row in list(self.rows.values()):
            if row["status"] not in ("done", "error") and now - row["said"] >= self.quiet_s:
                self._say(row, self.waiting_text(row))

    def _tick(self) -> None:
        while not self._stop.wait(min(5.0, self.quiet_s / 2)):
            try:
                self.heartbeat()
            except RuntimeError:  # a row changed under this thread: the next tick tells
                pass

    @staticmethod
    def best_text(row: dict) -> str:
        best = f"best {row['best'].text()} confirmed" if row["best"] is not None else "best: none confirmed yet"
        return best + (f", search est. {row['est']:.2f}x" if row["est"] else "")

    @staticmethod
    def now_doing(row: dict, full: bool = False) -> str:
        """What the task is waiting on, with its seconds so far: the oldest evaluation in flight (and
        how many more), or the final table; else the last result. ``full``: the candidate named whole
        (the log), not its short label (the table)."""
        now = time.monotonic()
        if row["status"] == "final table" and "final_t0" in row:
            return f"final table, {now - row['final_t0']:.0f} s"
        if row["status"] == "preparing":
            return f"{'preparing: ' if full else ''}{row['last']}, {now - row['prep_t0']:.0f} s"
        if not row["in_flight"]:
            if row.get("batch"):
                text, t0 = row["batch"]
                return f"{text}, {now - t0:.0f} s"
            return row["last"]
        label, t0, candidate = min(row["in_flight"].values(), key=lambda v: v[1])
        more = len(row["in_flight"]) - 1
        if full:
            return f"evaluating {candidate or label}, {now - t0:.0f} s" + (f" (and {more} more)" if more else "")
        return f"{label[:40]}, {now - t0:.0f} s" + (f" (+{more})" if more else "")

    # Dropped first when the table is wider than the terminal (the task, its status, the confirmed
    # best and what it is doing stay).
    DROP_ORDER = ("no code", "USD", "phase", "est.", "valid", "queries", "evals")

    def table(self) -> Table:
        title = f"pike optimize, {time.monotonic() - self.t0:.0f} s"
        st = self.pool_stats
        caption = None
        if st is not None:
            caption = f"slots held {', '.join(f'{u:.0%}' for u in st.utilisation())}; waiting {st.waiting}, building {st.building}"
            active = st.activity.fractions() if st.activity is not None else []
            if any(a is not None for a in active):
                caption += "; kernels active " + ", ".join("-" if a is None else f"{a:.0%}" for a in active)
        cells = {name: {
            "task": name, "status": r["status"], "phase": str(r.get("phase", "-")), "queries": str(r.get("queries", 0)),
            "evals": str(r["evaluated"]), "no code": str(r["unusable"]),
            "valid": f"{r['ok'] / (r['evaluated'] + r['unusable']):.0%}" if r["evaluated"] + r["unusable"] else "-",
            "best": r["best"].text() if r["best"] is not None else "-",
            "est.": f"~{r['est']:.2f}x" if r["est"] else "-", "USD": f"{r.get('usd', 0):.3f}", "latest": self.now_doing(r),
        } for name, r in self.rows.items()}
        # A run with no LLM (offline) has no phases, queries or dollars: those columns would only take
        # the width that the task's name and what it is doing need.
        unused = {"phase": "-", "queries": "0", "USD": "0.000", "no code": "0"}
        cols = [c for c in ("task", "status", "phase", "queries", "evals", "no code", "valid", "best", "est.", "USD", "latest")
                if c not in unused or any(row[c] != unused[c] for row in cells.values())]
        width = self.console.width
        # "latest" folds onto more lines rather than widen the table; the other columns keep whole figures.
        need = lambda cs: sum(max([len(c), *(len(row[c]) for row in cells.values())]) + 3 for c in cs if c != "latest") + 24
        for col in self.DROP_ORDER:
            if need(cols) <= width:
                break
            if col in cols:
                cols.remove(col)
        t = Table(title=title, caption=caption, expand=False)
        for col in cols:
            t.add_column(col, justify="left" if col in ("task", "status", "latest") else "right",
                         no_wrap=col != "latest", overflow="fold" if col == "latest" else "ellipsis")
        for row in cells.values():
            t.add_row(*(row[c] for c in cols))
        return t

    def __enter__(self):
        if self.console.is_terminal:
            # Rebuilt at every refresh, so the elapsed seconds run on between events.
            self.live = Live(console=self.console, refresh_per_second=4, transient=True, get_renderable=self.table)
            self.live.__enter__()
        else:
            self._stop.clear()
            self._ticker = threading.Thread(target=self._tick, name="pike-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.__exit__(*exc)
            self.live = None
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._ticker = None
