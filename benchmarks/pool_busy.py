"""Pool utilisation under a realistic LLM latency (issue: scale-out), one `pike optimize` run per setting.

    PYTHONPATH=src python3 benchmarks/pool_busy.py --gpus 0 --out busy_1gpu.json
    PYTHONPATH=src python3 benchmarks/pool_busy.py --gpus 0,1 --out busy_2gpu.json

Runs the real CLI on several built-in tasks at once with the scripted stand-in LLM
(benchmarks/scripted_llm.py: 20-60 s per reply, a fixed mix of candidates; not an LLM, so nothing
here says anything about search quality), then reads from the run's store: each GPU's held fraction
(a candidate on it: checks and timing) and timing fraction (in the timing loop), candidates evaluated,
and candidates per GPU-hour over the whole run, start-up and final re-timing included.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from pike.suites import BUILTIN_DIR

HERE = Path(__file__).resolve().parent
TASKS = ["gpt2_block", "llama_decoder_block", "convnext_block", "mlp_shallow_wide", "gated_rmsnorm", "dit_block"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--gpus", default="0")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", default="default")
    ap.add_argument("--budget", type=int, default=12, help="LLM queries per task")
    ap.add_argument("--concurrency", type=int, default=24, help="LLM requests in flight, over all tasks")
    ap.add_argument("--strategy", default="pike-o")
    ap.add_argument("--min", type=float, default=20.0)
    ap.add_argument("--max", type=float, default=60.0)
    ap.add_argument("--seconds", type=float, default=None,
                    help="stop the run (SIGINT) after this long and read the utilisation recorded so far")
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--out", default="pool_busy.json")
    a = ap.parse_args()

    work = Path(a.run_dir or f"/tmp/pike-busy-{os.getpid()}")
    tasks_dir = work / "tasks"
    tasks_dir.mkdir(parents=True, exist_ok=True)
    names = a.tasks.split(",")
    for n in names:
        (tasks_dir / f"{n}.py").write_text((BUILTIN_DIR / f"{n}.py").read_text())
    llm = f"cmd:{shlex.quote(sys.executable)} {HERE / 'scripted_llm.py'} --min {a.min} --max {a.max} --device {a.device.split(':')[0]}"
    cmd = [sys.executable, "-m", "pike", "optimize", str(tasks_dir), "--llm", llm, "--strategy", a.strategy,
           "--budget", str(a.budget), "--device", a.device, "--size", a.size, "--out", str(work / "run"),
           "--set", f"llm.concurrency={a.concurrency}", "--json"]
    if a.device.startswith("cuda"):
        cmd += ["--gpus", a.gpus]
    t0 = time.monotonic()
    log = open(work / "optimize.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        proc.wait(timeout=a.seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # the engine writes its final pool record on the way out
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    wall = time.monotonic() - t0
    log.close()
    log_text = (work / "optimize.log").read_text()

    db = sqlite3.connect(work / "run" / "run.db")
    db.row_factory = sqlite3.Row
    pool = json.loads(db.execute("select value from meta where key='pool'").fetchone()[0])
    evaluated = db.execute("select status, count(*) n from evaluations where kind='search' group by status").fetchall()
    n_eval = sum(r["n"] for r in evaluated)
    gpus = len(pool["devices"])
    # The search proper: from the first record at which every task was past its start-up
    # (references, eager and compile baselines) to the end of the run.
    hist = pool.get("history") or []
    window = None
    searching = [h for h in hist if len(h) > 4 and h[4] >= len(names)]
    if searching and searching[0] is not hist[-1]:
        h0, h1 = searching[0], hist[-1]
        dt = h1[0] - h0[0]
        since = pool["started_at"] + h0[0]
        n_win = db.execute("select count(*) from evaluations where kind='search' and created >= ?", (since,)).fetchone()[0]
        window = {"from_s": h0[0], "to_s": h1[0], "held_fraction": [(y - x) / dt for x, y in zip(h0[1], h1[1])],
                  "timing_fraction": [(y - x) / dt for x, y in zip(h0[2], h1[2])], "evaluated": n_win,
                  "per_minute": 60 * n_win / dt, "per_gpu_hour": 3600 * n_win / dt / gpus}
    doc = {
        "command": cmd, "rc": proc.returncode, "wall_s": wall, "tasks": names, "budget_per_task": a.budget,
        "concurrency": a.concurrency, "strategy": a.strategy, "latency_s": [a.min, a.max], "pool": pool,
        "evaluations": {r["status"]: r["n"] for r in evaluated}, "evaluated": n_eval,
        "per_gpu_hour": n_eval / (gpus * pool["wall_s"] / 3600) if pool["wall_s"] else None,
        "per_minute": 60 * n_eval / pool["wall_s"] if pool["wall_s"] else None,
        "log_tail": log_text[-3000:], "stopped_after_s": a.seconds, "searching": window,
    }
    Path(a.out).write_text(json.dumps(doc, indent=1))
    held = ", ".join(f"{x:.0%}" for x in pool["held_fraction"])
    timing = ", ".join(f"{x:.0%}" for x in pool["timing_fraction"])
    print(f"rc={proc.returncode} gpus={pool['devices']} wall={pool['wall_s']:.0f}s evaluated={n_eval} "
          f"({doc['per_minute']:.2f}/min, {doc['per_gpu_hour']:.0f}/GPU-hour) held=[{held}] timing=[{timing}] "
          f"builds={pool['builds']} statuses={doc['evaluations']}")
    if window is None:
        print("start-up did not finish for every task before the run stopped: no search window to report")
    else:
        print(f"search window ({window['from_s']:.0f}-{window['to_s']:.0f} s): evaluated={window['evaluated']} "
              f"({window['per_minute']:.2f}/min) held=[{', '.join(f'{x:.0%}' for x in window['held_fraction'])}] "
              f"timing=[{', '.join(f'{x:.0%}' for x in window['timing_fraction'])}]")


if __name__ == "__main__":
    main()
