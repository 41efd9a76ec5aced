"""Are PIKE's figures trustworthy on a busy CPU? (BENCHMARKS.md, "Speedups you can trust")

With a deliberate background load (a process spinning on one core), this script:
1. runs the same offline optimisation of one small task ``--runs`` times and prints each run's
   delivered entry, its speedups with their 95% intervals, and whether the runs agree (every pair of
   speedup-vs-eager intervals overlaps, and the same entry is delivered);
2. evaluates honest candidates ``--evals`` times each through ``pike eval`` and counts how many came
   back ``suspect``, or with a ``noisy`` interval;
3. reports what the measurement itself costs per candidate (timing seconds, runs; the side-by-side
   re-timing's rounds and seconds).

    python benchmarks/trust_cpu.py --runs 5 --evals 5 --out trust-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
HONEST = [("ln_mlp.py", "ln_fused.py"), ("wide_mlp.py", "wide_addmm.py")]


def hog() -> subprocess.Popen:
    """The background load: one core kept busy for as long as the benchmark runs."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def optimise(task: Path, run_dir: Path, cache: Path) -> dict:
    env = {**os.environ, "PIKE_CACHE_DIR": str(cache)}
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "pike", "optimize", str(task), "--out", str(run_dir), "--json"],
                   env=env, capture_output=True, text=True, check=True)
    doc = json.loads((run_dir / "summary.json").read_text())
    row = doc["rows"][0]
    from pike.store import Store

    store = Store(run_dir / "run.db")
    try:
        state = store.task_json(store.tasks()[0]["id"], "state") or {}
        evals = [store.evaluation(s.id) for s in store.solutions(store.tasks()[0]["id"])]
    finally:
        store.close()
    timing_s = [e.durations_s.get("timing_s", 0.0) for e in evals if e is not None and e.timing]
    final = state.get("final", {})
    return {"wall_s": time.monotonic() - t0, "delivered": row["delivered"], "speedup_eager": row["speedup_eager"],
            "ci": row["speedup_eager_ci"], "speedup_compile": row["speedup_compile"], "compile_ci": row["speedup_compile_ci"],
            "noisy": row["noisy"], "rounds": row["rounds"], "final_s": final.get("duration_s"),
            "timing_s_mean": sum(timing_s) / len(timing_s) if timing_s else None, "candidates": len(timing_s)}


def evaluate(task: str, cand: str, cache: Path) -> dict:
    env = {**os.environ, "PIKE_CACHE_DIR": str(cache)}
    p = subprocess.run([sys.executable, "-m", "pike", "eval", str(TESTS / "tasks" / task), str(TESTS / "candidates" / cand), "--json"],
                       env=env, capture_output=True, text=True)
    r = json.loads(p.stdout)
    ci = r.get("speedup_interval") or {}
    return {"status": r["status"], "speedup": r.get("speedup_vs_eager"), "ci": [ci.get("lo"), ci.get("hi")] if ci else None,
            "noisy": bool(ci) and (ci["hi"] - ci["lo"]) / ci["value"] > 0.1, "timing_s": r.get("durations_s", {}).get("timing_s"),
            "runs": (r.get("timing") or {}).get("runs")}


def overlap(a, b) -> bool:
    return a is not None and b is not None and a[0] <= b[1] and b[0] <= a[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default=str(ROOT / "src" / "pike" / "suites" / "examples" / "gated_norm.py"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--evals", type=int, default=5)
    ap.add_argument("--no-load", action="store_true", help="without the background load (for comparison)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    load = None if args.no_load else hog()
    out: dict = {"task": args.task, "load": not args.no_load, "date": time.strftime("%Y-%m-%d %H:%M"), "runs": [], "evals": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "cache"
            for i in range(args.runs):
                r = optimise(Path(args.task), Path(tmp) / f"run{i}", cache)
                out["runs"].append(r)
                print(f"run {i}: {r['delivered']} {r['speedup_eager']:.2f}x {r['ci']} vs eager; vs compile "
                      f"{r['speedup_compile'] or 0:.2f}x {r['compile_ci']}; noisy {r['noisy']}; {r['rounds']} rounds; "
                      f"final table {r['final_s'] or 0:.1f} s; timing {r['timing_s_mean'] or 0:.2f} s/candidate; {r['wall_s']:.0f} s",
                      flush=True)
            for task, cand in HONEST:
                for _ in range(args.evals):
                    e = evaluate(task, cand, cache)
                    out["evals"].append({"candidate": cand, **e})
                    print(f"{cand}: {e['status']} {e['speedup'] or 0:.2f}x {e['ci']} timing {e['timing_s'] or 0:.2f} s, {e['runs']} runs", flush=True)
    finally:
        if load is not None:
            load.kill()
    runs = out["runs"]
    pairs = [(a, b) for i, a in enumerate(runs) for b in runs[i + 1:]]
    out["agree_intervals"] = sum(overlap(a["ci"], b["ci"]) for a, b in pairs)
    out["pairs"] = len(pairs)
    out["same_delivered"] = len({r["delivered"].split(":")[0] if r["delivered"].startswith("solution") else r["delivered"] for r in runs}) == 1
    evals = out["evals"]
    out["suspect"] = sum(e["status"] == "suspect" for e in evals)
    out["noisy"] = sum(e["noisy"] for e in evals)
    print(f"speedup-vs-eager intervals overlap in {out['agree_intervals']} of {out['pairs']} pairs of runs; "
          f"delivered {'the same' if out['same_delivered'] else 'different'} kind of entry; honest candidates: "
          f"{out['suspect']} suspect and {out['noisy']} noisy of {len(evals)}")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
