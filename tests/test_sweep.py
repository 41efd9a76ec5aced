"""`pike sweep`: an experiment file becomes one run directory per (configuration, seed); a killed
sweep resumes without redoing finished runs (against the scripted chat-completions server)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_server import FakeLLMServer, Reply, last_user_message
from scripted import TASK, FUSED, BROKEN
from pike.search.sweep import Sweep, load_experiment, plan

pytestmark = pytest.mark.slow  # every test here evaluates candidates or runs a search



def sweep_command() -> list[str]:
    """`pike sweep` once it is registered in the CLI; the module's own entry point until then."""
    from pike.cli import app

    if any(c.name == "sweep" for c in app.registered_commands):
        return [sys.executable, "-m", "pike", "sweep"]
    return [sys.executable, "-m", "pike.commands.sweep"]


def write_experiment(tmp_path, model: str, prices: Path, seeds=(0,)) -> Path:
    exp = tmp_path / "exp.toml"
    exp.write_text(f"""
suite = "{TASK.parent}"
tasks = ["ln_mlp"]
size = "small"
seeds = {list(seeds)}
[base]
llm = {{ model = "{model}", prices_file = "{prices}", max_retries = 1 }}
search = {{ budget = 4 }}
eval = {{ retime_final = false }}
[configs.pike-b]
search = {{ strategy = "pike-b", pike_b = {{ num_branches = 2, top_k = 1 }} }}
[configs.pike-o]
search = {{ strategy = "pike-o", budget = 8, max_fix_attempts = 1 }}
""")
    return exp


@pytest.fixture
def prices(tmp_path):
    p = tmp_path / "prices.csv"
    p.write_text("model,input_per_mtok,output_per_mtok\nlocal/scripted@*,1.0,4.0\n")
    return p


def test_plan_layers_preset_base_config_and_seed(tmp_path, prices):
    exp = load_experiment(write_experiment(tmp_path, "local/m@http://127.0.0.1:9/v1", prices, seeds=(0, 1)))
    specs = plan(exp, tmp_path / "out")
    assert [s.name for s in specs] == ["pike-b-s0", "pike-b-s1", "pike-o-s0", "pike-o-s1"]
    assert specs[1].dir == tmp_path / "out" / "pike-b-s1" and specs[1].cfg.seed == 1
    b, o = specs[0].cfg, specs[2].cfg
    assert (b.search.strategy, b.search.pike_b.num_branches, b.search.budget, b.search.max_fix_attempts) == ("pike-b", 2, 4, 5)
    # The preset's knobs, then base (budget 4), then the configuration's own (budget 8 wins).
    assert (o.search.strategy, o.search.pike_o.archive, o.search.budget, o.search.max_fix_attempts) == ("pike-o", 12, 8, 1)
    assert o.eval.size == "small" and o.eval.retime_final is False and o.llm.max_retries == 1
    assert not Sweep(exp, tmp_path / "out").existing()
    bad = tmp_path / "bad.toml"
    for text, msg in [
        ('seeds = [0]\n[configs.a]\nsearch = { strategy = "pike-o" }\n', "needs llm.model"),
        ('suite = "builtin"\ntypo = 1\n[configs.a]\nsearch = { strategy = "offline" }\n', "unknown key"),
        ('[configs.a]\nsearch = { strategy = "offline", bogus = 1 }\n', "bogus"),
        ('[base]\nseed = 3\n[configs.a]\nsearch = { strategy = "offline" }\n', "seeds"),
        ('[configs.a]\nsearch = { strategy = "nope" }\n', "unknown strategy"),
        ('seeds = []\n[configs.a]\nsearch = { strategy = "offline" }\n', "seeds"),
    ]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=msg):
            load_experiment(bad)


def spent(run_dir: Path) -> list[tuple]:
    con = sqlite3.connect(run_dir / "run.db")
    return con.execute("SELECT id, role, phase, branch, status FROM exchanges ORDER BY id").fetchall()


def test_sweep_killed_then_resumed_redoes_nothing(tmp_path, prices):
    coa = itertools.cycle([FUSED, BROKEN])

    def responder(req):
        text = last_user_message(req)
        if text.startswith("Brainstorm"):
            return Reply("1. Fuse the bias add into the matmul with addmm.")
        code = FUSED if text.startswith("A solution for the task below failed") else next(coa)
        return Reply(f"```python\n{code}\n```", delay=0.25)

    env = {**os.environ, "PIKE_CACHE_DIR": str(tmp_path / "cache"), "NO_PROXY": "127.0.0.1,localhost"}
    out = tmp_path / "sweep"
    with FakeLLMServer(responder) as server:
        exp = write_experiment(tmp_path, server.model_string("scripted"), prices)
        cmd = [*sweep_command(), str(exp), "--out", str(out)]
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        # Kill -9 once the first run has finished and the second has made a few queries.
        second = out / "pike-o-s0" / "run.db"
        deadline = time.time() + 240
        n = 0
        while time.time() < deadline and n < 3 and p.poll() is None:
            time.sleep(0.1)
            if second.exists():
                try:
                    n = sqlite3.connect(second).execute("SELECT COUNT(*) FROM exchanges").fetchone()[0]
                except sqlite3.OperationalError:
                    continue
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        doc = json.loads((out / "sweep.json").read_text())
        status = {r["run"]: r["status"] for r in doc["runs"]}
        assert status == {"pike-b-s0": "done", "pike-o-s0": "running"}
        first_before = spent(out / "pike-b-s0")
        second_before = spent(out / "pike-o-s0")
        assert len(first_before) >= 4 and 3 <= len(second_before) < 8

        # Without --resume the sweep refuses to touch existing runs.
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 2 and "--resume" in r.stderr

        r = subprocess.run([*cmd, "--resume", "--json"], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        doc = json.loads(r.stdout)
        runs = {x["run"]: x for x in doc["runs"]}
        assert runs["pike-b-s0"]["skipped"] and runs["pike-b-s0"]["queries"] == 4
        assert runs["pike-o-s0"]["resumed"] and runs["pike-o-s0"]["status"] == "done"
        assert runs["pike-o-s0"]["queries"] == 8  # the queries in flight at the kill were counted, not repeated
        assert spent(out / "pike-b-s0") == first_before  # the finished run was not redone
        after = spent(out / "pike-o-s0")
        assert [e[:4] for e in after[: len(second_before)]] == [e[:4] for e in second_before] and len([e for e in after if e[1] != "iba"]) == 8
        assert json.loads((out / "sweep.json").read_text())["runs"] == doc["runs"]
        assert (out / "pike-o-s0" / "summary.json").exists() and (out / "pike-o-s0" / "best" / "ln_mlp.py").exists()
        assert doc["configs"]["pike-o"]["runs_done"] == 1 and doc["configs"]["pike-b"]["queries"] == 4

        # Once more: everything is finished, nothing is asked again.
        requests = len(server.requests)
        r = subprocess.run([*cmd, "--resume", "--json"], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr[-3000:]
        assert all(x["skipped"] for x in json.loads(r.stdout)["runs"])
        assert len(server.requests) == requests and spent(out / "pike-o-s0") == after
