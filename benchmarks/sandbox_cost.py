"""Time the sandbox adds per candidate (BENCHMARKS.md, "The sandbox's cost").

    PYTHONPATH=src python3 benchmarks/sandbox_cost.py --device cpu --rounds 10 --out sandbox_cost.json

The same candidate is evaluated by two evaluators of one device, one with ``eval.sandbox = bwrap`` and
one with ``none``, alternately (A B A B ..., the first of each pair alternating). Before each
evaluation the bwrap evaluator's next instance is waited for (``spare_wait_s``: the rest of its torch
import) and ``--gap`` seconds pass, as in a search where a slot's next candidate comes from the LLM
after the last one's evaluation, so both modes run on a quiet machine. Rounds before
``--warm-after`` are reported apart (``cold``): there a candidate waits for its own instance's import
(``start_s``). Per mode: the median and quartiles of the evaluation's wall time (``total_s``) and of
its run stage (``run_s``: start, checks, timing), and of the per-round differences bwrap - none.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from pike.evaluate.evaluator import EvalConfig, Evaluator
from pike.evaluate.timing import TimingConfig
from pike.suites import BUILTIN_DIR
from pike.task import load_task

HERE = Path(__file__).resolve().parent.parent


def quartiles(xs: list[float]) -> dict:
    if not xs:
        return {}
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return {"median": statistics.median(xs), "q1": q[0], "q3": q[2], "n": len(xs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warm-after", type=int, default=2, help="rounds counted as cold (the instance spare is not started yet)")
    ap.add_argument("--gap", type=float, default=2.0, help="seconds between evaluations, once the spare is ready")
    ap.add_argument("--task", help="task file (default: tests/tasks/ln_mlp.py on the CPU, layernorm_gelu_chain on a GPU)")
    ap.add_argument("--size", default=None)
    ap.add_argument("--candidate", help="candidate file (default: the fused rewrite on the CPU, the task itself on a GPU)")
    ap.add_argument("--cache", default="/tmp/pike-sandbox-cost")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    gpu = a.device.startswith("cuda")
    task_file = Path(a.task) if a.task else (BUILTIN_DIR / "layernorm_gelu_chain.py" if gpu else HERE / "tests/tasks/ln_mlp.py")
    task = load_task(task_file, size=a.size or (None if gpu else "small"))
    source = Path(a.candidate).read_text() if a.candidate else (task.source if gpu else (HERE / "tests/candidates/ln_fused.py").read_text())
    timing = TimingConfig() if gpu else TimingConfig(warmup_ms=20, max_time_s=0.5)
    evs = {mode: Evaluator(EvalConfig(device=a.device, cache_dir=Path(a.cache), sandbox=mode, timing=timing)) for mode in ("bwrap", "none")}
    rows = []
    try:
        for ev in evs.values():
            ev.references(task)  # computed once, outside the comparison
        for i in range(a.rounds):
            order = ["bwrap", "none"] if i % 2 == 0 else ["none", "bwrap"]
            for mode in order:
                spare = evs["bwrap"].sandbox.wait_spare()
                time.sleep(a.gap)
                r = evs[mode].evaluate(task, source)
                d = r.durations_s
                rows.append({"round": i, "mode": mode, "status": r.status, "total_s": d.get("total_s"), "run_s": d.get("run_s"),
                             "start_s": d.get("start_s"), "timing_s": d.get("timing_s"), "runtime_ms": r.runtime_ms,
                             "spare_wait_s": spare, "load": os.getloadavg()[0]})
                print(json.dumps(rows[-1]), flush=True)
        fallbacks = {mode: ev.comparator_fallbacks for mode, ev in evs.items()}
        info = evs["bwrap"].device_info()
    finally:
        for ev in evs.values():
            ev.close()

    def pick(mode, key, warm):
        return [r[key] for r in rows if r["mode"] == mode and r["status"] == "ok" and (r["round"] >= a.warm_after) == warm
                and r.get(key) is not None]

    summary = {}
    for warm in (False, True):
        part = {mode: {k: quartiles(pick(mode, k, warm)) for k in ("total_s", "run_s", "start_s")} for mode in ("bwrap", "none")}
        by_round = {}
        for r in rows:
            if r["status"] == "ok" and (r["round"] >= a.warm_after) == warm:
                by_round.setdefault(r["round"], {})[r["mode"]] = r["total_s"]
        diffs = [v["bwrap"] - v["none"] for v in by_round.values() if len(v) == 2]
        part["added_s"] = quartiles(diffs)
        summary["warm" if warm else "cold"] = part
    doc = {"device": a.device, "device_name": info.get("device_name"), "task": task.label, "rounds": a.rounds, "gap_s": a.gap,
           "sandbox": info.get("sandbox"), "summary": summary, "comparator_fallbacks": fallbacks, "rows": rows,
           "date": time.strftime("%Y-%m-%d %H:%M")}
    Path(a.out).write_text(json.dumps(doc, indent=1))
    print(json.dumps({"summary": summary, "comparator_fallbacks": fallbacks}, indent=1))


if __name__ == "__main__":
    main()
