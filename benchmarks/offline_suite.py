"""The offline optimizer on the built-in suite, one task at a time (issue: offline optimizer).

    PYTHONPATH=src python3 benchmarks/offline_suite.py --device cuda --out offline.jsonl [--tasks a,b]

Runs the real CLI (`pike optimize TASK`, no LLM: the offline portfolio) on each task in turn and
appends one JSON line per task run (the last one counts): the final table's row (eager, best compile mode and the
winner, re-timed side by side), every variant's status and time from the run's store, and how long
the task took. Resumable: tasks done in --out are skipped, and a task stopped by --task-minutes
(or killed) is resumed from its run directory, so a run cut into several calls continues where it
stopped. The summary (geomean vs eager and vs the best single compile mode) is
printed from the whole file.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from pike.suites import BUILTIN_DIR

# Spread over tiers and kinds first, so that a partial run still covers the suite's range.
FIRST = ["mlp_shallow_wide", "gpt2_block", "convnext_block", "llama_decoder_block", "lstm_stack",
         "resnet_bottleneck_block", "mamba_selective_scan", "dit_block", "causal_self_attention", "kv_cache_decode"]


def suite_order() -> list[str]:
    names = sorted(p.stem for p in BUILTIN_DIR.glob("*.py") if not p.name.startswith("_"))
    return [n for n in FIRST if n in names] + [n for n in names if n not in FIRST]


def variant_rows(db_path: Path) -> list[dict]:
    db = sqlite3.connect(db_path)
    db.row_factory = sqlite3.Row
    rows = db.execute("select s.idea, s.status, s.runtime_ms, s.speedup_eager, e.result from solutions s "
                      "left join evaluations e on e.solution_id = s.id and e.kind = 'search' order by s.id").fetchall()
    out = []
    for r in rows:
        res = json.loads(r["result"]) if r["result"] else {}
        out.append({"variant": r["idea"], "status": r["status"], "ms": r["runtime_ms"], "speedup_eager": r["speedup_eager"],
                    "message": (res.get("message") or "")[:200], "total_s": (res.get("durations_s") or {}).get("total_s")})
    return out


def latest(path: Path) -> dict[str, dict]:
    """The last record of each task (a task cut by --task-minutes has several)."""
    out: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                r["total_wall_s"] = out.get(r["task"], {}).get("total_wall_s", 0.0) + r["wall_s"]
                out[r["task"]] = r
    return out


def summary(path: Path) -> str:
    rows = list(latest(path).values())
    done = [r for r in rows if r.get("row") and r["row"].get("speedup_eager")]
    if not done:
        return "no finished task"
    lines = [f"{'task':28} {'eager ms':>9} {'best compile':>28} {'best ms':>9} {'x eager':>8} {'x compile':>9} {'min':>5}  winner"]
    for r in done:
        t = r["row"]
        lines.append(f"{t['task']:28} {t['eager_ms']:9.4f} {str(t.get('best_compile_mode')):>18} {t.get('best_compile_ms') or float('nan'):9.4f} "
                     f"{t['best_ms']:9.4f} {t['speedup_eager']:8.2f} {t.get('speedup_best_compile') or float('nan'):9.2f} "
                     f"{r['total_wall_s'] / 60:5.1f}  {r.get('winner')}")
    ge = math.exp(sum(math.log(r["row"]["speedup_eager"]) for r in done) / len(done))
    bc = [r["row"]["speedup_best_compile"] for r in done if r["row"].get("speedup_best_compile")]
    gc = math.exp(sum(math.log(x) for x in bc) / len(bc)) if bc else float("nan")
    stopped = [r["task"] for r in done if r["row"].get("status") == "stopped"]
    if stopped:
        lines.append(f"cut by the time limit (partial portfolio, resumed by the next call): {', '.join(stopped)}")
    lines.append(f"{len(done)} tasks: geomean {ge:.3f}x vs eager, {gc:.3f}x vs the best single compile mode; "
                 f"below 1.0x vs eager: {sum(r['row']['speedup_eager'] < 1.0 for r in done)}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default=None, help="comma-separated (default: the whole built-in suite)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="offline_suite.jsonl")
    ap.add_argument("--runs", default="/tmp/pike-offline-runs")
    ap.add_argument("--deadline", type=float, default=None, help="start no task after this many seconds")
    ap.add_argument("--task-minutes", type=float, default=None,
                    help="pike optimize --time-limit for each task (a stopped task is resumed by the next call)")
    a = ap.parse_args()
    out = Path(a.out)
    done = {name for name, r in latest(out).items() if r.get("row", {}).get("status") == "done"}
    t_start = time.monotonic()
    for name in (a.tasks.split(",") if a.tasks else suite_order()):
        if name in done:
            continue
        if a.deadline is not None and time.monotonic() - t_start > a.deadline:
            break
        run_dir = Path(a.runs) / name
        cmd = [sys.executable, "-m", "pike", "optimize", name, "--device", a.device, "--json"]
        cmd += ["--resume", str(run_dir)] if (run_dir / "run.db").exists() else ["--out", str(run_dir)]
        if a.task_minutes:
            cmd += ["--time-limit", str(a.task_minutes)]
        t0 = time.monotonic()
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.monotonic() - t0
        rec: dict = {"task": name, "rc": p.returncode, "wall_s": wall}
        try:
            table = json.loads(p.stdout[p.stdout.index("{"):])
            rec["row"] = table["rows"][0]
        except (ValueError, KeyError, IndexError):
            rec["error"] = (p.stdout[-1500:] + p.stderr[-1500:])
        if (run_dir / "run.db").exists():
            rec["variants"] = variant_rows(run_dir / "run.db")
            best = (run_dir / "best" / f"{name}.py")
            if best.exists():
                head = best.read_text().split("# ==== PIKE offline variant: ", 1)
                rec["winner"] = head[1].split(" ", 1)[0] if len(head) > 1 else "eager"
        with out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"{name}: rc={p.returncode} {wall:.0f} s winner={rec.get('winner')} "
              f"x_eager={rec.get('row', {}).get('speedup_eager')}", flush=True)
    print(summary(out))


if __name__ == "__main__":
    main()
