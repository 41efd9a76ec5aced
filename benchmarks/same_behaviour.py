"""Do two source trees behave the same? Runs the same two searches with each and prints what they
decided, for refactorings that must change nothing (issue #23 item 6):

    python3 benchmarks/same_behaviour.py --src OLD/src --src NEW/src --out /tmp/same

1. The README's main job (the offline strategy on the shipped example, on the CPU), with a search
   time limit (`--minutes`, default 30: the whole portfolio): which variants were tried and each
   one's verdict.
2. PIKE-B (budget 12, 3 branches, top 2: several phases) on tests/tasks/ln_mlp.py against the scripted chat-completions
   server of the tests, whose replies depend only on the prompt: every solution's phase, branch,
   origin, attempt, verdict and code hash, and the hashes of the prompts (paths in tracebacks
   replaced).

Timings differ from run to run, so they are left out; with two branches of equal speed a tie may
still be broken either way, which the output would show as a changed parent.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from llm_server import FakeLLMServer  # noqa: E402
from scripted import TASK, by_prompt  # noqa: E402

def normalise(prompt: str) -> str:
    """A fix prompt's traceback names the tree's and the job's paths: the same in any two runs once
    those are replaced."""
    prompt = re.sub(r"/\S*?/src/pike/", "<pike>/", prompt)
    return re.sub(r"/\S*?/pike-eval-\w+/jobs/\d+/", "<job>/", prompt)


def md5(text: str | None) -> str:
    return hashlib.md5((text or "").encode()).hexdigest()[:10]


def rows(con, table: str) -> list[dict]:
    cur = con.execute(f"SELECT * FROM {table} ORDER BY id")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def pike(src: str, *args: str, cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": src, "PIKE_CACHE_DIR": str(cache), "NO_PROXY": "127.0.0.1,localhost"}
    p = subprocess.run([sys.executable, "-m", "pike", "optimize", *args, "--json"], env=env, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"pike optimize {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout)


def offline(src: str, out: Path, minutes: float) -> dict:
    run = out / "offline"
    summary = pike(src, "--out", str(run), "--time-limit", str(minutes), cache=out / "cache")
    con = sqlite3.connect(run / "run.db")
    sols = rows(con, "solutions")
    label = lambda s: s.get("idea") or s.get("variant") or ""  # noqa: E731
    tried = sorted((label(s), s["status"]) for s in sols)
    # Which combinations are tried depends on whether each knob helped alone: on timings.
    return {"singles": [t for t in tried if "+" not in t[0]], "combinations (timing-dependent)": [t for t in tried if "+" in t[0]],
            "rows": len(summary.get("rows", []))}


def pike_b(src: str, out: Path) -> dict:
    run = out / "pike_b"
    with FakeLLMServer(by_prompt) as server:
        pike(src, str(TASK), "--out", str(run), "--strategy", "pike-b", "--budget", "12", "--llm", server.model_string("m"),
             "--set", "eval.size=small",
             # the flat keys of before the config's sections, which later trees still read
             "--set", "search.num_branches=3", "--set", "search.top_k=2", cache=out / "cache")
    con = sqlite3.connect(run / "run.db")
    prompts = sorted(md5(normalise(p)) for (p,) in con.execute("SELECT prompt FROM exchanges"))
    sols = rows(con, "solutions")
    branch = lambda s: s.get("branch", s.get("slot"))  # noqa: E731
    return {"solutions": sorted((s["phase"], branch(s), s["origin"], s["attempt"], s["status"], md5(s.get("code"))) for s in sols),
            "prompts": prompts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", action="append", required=True, help="a tree's src directory (give two)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=30.0, help="the offline search's time limit")
    ap.add_argument("--parts", default="offline,pike_b", help="comma list of offline, pike_b")
    a = ap.parse_args()
    results = []
    for i, src in enumerate(a.src):
        out = a.out / f"tree{i}"
        parts = a.parts.split(",")
        results.append({"src": src, **({"offline": offline(src, out, a.minutes)} if "offline" in parts else {}),
                        **({"pike_b": pike_b(src, out)} if "pike_b" in parts else {})})
        print(json.dumps(results[-1]), flush=True)
    if len(results) == 2:
        for part in parts:
            same = results[0][part] == results[1][part]
            print(f"{part}: {'same' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
