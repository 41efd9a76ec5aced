"""Search-time figures against the final table's, from a run's store (BENCHMARKS.md, "Speedups you
can trust"). Per task: each final-table entry's search timing (its own evaluation, against the
task's eager measured at the start) beside its side-by-side re-timing, the relative difference, the
delivered entry with its intervals, and latency beside back-to-back throughput.

    python benchmarks/search_vs_final.py RUN_DIR [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pike.store import Store


def compare(run_dir: Path) -> list[dict]:
    store = Store(run_dir / "run.db")
    out = []
    try:
        for t in store.tasks():
            state = store.task_json(t["id"], "state") or {}
            final = state.get("final") or {}
            if not final:
                out.append({"task": t["name"], "status": t["status"], "final": None})
                continue
            baselines = store.task_json(t["id"], "baselines") or {}
            search = {"eager": (baselines.get("eager") or {}).get("runtime_ms")}
            for key, r in baselines.items():
                if key.startswith("compile:"):
                    search[key] = r.get("runtime_ms")
            for sid in final.get("finalists_ms", {}):
                search[f"solution:{sid}"] = store.solution(int(sid)).runtime_ms
            retimed = {"eager": final["eager_ms"], **{f"compile:{m}": v for m, v in final["compile_ms"].items()},
                       **{f"solution:{k}": v for k, v in final.get("finalists_ms", {}).items()}}
            rows = [{"entry": k, "search_ms": search.get(k), "final_ms": v,
                     "diff": (search[k] / v - 1) if search.get(k) and v else None} for k, v in retimed.items()]
            out.append({"task": t["name"], "status": t["status"], "delivered": final.get("delivered"),
                        "intervals": final.get("intervals"), "noisy": final.get("noisy"), "rounds": final.get("rounds"),
                        "throughput_ms": final.get("throughput_ms"), "final_s": final.get("duration_s"), "entries": rows})
    finally:
        store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    doc = compare(args.run_dir)
    for t in doc:
        if not t.get("entries"):
            print(f"{t['task']}: {t['status']}, no final table")
            continue
        ci = ", ".join(f"vs {k} {v['value']:.2f}x [{v['lo']:.2f}-{v['hi']:.2f}]" for k, v in (t["intervals"] or {}).items())
        print(f"{t['task']}: delivered {t['delivered']} ({ci}); {t['rounds']} rounds; noisy {t['noisy']}; final table {t['final_s']:.0f} s")
        for e in t["entries"]:
            diff = f"{e['diff']:+.1%}" if e["diff"] is not None else "-"
            b2b = (t["throughput_ms"] or {}).get(e["entry"])
            print(f"  {e['entry']:28s} search {e['search_ms'] or float('nan'):9.4f}  final {e['final_ms']:9.4f}  ({diff})"
                  + (f"  back to back {b2b:9.4f}" if b2b else ""))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
