"""Pool utilisation under a realistic LLM latency (issue: scale-out), one `pike optimize` run per setting.

    PYTHONPATH=src python3 benchmarks/pool_busy.py --gpus 0 --out busy_1gpu.json
    PYTHONPATH=src python3 benchmarks/pool_busy.py --gpus 0,1 --out busy_2gpu.json

Runs the real CLI on several built-in tasks at once with the scripted stand-in LLM
(benchmarks/scripted_llm.py: 20-60 s per reply, a fixed mix of candidates; not an LLM, so nothing
here says anything about search quality), then reads from the run's store: each GPU's held fraction
(a candidate on it: checks and timing) and timing fraction (in the timing loop), candidates evaluated,
and candidates per GPU-hour over the whole run, start-up and final re-timing included.

On CUDA with nvidia-smi on PATH it also samples each GPU's utilization.gpu (the fraction of time a
kernel was running) and memory every 500 ms for the whole run, and reports its mean over the run and
over the search window next to the pool's own held and timing fractions. `--cpus 0-31` runs the
optimizer (and everything it starts) on those cores only, as on a machine that has just those;
CUDA_DEVICE_ORDER=PCI_BUS_ID makes `--gpus 1,2` the GPUs that nvidia-smi numbers 1 and 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from pike.suites import BUILTIN_DIR

HERE = Path(__file__).resolve().parent
TASKS = ["gpt2_block", "llama_decoder_block", "convnext_block", "mlp_shallow_wide", "gated_rmsnorm", "dit_block"]


SMI_FIELDS = "timestamp,index,utilization.gpu,memory.used"
SMI_PERIOD_MS = 500


def parse_cpus(spec: str) -> set[int]:
    """taskset's list syntax: ``0-31``, ``0,2,4-7``."""
    cores: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cores.update(range(int(lo), int(hi or lo) + 1))
    if not cores:
        raise ValueError(f"no cores in {spec!r}")
    return cores


def physical_gpus(gpus: str) -> list[str]:
    """nvidia-smi's indices of the GPUs that --gpus names (through CUDA_VISIBLE_DEVICES if set)."""
    ids = [g.strip() for g in gpus.split(",") if g.strip()]
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if visible and all(v.isdigit() for v in visible):
        return [visible[int(g)] for g in ids]
    return ids


def start_smi(work: Path, device: str, gpus: list[str]) -> dict:
    """nvidia-smi sampling every SMI_PERIOD_MS for the whole run, to a file; every line carries
    nvidia-smi's own wall-clock timestamp (so pipe buffering cannot shift a sample in time)."""
    if not device.startswith("cuda"):
        return {"available": False, "reason": f"device is {device}: no GPU to sample"}
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {"available": False, "reason": "nvidia-smi not on PATH"}
    cmd = [exe, f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits", "-lms", str(SMI_PERIOD_MS),
           "-i", ",".join(gpus)]
    out, err = work / "nvidia_smi.csv", work / "nvidia_smi.err"
    try:
        proc = subprocess.Popen(cmd, stdout=open(out, "w"), stderr=open(err, "w"), stdin=subprocess.DEVNULL)
    except OSError as e:
        return {"available": False, "reason": f"nvidia-smi did not start: {e}", "command": cmd}
    return {"available": True, "command": cmd, "proc": proc, "out": out, "err": err, "launched_at": time.time()}


def stop_smi(smi: dict) -> None:
    proc = smi.get("proc")
    if proc is None:
        return
    smi["exited_before_stop"] = proc.poll() is not None  # nvidia-smi -lms never ends by itself
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    smi["rc"] = proc.returncode
    smi["stopped_at"] = time.time()


def _smi_time(stamp: str) -> float | None:
    for fmt in ("%Y/%m/%d %H:%M:%S.%f", "%Y/%m/%d %H:%M:%S"):
        try:
            return datetime.strptime(stamp.strip(), fmt).timestamp()  # local time, as nvidia-smi writes it
        except ValueError:
            pass
    return None


def _mean(xs: list) -> float | None:
    return sum(xs) / len(xs) if xs else None


def smi_report(smi: dict, gpus: list[str], pool: dict | None, window: dict | None) -> dict:
    """Per GPU: mean utilization.gpu over the pool's run (its started_at to started_at + wall_s) and
    over the search window, sample counts, and the samples themselves (t_s: seconds since the
    pool's started_at, the same clock as the pool history's offsets)."""
    doc = {k: v for k, v in smi.items() if k not in ("proc", "out", "err")}
    if not smi.get("available"):
        return doc
    text = smi["out"].read_text() if smi["out"].exists() else ""
    err = smi["err"].read_text() if smi["err"].exists() else ""
    if err.strip():
        doc["stderr_tail"] = err[-1000:]
    t_ref = pool["started_at"] if pool else smi["launched_at"]
    doc["t_ref"] = t_ref
    doc["t_ref_is"] = "pool started_at" if pool else "nvidia-smi launch (no pool record)"
    rows: dict[str, dict[str, list]] = {g: {"t_s": [], "util": [], "mem_mib": []} for g in gpus}
    bad = 0
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        try:
            t = _smi_time(parts[0])
            g, util, mem = parts[1], float(parts[2]), float(parts[3])
        except (IndexError, ValueError):  # [N/A], [Not Supported], a line cut off at the end
            bad += 1
            continue
        if t is None or g not in rows:
            bad += 1
            continue
        r = rows[g]
        r["t_s"].append(round(t - t_ref, 2))
        r["util"].append(util)
        r["mem_mib"].append(mem)
    doc["unparsed_lines"] = bad
    first = min((r["t_s"][0] for r in rows.values() if r["t_s"]), default=None)
    if first is not None:
        # nvidia-smi's clock against ours: its first sample should come within a second or two of launch.
        doc["first_sample_after_launch_s"] = round(first + t_ref - smi["launched_at"], 2)
    run_span = (0.0, pool["wall_s"]) if pool else (float("-inf"), float("inf"))
    per_gpu = []
    for g in gpus:
        r = rows[g]
        pts = list(zip(r["t_s"], r["util"], r["mem_mib"]))
        in_run = [u for t, u, _ in pts if run_span[0] <= t <= run_span[1]]
        entry = {"gpu": g, "samples": len(pts), "run_samples": len(in_run), "util_mean_run": _mean(in_run),
                 "util_mean_all": _mean(r["util"]), "mem_max_mib": max(r["mem_mib"], default=None)}
        if window:
            in_win = [u for t, u, _ in pts if window["from_s"] <= t <= window["to_s"]]
            entry.update(window_samples=len(in_win), util_mean_searching=_mean(in_win))
        entry["raw"] = r
        per_gpu.append(entry)
    doc["per_gpu"] = per_gpu
    if not any(e["samples"] for e in per_gpu):
        doc["problem"] = "no samples" + (f" (nvidia-smi rc={smi.get('rc')})" if smi.get("exited_before_stop") else "")
    return doc


def _pct(xs) -> str:
    return ", ".join("-" if x is None else f"{x:.0f}%" for x in xs)


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
    ap.add_argument("--grace", type=float, default=60.0,
                    help="after the stop signal, wait this long for the final pool record before killing the run")
    ap.add_argument("--lanes", type=int, default=1, help="eval.lanes: evaluation processes per GPU")
    ap.add_argument("--cpus", default=None,
                    help="run the optimizer and everything it starts on these cores (taskset syntax: 0-31, 0,2,4-7)")
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--out", default="pool_busy.json")
    a = ap.parse_args()
    cpus = parse_cpus(a.cpus) if a.cpus else None
    if cpus and not cpus <= os.sched_getaffinity(0):
        ap.error(f"--cpus {a.cpus}: cores {sorted(cpus - os.sched_getaffinity(0))} are not this process's to give")

    work = Path(a.run_dir or f"/tmp/pike-busy-{os.getpid()}")
    tasks_dir = work / "tasks"
    tasks_dir.mkdir(parents=True, exist_ok=True)
    names = a.tasks.split(",")
    for n in names:
        (tasks_dir / f"{n}.py").write_text((BUILTIN_DIR / f"{n}.py").read_text())
    llm = f"cmd:{shlex.quote(sys.executable)} {HERE / 'scripted_llm.py'} --min {a.min} --max {a.max} --device {a.device.split(':')[0]}"
    cmd = [sys.executable, "-m", "pike", "optimize", str(tasks_dir), "--llm", llm, "--strategy", a.strategy,
           "--budget", str(a.budget), "--device", a.device, "--size", a.size, "--out", str(work / "run"),
           "--set", f"llm.concurrency={a.concurrency}", "--set", f"eval.lanes={a.lanes}", "--json"]
    if a.device.startswith("cuda"):
        cmd += ["--gpus", a.gpus]
    # --gpus 1,2 must be the GPUs nvidia-smi calls 1 and 2 (CUDA's default order is fastest first).
    env = {**os.environ, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    smi_gpus = physical_gpus(a.gpus)
    t0 = time.monotonic()
    log = open(work / "optimize.log", "w")
    # The affinity is set in the child before it execs, so pike and all it starts inherit it.
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    try:
        child_cpus = sorted(os.sched_getaffinity(proc.pid))
    except OSError:
        child_cpus = None
    smi = start_smi(work, a.device, smi_gpus)  # after the fork: preexec_fn and threads do not mix
    stopped_by = None
    try:
        proc.wait(timeout=a.seconds)
    except (subprocess.TimeoutExpired, KeyboardInterrupt) as e:
        stopped_by = "seconds" if isinstance(e, subprocess.TimeoutExpired) else "SIGINT"
        # The engine writes its final pool record on the way out. A SIGINT to us (Ctrl-C, `timeout`)
        # went to the whole process group, the run included: a second one could cut its clean-up short.
        if stopped_by == "seconds":
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=a.grace)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            proc.kill()
            proc.wait()
            stopped_by += ", killed after grace"
    wall = time.monotonic() - t0
    stop_smi(smi)
    log.close()
    log_text = (work / "optimize.log").read_text()

    pool, evaluated, window = None, [], None
    db_path = work / "run" / "run.db"
    row = None
    if db_path.exists():
        db = sqlite3.connect(db_path)
        db.row_factory = sqlite3.Row
        row = db.execute("select value from meta where key='pool'").fetchone()
    if row is not None:
        pool = json.loads(row[0])
        evaluated = db.execute("select status, count(*) n from evaluations where kind='search' group by status").fetchall()
    n_eval = sum(r["n"] for r in evaluated)
    gpus = len(pool["devices"]) if pool else 0
    # The search proper: from the first record at which every task was past its start-up
    # (references, eager and compile baselines) to the end of the run.
    hist = (pool or {}).get("history") or []
    searching = [h for h in hist if len(h) > 4 and h[4] >= len(names)]
    if searching and searching[0] is not hist[-1]:
        h0, h1 = searching[0], hist[-1]
        dt = h1[0] - h0[0]
        since = pool["started_at"] + h0[0]
        n_win = db.execute("select count(*) from evaluations where kind='search' and created >= ?", (since,)).fetchone()[0]
        window = {"from_s": h0[0], "to_s": h1[0], "held_fraction": [(y - x) / dt for x, y in zip(h0[1], h1[1])],
                  "timing_fraction": [(y - x) / dt for x, y in zip(h0[2], h1[2])], "evaluated": n_win,
                  "per_minute": 60 * n_win / dt, "per_gpu_hour": 3600 * n_win / dt / gpus}
    smi_doc = smi_report(smi, smi_gpus, pool, window)
    pool_wall = pool["wall_s"] if pool else 0
    doc = {
        "command": cmd, "rc": proc.returncode, "wall_s": wall, "tasks": names, "budget_per_task": a.budget,
        "concurrency": a.concurrency, "strategy": a.strategy, "latency_s": [a.min, a.max], "pool": pool,
        "evaluations": {r["status"]: r["n"] for r in evaluated}, "evaluated": n_eval,
        "per_gpu_hour": n_eval / (gpus * pool_wall / 3600) if pool_wall and gpus else None,
        "per_minute": 60 * n_eval / pool_wall if pool_wall else None,
        "log_tail": log_text[-3000:], "stopped_after_s": a.seconds, "stopped_by": stopped_by, "searching": window,
        "cpus": a.cpus, "child_cpus": child_cpus, "cuda_device_order": env["CUDA_DEVICE_ORDER"],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "smi_gpus": smi_gpus, "nvidia_smi": smi_doc,
    }
    per_gpu = smi_doc.get("per_gpu") or []
    # The raw samples on one line each (thousands of numbers), the rest indented as before.
    raws = {f"@@raw{i}@@": e["raw"] for i, e in enumerate(per_gpu)}
    for key, e in zip(raws, per_gpu):
        e["raw"] = key
    text = json.dumps(doc, indent=1)
    for key, raw in raws.items():
        text = text.replace(json.dumps(key), json.dumps(raw, separators=(",", ":")))
    for key, e in zip(raws, per_gpu):
        e["raw"] = raws[key]
    Path(a.out).write_text(text)
    have_smi = any(e["samples"] for e in per_gpu)
    if have_smi:
        smi_run = f"smi_util=[{_pct(e['util_mean_run'] for e in per_gpu)}]"
    else:
        smi_run = f"smi_util=[] ({smi_doc.get('reason') or smi_doc.get('problem') or 'no samples'})"
    if pool is None:
        print(f"rc={proc.returncode} wall={wall:.0f}s: no pool record in {db_path} (see {work / 'optimize.log'}) {smi_run}")
        return
    held = ", ".join(f"{x:.0%}" for x in pool["held_fraction"])
    timing = ", ".join(f"{x:.0%}" for x in pool["timing_fraction"])
    rate = f"{doc['per_minute']:.2f}/min, {doc['per_gpu_hour']:.0f}/GPU-hour" if doc["per_gpu_hour"] is not None else "no rate"
    print(f"rc={proc.returncode} gpus={pool['devices']} cpus={a.cpus or 'all'} wall={pool['wall_s']:.0f}s evaluated={n_eval} "
          f"({rate}) held=[{held}] timing=[{timing}] {smi_run} builds={pool['builds']} statuses={doc['evaluations']}")
    if window is None:
        print("start-up did not finish for every task before the run stopped: no search window to report")
    else:
        smi_win = f" smi_util=[{_pct(e['util_mean_searching'] for e in per_gpu)}]" if have_smi else ""
        print(f"search window ({window['from_s']:.0f}-{window['to_s']:.0f} s): evaluated={window['evaluated']} "
              f"({window['per_minute']:.2f}/min) held=[{', '.join(f'{x:.0%}' for x in window['held_fraction'])}] "
              f"timing=[{', '.join(f'{x:.0%}' for x in window['timing_fraction'])}]{smi_win}")


if __name__ == "__main__":
    main()
