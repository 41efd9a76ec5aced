"""The live progress display: what each task is evaluating, for how long, and its final table."""

from __future__ import annotations

import io
from types import SimpleNamespace

from rich.console import Console

from pike.evaluate.result import EvalResult, Timing
from pike.search.progress import RunProgress


def _run():
    task = SimpleNamespace(name="lstm_stack", label="lstm_stack")
    return SimpleNamespace(task=task, task_id=1, budget=SimpleNamespace(queries_used=0),
                           store=SimpleNamespace(spent=lambda tid: (0, 0.0)), pool=None)


def _text(progress) -> str:
    out = io.StringIO()
    Console(file=out, width=200).print(progress.table())
    return out.getvalue()


def test_progress_names_the_evaluation_in_flight_and_the_final_table(monkeypatch):
    import pike.search.progress as progress_mod

    clock = [100.0]
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: clock[0])
    log = io.StringIO()
    progress, run = RunProgress(Console(file=log, width=200)), _run()
    progress(run, "started")
    progress(run, "evaluating", solution=7, label="compile:reduce-overhead")
    clock[0] += 142
    # A compile in flight shows with its seconds so far (the table is rebuilt at every refresh).
    assert "compile:reduce-overhead, 142 s" in _text(progress)
    progress(run, "evaluating", solution=8, label="tf32+cuda_graph")
    assert "(+1)" in _text(progress)
    result = EvalResult(status="ok", timing=Timing(median_ms=5.0, iqr_ms=0.0, runs=5), eager_ms=15.0)
    progress(run, "evaluated", solution=7, result=result)
    progress(run, "cut", solution=8)  # stopped at the time limit: no longer in flight
    assert "compile:" not in _text(progress) and "cuda_graph" not in _text(progress) and "ok 3.00x est." in _text(progress)
    # A search estimate is labelled as one; "best" waits for a side-by-side re-timing.
    assert "~3.00x" in _text(progress) and "best: none confirmed yet, search est. 3.00x" in log.getvalue()
    progress(run, "final_table")
    clock[0] += 30
    assert "final table, 30 s" in _text(progress)
    from pike.evaluate.stats import Interval

    progress(run, "confirmed", solution=7, speedup=Interval(2.1, 2.0, 2.2, 40), final=True)
    assert "2.10x [2.00-2.20]" in _text(progress) and "best 2.10x [2.00-2.20] confirmed" in log.getvalue()
    # Without a terminal, the final table gets its own line in the log.
    assert "lstm_stack: final table" in log.getvalue()


def test_live_display_on_a_terminal_starts_and_stops():
    out = io.StringIO()
    progress, run = RunProgress(Console(file=out, force_terminal=True, width=200)), _run()
    with progress:
        assert progress.live is not None
        progress(run, "evaluating", solution=1, label="eager")
    assert progress.live is None


def test_a_reply_without_code_is_shown_and_counts_against_the_valid_rate():
    log = io.StringIO()
    progress, run = RunProgress(Console(file=log, width=200)), _run()
    progress(run, "started")
    progress(run, "evaluated", solution=1, result=EvalResult(status="ok", timing=Timing(median_ms=5.0, iqr_ms=0.0, runs=5), eager_ms=10.0))
    progress(run, "no_code", role="coa", error="no code block", reask=False)
    text = _text(progress)
    assert "no code" in text and "50%" in text  # one candidate valid of one candidate and one unusable reply
    assert "lstm_stack: no_code coa reply unusable: no code block" in log.getvalue()


def _sol(**kw):
    base = dict(id=12, origin="coa", idea="Fuse the bias add into the matmul with addmm.", phase=1, parent_id=4, fix_of=None)
    return SimpleNamespace(**{**base, **kw})


def test_candidates_are_named_by_id_idea_parent_and_phase():
    from pike.search.progress import candidate_text

    assert candidate_text(_sol()) == "#12 (coa, phase 1, from #4): Fuse the bias add into the matmul with addmm."
    assert candidate_text(_sol(id=13, origin="efa", idea=None, fix_of=12)) == "#13 (efa, phase 1, fixing #12)"
    assert candidate_text(_sol(id=3, origin="offline", idea="compile:default", phase=None, parent_id=None)) == "#3 variant compile:default"
    assert candidate_text(_sol(idea="x" * 100)).endswith("x" * 60 + "...")


def test_the_log_names_the_candidate_and_says_what_is_awaited(monkeypatch):
    import pike.search.progress as progress_mod

    clock = [100.0]
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: clock[0])
    log = io.StringIO()
    progress, run = RunProgress(Console(file=log, width=80), quiet_s=30), _run()
    progress(run, "started")
    progress(run, "asking", role="coa")
    clock[0] += 31
    progress.heartbeat()  # nothing evaluated for 31 s: the log says why
    assert "lstm_stack: waiting for the LLM: 1 reply pending, the oldest 31 s" in log.getvalue()
    progress(run, "answered", role="coa")
    progress(run, "evaluating", solution=12, label="coa #12", candidate=progress_mod.candidate_text(_sol()))
    clock[0] += 40
    progress.heartbeat()
    assert "lstm_stack: evaluating #12 (coa, phase 1, from #4): Fuse the bias add" in log.getvalue()
    result = EvalResult(status="ok", timing=Timing(median_ms=5.0, iqr_ms=0.0, runs=5), eager_ms=10.0)
    progress(run, "evaluated", solution=12, result=result)
    line = log.getvalue().splitlines()[-1]  # one line, however long, for grep
    assert line.startswith("lstm_stack: evaluated #12 (coa, phase 1, from #4): Fuse the bias add into the matmul with addmm.: ok 2.00x est.")
    said = log.getvalue()
    progress.heartbeat()  # just said something: no heartbeat yet
    assert log.getvalue() == said


def test_live_table_fits_80_columns_with_whole_figures():
    from pike.evaluate.stats import Interval

    progress = RunProgress(Console(file=io.StringIO(), width=80))
    run = _run()
    run.budget.queries_used = 123
    run.store = SimpleNamespace(spent=lambda tid: (123, 4.567))
    progress(run, "started")
    progress(run, "phase", phase=7)
    progress(run, "confirmed", solution=3, speedup=Interval(12.34, 11.02, 13.87, 40))
    progress(run, "evaluating", solution=9, label="coa #9", candidate="#9 (coa, phase 7, from #3)")
    out = io.StringIO()
    Console(file=out, width=80).print(progress.table())
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines) and "…" not in out.getvalue()
    assert "12.34x [11.02-13.87]" in out.getvalue() and "lstm_stack" in out.getvalue()
    wide = io.StringIO()
    progress.console = Console(file=io.StringIO(), width=200)
    Console(file=wide, width=200).print(progress.table())
    assert "USD" in wide.getvalue() and "queries" in wide.getvalue()  # with the room, every column
