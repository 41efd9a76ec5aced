"""The offline optimizer on the built-in suite, one task at a time (issue: offline optimizer).

    PYTHONPATH=src python3 benchmarks/offline_suite.py --device cuda --out offline.jsonl [--tasks a,b]

Runs the real CLI (`pike optimize TASK`, no LLM: the offline portfolio) on each task in turn and
appends one JSON line per task run (the last one counts): the final table's row (eager, best compile mode and the
winner, re-timed side by side), every variant's status and time from the run's store, and how long
the task took. Resumable: tasks done in --out are skipped, and a task stopped by --task-minutes
(or killed) is resumed from its run directory, so a run cut into several calls continues where it
stopped. The summary (geomean vs eager and vs the best single compile mode) is
printed from the whole file. On a fresh machine, `--seed-runs DIR` resumes the stopped tasks from
their stores kept in the repository (`benchmarks/results/offline_runs/<task>.db`).

On a machine of several GPUs, `--gpus 4,5,6,7 --cpus 80-127` runs one task per GPU at a time, each
`pike optimize` seeing only its GPU (CUDA_VISIBLE_DEVICES) and an equal share of the listed cores,
so tasks never share a GPU or a timing core. `--stop-at S` fits the whole call into S seconds: no
task starts after S minus --reserve, and each task's time limit ends its search --reserve seconds
before S (the reserve is for its final table, which compiles the compile modes; a resumed task
whose last final table took longer gets that and a quarter more).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import shutil
import sqlite3
import subprocess
import sys
import threading
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


def store_json(db_path: Path, sql: str):
    """One JSON value from a run's store (the first column of ``sql``'s first row); None when the
    store has no such row or cannot be read."""
    db = sqlite3.connect(db_path)
    try:
        row = db.execute(sql).fetchone()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return json.loads(row[0]) if row and row[0] else None


def pool_summary(db_path: Path) -> dict | None:
    """The run's utilisation record (held, timing and kernels-active fractions per GPU), as `pike
    optimize` stores it: the product's own kernels-active display, checked on every suite run."""
    rec = store_json(db_path, "select value from meta where key = 'pool'")
    if not rec:
        return None
    return {k: rec.get(k) for k in ("devices", "started_at", "wall_s", "held_fraction", "timing_fraction", "kernels_active", "kernels_active_note", "jobs")}


def latest(path: Path) -> dict[str, dict]:
    """The last record of each task (a task cut by --task-minutes has several)."""
    out: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                prev = out.get(r["task"], {})
                # A run started from scratch (no run directory to resume) starts the count again.
                r["total_wall_s"] = (0.0 if r.get("fresh") else prev.get("total_wall_s", 0.0)) + r["wall_s"]
                if not r.get("row") and prev.get("row") and not r.get("fresh"):
                    # Killed before its final table: the last table made stands (its time counts).
                    r = {**prev, "total_wall_s": r["total_wall_s"], "killed_after": r.get("error", "")[-300:]}
                out[r["task"]] = r
    return out


def final_table(db_path: Path) -> dict:
    """The run's last final table as its store keeps it (``state.final``)."""
    return (store_json(db_path, "select state from tasks") or {}).get("final") or {}


def compile_modes(final: dict) -> dict:
    """Each compile mode's figure in the final table: its ms, or why there is none ("timeout",
    "mismatch", "not measured: time limit")."""
    ms, status = final.get("compile_ms") or {}, final.get("compile_status") or {}
    return {m: ms.get(m) or status.get(m) for m in {**status, **ms}}


def reserve_for(name: str, a, out: Path) -> float:
    """--reserve, or more for a task whose last final table took longer (a quarter on top): a
    recurrent task's final table re-compiles its compile modes, minutes where most tasks need one."""
    before = latest(out).get(name, {}).get("final_s")
    return max(a.reserve, 1.25 * before) if before else a.reserve


def seed_runs(out: Path, stores: Path, runs: Path, redo: list[str]) -> list[str]:
    """Run directories made from stores kept in the repository (``run.db`` is all a resume needs), for
    the tasks cut short (or killed) on a machine that is gone: a fresh machine then goes on with their portfolio."""
    seeded = []
    for name, r in latest(out).items():
        db, run_dir = stores / f"{name}.db", runs / name
        # Stopped by its time limit, or killed at the call's end (no row): either way its store resumes.
        if (r.get("row") or {}).get("status") != "done" and name not in redo and db.exists() and not (run_dir / "run.db").exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(db, run_dir / "run.db")
            seeded.append(name)
    return seeded


def precision(winner: str | None) -> str:
    """The precision a winning variant computes in (its knobs say it)."""
    w = winner or ""
    return "bf16" if "bf16" in w else "fp16" if "fp16" in w else "tf32" if "tf32" in w else "fp32"


def summary(path: Path) -> str:
    rows = list(latest(path).values())
    done = [r for r in rows if r.get("row") and r["row"].get("speedup_eager")]
    if not done:
        return "no finished task"
    lines = [f"{'task':28} {'eager ms':>9} {'best compile':>28} {'best ms':>9} {'x eager':>8} {'x compile':>9} {'min':>5}  winner (precision)"]
    for r in done:
        t = r["row"]
        lines.append(f"{t['task']:28} {t['eager_ms']:9.4f} {str(t.get('best_compile_mode')):>18} {t.get('best_compile_ms') or float('nan'):9.4f} "
                     f"{t['best_ms']:9.4f} {t['speedup_eager']:8.2f} {t.get('speedup_best_compile') or float('nan'):9.2f} "
                     f"{r['total_wall_s'] / 60:5.1f}  {r.get('winner')} ({precision(r.get('winner'))})")

    def geomean(xs: list[float]) -> float:
        return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")

    ge = geomean([r["row"]["speedup_eager"] for r in done])
    gc = geomean([r["row"]["speedup_best_compile"] for r in done if r["row"].get("speedup_best_compile")])
    fp32 = [r for r in done if precision(r.get("winner")) == "fp32"]
    lines.append(f"winners that kept fp32 ({len(fp32)}): geomean {geomean([r['row']['speedup_eager'] for r in fp32]):.3f}x vs eager, "
                 f"{geomean([r['row']['speedup_best_compile'] for r in fp32 if r['row'].get('speedup_best_compile')]):.3f}x vs the best compile mode")
    for r in done:  # each compile mode's figure, where the record has it
        if r.get("compile_modes"):
            modes = ", ".join(f"{m} {v:.4f}" if isinstance(v, (int, float)) else f"{m} {v}" for m, v in sorted(r["compile_modes"].items()))
            lines.append(f"  {r['task']}: {modes}; final table {r.get('final_s') or float('nan'):.0f} s")
    stopped = [r["task"] for r in done if r["row"].get("status") == "stopped"]
    if stopped:
        lines.append(f"cut by the time limit (partial portfolio, resumed by the next call): {', '.join(stopped)}")
    gd = geomean([r["row"]["speedup_compile"] for r in done if r["row"].get("speedup_compile")])
    lines.append(f"{len(done)} tasks: geomean {ge:.3f}x vs eager, {gd:.3f}x vs compile default, {gc:.3f}x vs the best single compile mode; "
                 f"below 1.0x vs eager: {sum(r['row']['speedup_eager'] < 1.0 for r in done)}")
    return "\n".join(lines)


def cpu_list(spec: str) -> list[int]:
    """taskset syntax: 0-31,64,66-70."""
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def run_task(name: str, a, gpu: str | None, cpus: list[int] | None, t_start: float, out: Path, lock: threading.Lock) -> None:
    run_dir = Path(a.runs) / name
    fresh = not (run_dir / "run.db").exists()
    cmd = [sys.executable, "-m", "pike", "optimize", name, "--device", a.device, "--json"]
    cmd += ["--out", str(run_dir)] if fresh else ["--resume", str(run_dir)]
    minutes = a.task_minutes
    if a.stop_at is not None:
        with lock:  # the other GPUs' threads append to --out
            reserve = reserve_for(name, a, out)
        left = (a.stop_at - reserve - (time.monotonic() - t_start)) / 60
        minutes = min(minutes, left) if minutes else left
    if minutes:
        cmd += ["--time-limit", f"{max(minutes, 0.5):.2f}"]
    env = dict(os.environ)
    if gpu is not None:
        env.update(CUDA_VISIBLE_DEVICES=gpu, CUDA_DEVICE_ORDER="PCI_BUS_ID")
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env,
                       preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    wall = time.monotonic() - t0
    rec: dict = {"task": name, "rc": p.returncode, "wall_s": wall, "gpu": gpu, "cpus": len(cpus) if cpus else None, "fresh": fresh}
    try:
        table = json.loads(p.stdout[p.stdout.index("{"):])
        rec["row"] = table["rows"][0]
    except (ValueError, KeyError, IndexError):
        rec["error"] = (p.stdout[-1500:] + p.stderr[-1500:])
    if (run_dir / "run.db").exists():
        rec["variants"] = variant_rows(run_dir / "run.db")
        rec["pool"] = pool_summary(run_dir / "run.db")
        final = final_table(run_dir / "run.db")
        rec["final_s"] = final.get("duration_s")
        rec["compile_modes"] = compile_modes(final)
        best = (run_dir / "best" / f"{name}.py")
        if best.exists():
            head = best.read_text().split("# ==== PIKE offline variant: ", 1)
            rec["winner"] = head[1].split(" ", 1)[0] if len(head) > 1 else "eager"
    with lock:
        with out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"{name}: gpu={gpu} rc={p.returncode} {wall:.0f} s (final table {rec.get('final_s') or 0:.0f} s) winner={rec.get('winner')} "
              f"x_eager={rec.get('row', {}).get('speedup_eager')} pool={json.dumps(rec.get('pool'))}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default=None, help="comma-separated (default: the whole built-in suite)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="offline_suite.jsonl")
    ap.add_argument("--runs", default="/tmp/pike-offline-runs")
    ap.add_argument("--deadline", type=float, default=None, help="start no task after this many seconds")
    ap.add_argument("--task-minutes", type=float, default=None,
                    help="pike optimize --time-limit for each task (a stopped task is resumed by the next call)")
    ap.add_argument("--gpus", default=None, help="one task per listed GPU at a time (default: one task at a time)")
    ap.add_argument("--cpus", default=None, help="cores shared out among the GPUs' tasks (taskset syntax)")
    ap.add_argument("--stop-at", type=float, default=None, help="the whole call's seconds (see --reserve)")
    ap.add_argument("--reserve", type=float, default=180.0, help="seconds kept for a task's final table")
    ap.add_argument("--redo", default="", help="comma-separated tasks to run again from scratch (after an evaluator change)")
    ap.add_argument("--min-minutes", type=float, default=3.0,
                    help="with --stop-at, start a task only if it gets this much search before --reserve (a task cut "
                         "short is lost when the machine does not stay up for the next call)")
    ap.add_argument("--seed-runs", default=None,
                    help="a folder of <task>.db stores kept from an earlier machine: a task whose last record is 'stopped' "
                         "(or killed before its final table) and that has no run directory here resumes from its store instead "
                         "of starting over")
    ap.add_argument("--later", default="", help="GPUs (of --gpus) that join only once --later-file exists (another part ran there first)")
    ap.add_argument("--later-file", default=None)
    a = ap.parse_args()
    out = Path(a.out)
    redo = [n for n in a.redo.split(",") if n]
    for name in redo:  # a fresh run directory; the new line in --out supersedes the old ones
        shutil.rmtree(Path(a.runs) / name, ignore_errors=True)
    if a.seed_runs:
        for name in seed_runs(out, Path(a.seed_runs), Path(a.runs), redo):
            print(f"{name}: resumed from {a.seed_runs}", flush=True)
    done = {name for name, r in latest(out).items() if r.get("row", {}).get("status") == "done" and name not in redo}
    todo: queue.Queue[str] = queue.Queue()
    for name in (a.tasks.split(",") if a.tasks else suite_order()):
        if name not in done:
            todo.put(name)
    gpus = a.gpus.split(",") if a.gpus else [None]
    cores = cpu_list(a.cpus) if a.cpus else None
    share = len(cores) // len(gpus) if cores else 0
    lock = threading.Lock()
    t_start = time.monotonic()

    later = set(a.later.split(",")) - {""}

    def worker(i: int) -> None:
        mine = cores[i * share:(i + 1) * share] if cores else None
        while gpus[i] in later and not (a.later_file and Path(a.later_file).exists()):
            if a.stop_at is not None and time.monotonic() - t_start > a.stop_at - a.reserve - 60 * a.min_minutes:
                return
            time.sleep(2)
        while True:
            elapsed = time.monotonic() - t_start
            if a.deadline is not None and elapsed > a.deadline:
                return
            if a.stop_at is not None and elapsed > a.stop_at - a.reserve - 60 * a.min_minutes:
                return
            try:
                name = todo.get_nowait()
            except queue.Empty:
                return
            run_task(name, a, gpus[i], mine, t_start, out, lock)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(gpus))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(summary(out))


if __name__ == "__main__":
    main()
