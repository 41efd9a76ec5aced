"""`pike optimize` with an LLM: the engine's behaviour asserted from the store, against a real HTTP
server speaking the chat-completions protocol with scripted replies (never a real model)."""

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
from scripted import TASK, FUSED, BROKEN, SLOW, fenced

IDEAS = "1. Fuse the bias add into the matmul with addmm.\n2. Use F.layer_norm directly.\n3. Apply ReLU in place."


class Script:
    """Routes by prompt: IBA gets ideas, EFA gets the fixed code, COA cycles through a plan."""

    def __init__(self, coa_plan):
        self.coa = itertools.cycle(coa_plan)

    def __call__(self, req: dict) -> Reply | str:
        text = last_user_message(req)
        if text.startswith("Brainstorm"):
            return Reply(IDEAS, prompt_tokens=400, completion_tokens=60)
        if text.startswith("A solution for the task below failed"):
            return Reply(fenced(FUSED), prompt_tokens=900, completion_tokens=300)
        nxt = next(self.coa)
        return nxt if isinstance(nxt, Reply) else Reply(nxt, prompt_tokens=800, completion_tokens=300)


@pytest.fixture
def prices(tmp_path):
    p = tmp_path / "prices.csv"
    p.write_text("model,input_per_mtok,output_per_mtok\nlocal/scripted@*,1.0,4.0\n")
    return p


def optimize(tmp_path, server, prices, *extra, env=None, timeout=600):
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "pike", "optimize", str(TASK), "--llm", server.model_string("scripted"), "--out", str(out),
        "--set", f"llm.prices_file={prices}", "--set", "search.pike_b.num_branches=4", "--set", "search.pike_b.top_k=2",
        "--set", "llm.max_retries=2", "--set", "llm.timeout_s=5", "--json", *extra,
    ]
    env = {**os.environ, "PIKE_CACHE_DIR": str(tmp_path / "cache"), "NO_PROXY": "127.0.0.1,localhost", **(env or {})}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert p.returncode == 0, p.stderr[-4000:]
    (tmp_path / "stderr.log").write_text(p.stderr)  # the progress lines
    return out, json.loads(p.stdout)


def db(out: Path) -> sqlite3.Connection:
    con = sqlite3.connect(out / "run.db")
    con.row_factory = sqlite3.Row
    return con


@pytest.mark.slow
def test_pike_b_parents_fixes_budget_and_costs(tmp_path, prices):
    script = Script([fenced(FUSED), fenced(BROKEN), fenced(SLOW), "I would rather not write code today."])
    with FakeLLMServer(script) as server:
        out, doc = optimize(tmp_path, server, prices, "--strategy", "pike-b", "--budget", "12")
    con = db(out)
    ex = con.execute("SELECT * FROM exchanges").fetchall()
    charged = [e for e in ex if e["role"] in ("coa", "efa")]
    assert len(charged) == 12  # the budget stops at exactly N (IBA is not charged, as in the paper)
    assert sum(e["role"] == "iba" for e in ex) == 1
    assert all(e["status"] == "done" for e in ex)
    # Costs: tokens x the price table override, summed in the store and in the table.
    expected = sum((e["input_tokens"] * 1.0 + e["output_tokens"] * 4.0) / 1e6 for e in ex)
    assert abs(sum(e["cost_usd"] for e in ex) - expected) < 1e-9
    assert abs(doc["usd"] - expected) < 1e-9 and doc["queries"] == 12
    sols = con.execute("SELECT * FROM solutions ORDER BY id").fetchall()
    # Broken candidates were repaired by the EFA, and the repair is linked to what it fixed.
    efa = [s for s in sols if s["origin"] == "efa"]
    assert efa and all(s["fix_of"] is not None and s["status"] == "ok" for s in efa)
    assert all(sols[[x["id"] for x in sols].index(s["fix_of"])]["status"] != "ok" for s in efa)
    # A reply without code produced no candidate but was recorded (and paid).
    assert any(e["response"] and "rather not" in e["response"] for e in ex)
    # Phase 1 parents: the top-2 correct candidates of phase 0 by runtime.
    phase0 = [s for s in sols if s["phase"] == 0 and s["status"] == "ok"]
    top = {s["id"] for s in sorted(phase0, key=lambda s: (s["runtime_ms"], s["id"]))[:2]}
    phase1 = [s for s in sols if s["phase"] == 1 and s["origin"] == "coa"]
    assert phase1 and {s["parent_id"] for s in phase1} <= top
    # Phase 0 applied the brainstormed ideas.
    assert {s["idea"] for s in sols if s["phase"] == 0 and s["origin"] == "coa"} <= set(IDEAS_LIST)
    row = doc["rows"][0]
    assert row["speedup_eager"] and row["fix_attempts"] == len(efa) and row["chains_fixed"] >= 1
    # The pool's utilisation is in the store: every evaluation took the one slot, held for part of the run.
    pool = json.loads(con.execute("SELECT value FROM meta WHERE key = 'pool'").fetchone()[0])
    assert pool["devices"] == ["cpu"] and pool["jobs"][0] >= len(sols)
    assert 0 < pool["held_fraction"][0] <= 1 and 0 < pool["timing_fraction"][0] < pool["held_fraction"][0]
    assert pool["history"][-1][0] == round(pool["wall_s"], 2) and pool["history"][-1][3] == pool["jobs"]
    assert pool["history"][-1][4] == 1  # the one task got past its start-up
    assert pool["kernels_active"] == [None] and pool["kernels_active_note"] == "no GPU in the pool"
    best = (out / "best" / "ln_mlp.py").read_text()
    if row["fallback"]:
        # On a CPU at this tiny size a rewrite may not beat eager when re-timed side by side: the file
        # is then the task's own model and says why.
        assert best.startswith('"""PIKE: no solution beat eager') and "class Model(" in best
    else:
        assert "State-dict compatible: yes" in best and "class ModelNew" in best


IDEAS_LIST = ["Fuse the bias add into the matmul with addmm.", "Use F.layer_norm directly.", "Apply ReLU in place."]


@pytest.mark.slow
def test_provider_faults_are_survived_and_recorded(tmp_path, prices):
    # One request at a time, so each query meets the faults in this order (None: a good reply).
    faults = iter([Reply.error(429, retry_after=0), None, Reply.error(500), Reply.error(500), Reply.error(500),
                   Reply.malformed(), Reply.slow(8.0)])

    def responder(req):
        text = last_user_message(req)
        if text.startswith("Brainstorm"):
            return Reply(IDEAS)
        nxt = next(faults, None)
        return nxt if nxt is not None else Reply(fenced(FUSED))

    with FakeLLMServer(responder) as server:
        out, doc = optimize(tmp_path, server, prices, "--strategy", "pike-b", "--budget", "6", "--set", "llm.concurrency=1")
    con = db(out)
    ex = con.execute("SELECT * FROM exchanges WHERE role != 'iba'").fetchall()
    assert len(ex) == 6
    errors = [e["error"] for e in ex if e["error"]]
    assert any("500" in err or "server" in err.lower() for err in errors)  # repeated 500s gave up
    assert any("malformed" in err.lower() or "json" in err.lower() for err in errors)
    ok_after_retry = [e for e in ex if e["attempts"] == 2 and not e["error"]]
    assert len(ok_after_retry) == 2  # 429 then success; a timeout then success
    assert doc["rows"][0]["valid"] >= 1  # the run went on and found a correct candidate


@pytest.mark.slow
def test_kill_then_resume_finishes_within_budget(tmp_path, prices):
    def responder(req):
        text = last_user_message(req)
        if text.startswith("Brainstorm"):
            return Reply(IDEAS)
        return Reply(fenced(SLOW if "A solution" not in text else FUSED), delay=0.4)

    with FakeLLMServer(responder) as server:
        out = tmp_path / "run"
        cmd = [
            sys.executable, "-m", "pike", "optimize", str(TASK), "--llm", server.model_string("scripted"), "--out", str(out),
            "--set", f"llm.prices_file={prices}", "--set", "search.pike_b.num_branches=4", "--set", "search.pike_b.top_k=2",
            "--strategy", "pike-b", "--budget", "10",
        ]
        env = {**os.environ, "PIKE_CACHE_DIR": str(tmp_path / "cache"), "NO_PROXY": "127.0.0.1,localhost"}
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        # Kill -9 once a few queries have been made.
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(0.3)
            if (out / "run.db").exists():
                try:
                    n = sqlite3.connect(out / "run.db").execute("SELECT COUNT(*) FROM exchanges WHERE role != 'iba'").fetchone()[0]
                except sqlite3.OperationalError:
                    continue
                if n >= 3:
                    break
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        before = db(out).execute("SELECT COUNT(*) FROM exchanges WHERE role != 'iba'").fetchone()[0]
        assert 3 <= before < 10
        r = subprocess.run([sys.executable, "-m", "pike", "optimize", "--resume", str(out), "--json"], capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    con = db(out)
    charged = con.execute("SELECT COUNT(*) FROM exchanges WHERE role IN ('coa', 'efa')").fetchone()[0]
    assert charged == 10  # within the budget: in-flight queries at the kill counted as spent
    assert con.execute("SELECT COUNT(*) FROM exchanges WHERE role = 'iba'").fetchone()[0] == 1  # ideas were kept
    assert con.execute("SELECT COUNT(*) FROM solutions WHERE status = 'pending'").fetchone()[0] == 0
    assert json.loads(r.stdout)["rows"][0]["valid"] >= 1


@pytest.mark.slow
def test_cmd_provider_end_to_end(tmp_path, prices):
    script = tmp_path / "model.py"
    script.write_text(
        "import sys\n"
        "prompt = sys.stdin.read()\n"
        f"fused = {FUSED!r}\n"
        "if 'Brainstorm' in prompt:\n"
        "    print('1. Fuse the bias into addmm.')\n"
        "else:\n"
        "    print('```python\\n' + fused + '\\n```')\n"
    )
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pike", "optimize", str(TASK), "--llm", f"cmd:{sys.executable} {script}", "--out", str(out),
           "--strategy", "pike-b", "--budget", "4", "--set", "search.pike_b.num_branches=2", "--set", "search.pike_b.top_k=1", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PIKE_CACHE_DIR": str(tmp_path / "cache")}, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads(p.stdout)
    assert doc["queries"] == 4 and doc["rows"][0]["valid"] == 4
    assert (out / "best" / "ln_mlp.py").exists()


def test_missing_key_is_an_error_before_any_work(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    p = subprocess.run([sys.executable, "-m", "pike", "optimize", str(TASK), "--llm", "openai/gpt-4.1", "--out", str(tmp_path / "r")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and "OPENAI_API_KEY" in p.stderr
    assert not (tmp_path / "r" / "best").exists()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["pike-b", "pike-o"])
def test_time_limit_stops_the_llm_search(tmp_path, prices, strategy):
    with FakeLLMServer(Script([fenced(FUSED)])) as server:
        out, doc = optimize(tmp_path, server, prices, "--strategy", strategy, "--budget", "50", "--time-limit", "0.0001")
    row = doc["rows"][0]
    # Over before the search began: no query was sent, and the run still ends with its table.
    assert doc["queries"] == 0 and row["status"] == "stopped" and row["eager_ms"] > 0
    assert db(out).execute("SELECT COUNT(*) FROM exchanges").fetchone()[0] == 0


@pytest.mark.parametrize("setting,message", [
    ("search.final_compile_modes=max-autotune-with-typo", "not a compile mode on cpu (known: default)"),
    ("search.offline.combos=some", "must be 'promising' or 'all'"),
    ("search.time_limit_min=0", "must be positive"),
    ("llm.prompt_dir=/no/such/prompts", "llm.prompt_dir: /no/such/prompts is not a directory"),
])
def test_bad_setting_is_an_error_before_any_work(tmp_path, setting, message):
    p = subprocess.run([sys.executable, "-m", "pike", "optimize", str(TASK), "--set", setting, "--out", str(tmp_path / "r")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and message in p.stderr, p.stderr[-2000:]
    assert not (tmp_path / "r").exists()  # no run directory to get in the way of the corrected command


@pytest.mark.slow
def test_improved_preset_feedback_then_replay(tmp_path, prices):
    """pike-b-plus puts measured feedback in the prompts (eager and compile times, profiles, speedups,
    best history) from the brainstorm on, gives sibling branches distinct prompts, asks again once
    after a reply with no code, re-times parents interleaved; `pike replay` re-evaluates the stored
    candidates and prints the same table."""
    prose = "I would rather not write code today: fuse the two linear layers."
    script = Script([fenced(FUSED), prose, fenced(SLOW), fenced(FUSED)])
    with FakeLLMServer(script) as server:
        out, doc = optimize(tmp_path, server, prices, "--strategy", "pike-b-plus", "--budget", "6")
    con = db(out)
    ex = con.execute("SELECT * FROM exchanges ORDER BY id").fetchall()
    prompts = {e["id"]: json.loads(e["prompt"]) for e in ex}
    later = [prompts[e["id"]][-1]["content"] for e in ex if e["role"] == "coa" and e["phase"] >= 1]
    assert later
    assert any("ms per forward while profiled" in p and "unattributed" in p for p in later)  # the parent's profile
    assert any("vs eager" in p or "speedup" in p.lower() for p in later)
    # The brainstorm and phase 0 already see the measured times and where the reference's time goes.
    first = [prompts[e["id"]][-1]["content"] for e in ex if e["role"] in ("iba", "coa") and e["phase"] == 0 and not e["reask_of"]]
    assert len(first) == 5
    for text in first:
        assert "PyTorch eager (the reference): " in text and "torch.compile (default mode): " in text
        assert "Both timed side by side" in text and "## Profile of the reference" in text
        assert "Target device: the CPU" in text and "## Target device\nCPU: " in text
        assert "Inputs the evaluator uses: [16, 48] (size set 'small'); correctness is also checked on size set 'small_alt'" in text
        # The policy the evaluator applies, read from the reference (its outputs' dtype and tolerance).
        assert "Numerical policy: the reference is the task's Model as written" in text
        assert "fp32 outputs within atol=0.01, rtol=0.01" in text
    # No two prompts of a phase are the same.
    for phase in {e["phase"] for e in ex if e["role"] == "coa"}:
        texts = [json.dumps(prompts[e["id"]]) for e in ex if e["role"] == "coa" and e["phase"] == phase and not e["reask_of"]]
        assert len(texts) == len(set(texts)), phase
    # The prose reply: recorded with its reason, asked again once with a reminder, shown and counted.
    unusable = [e for e in ex if e["unusable"]]
    assert unusable and all(e["unusable"] == "no code block" and e["response"].startswith("I would rather") for e in unusable)
    for e in unusable:
        if e["reask_of"] is None:
            again = [x for x in ex if x["reask_of"] == e["id"]]
            assert len(again) == 1 or len([x for x in ex if x["role"] in ("coa", "efa")]) == 6  # or the budget ran out
            for x in again:
                assert prompts[x["id"]][:2] == prompts[e["id"]] and "could not be used: no code block" in prompts[x["id"]][-1]["content"]
    row = doc["rows"][0]
    assert row["unusable"] == len(unusable) and row["unusable_reasons"] == {"no code block": len(unusable)}
    assert row["candidates"] == con.execute("SELECT COUNT(*) FROM solutions WHERE origin IN ('coa', 'efa')").fetchone()[0]
    assert row["queries"] == 6 and row["valid_rate"] == row["valid"] / (row["evaluated"] + len(unusable))
    assert "reply unusable: no code block" in (tmp_path / "stderr.log").read_text()
    # Contenders re-timed beside eager before parents are chosen: one window, eager and solutions.
    timed = con.execute("SELECT window, solution_id, baseline, speedup FROM retimings WHERE purpose = 'contenders'").fetchall()
    assert any(r[2] == "eager" for r in timed) and len([r for r in timed if r[1] is not None and r[3]]) >= 2
    env = {**os.environ, "PIKE_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "pike", "replay", str(out), "--device", "cpu", "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    assert rep["rows"][0]["task"] == "ln_mlp" and rep["rows"][0]["valid"] == doc["rows"][0]["valid"]
    assert Path(rep["replay_dir"], "best", "ln_mlp.py").exists()


@pytest.mark.slow
def test_a_finished_search_goes_on_when_resumed_with_a_larger_budget(tmp_path, prices):
    script = Script([fenced(FUSED), fenced(SLOW)])
    with FakeLLMServer(script) as server:
        out, doc = optimize(tmp_path, server, prices, "--strategy", "pike-b", "--budget", "4")
        assert doc["queries"] == 4
        env = {**os.environ, "PIKE_CACHE_DIR": str(tmp_path / "cache"), "NO_PROXY": "127.0.0.1,localhost"}
        resume = [sys.executable, "-m", "pike", "optimize", "--resume", str(out), "--json"]
        r = subprocess.run(resume + ["--budget", "8"], capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert json.loads(r.stdout)["queries"] == 8
        charged = "SELECT COUNT(*) FROM exchanges WHERE role IN ('coa', 'efa')"
        assert db(out).execute(charged).fetchone()[0] == 8
        # Resumed as it is, a finished search stays finished: nothing more is asked.
        r = subprocess.run(resume, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert db(out).execute(charged).fetchone()[0] == 8
    phases = [row[0] for row in db(out).execute("SELECT DISTINCT phase FROM exchanges WHERE role = 'coa' ORDER BY phase")]
    assert phases == list(range(len(phases))) and len(phases) >= 2  # the search went on into later phases


@pytest.mark.slow
def test_prompt_dir_replaces_one_template_and_a_retired_key_still_resumes(tmp_path, prices):
    """llm.prompt_dir through the CLI: its coa.txt is what the model gets, the other templates are the
    shipped ones. The run's stored config with `search.roofline` (a knob that no longer exists) resumes."""
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "coa.txt").write_text("Custom optimiser prompt for {task_name}.\n\n{reference}\n\n{idea}\n")
    with FakeLLMServer(Script([fenced(FUSED)])) as server:
        out, doc = optimize(tmp_path, server, prices, "--strategy", "pike-b", "--budget", "2", "--set",
                            "search.pike_b.num_branches=2", "--set", f"llm.prompt_dir={prompts}")
        users = [last_user_message(b) for b in server.bodies]
    coa = [u for u in users if not u.startswith("Brainstorm")]
    assert len(coa) == 2 and all(u.startswith("Custom optimiser prompt for ln_mlp.") for u in coa)
    assert sum(u.startswith("Brainstorm") for u in users) == 1  # iba.txt: the shipped template
    assert doc["queries"] == 2 and doc["rows"][0]["valid"] == 2

    con = db(out)
    cfg = json.loads(con.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
    assert cfg["llm"]["prompt_dir"] == str(prompts.resolve())
    cfg["search"]["roofline"] = True  # as a run of an earlier version stored it
    con.execute("UPDATE meta SET value = ? WHERE key = 'config'", (json.dumps(cfg),))
    con.commit()
    con.close()
    env = {**os.environ, "PIKE_CACHE_DIR": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, "-m", "pike", "optimize", "--resume", str(out), "--json"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout)["rows"][0]["valid"] == 2


@pytest.mark.slow
def test_a_run_stored_with_flat_search_keys_resumes_with_them(tmp_path, prices):
    """A run directory of a version before the strategy sections (run.db's config and config.toml with
    search.num_branches and the like, a preset name that is now an alias) resumes, its knobs in force."""
    from pike.config import dotted

    with FakeLLMServer(Script([fenced(FUSED)])) as server:
        out, doc = optimize(tmp_path, server, prices, "--strategy", "pike-b", "--budget", "2", "--set",
                            "search.pike_b.num_branches=2", "--set", "search.pike_b.top_k=1")
        assert doc["queries"] == 2
        con = db(out)
        cfg = json.loads(con.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
        # As an earlier version stored it: the strategy sections' keys flat in search, their earlier names.
        flat = {k.rpartition(".")[2] if k.startswith(("pike_b.", "pike_o.")) else k: v for k, v in dotted(cfg["search"]).items()}
        flat["offline_combos"] = flat.pop("offline.combos")
        flat["strategy"] = "pike-b-cheap-efa"
        assert "num_branches" in flat and not any("." in k for k in flat)
        cfg["search"] = flat
        con.execute("UPDATE meta SET value = ? WHERE key = 'config'", (json.dumps(cfg),))
        con.commit()
        con.close()
        (out / "config.toml").write_text('[search]\nstrategy = "pike-b-cheap-efa"\nnum_branches = 2\ntop_k = 1\n')
        env = {**os.environ, "PIKE_CACHE_DIR": str(tmp_path / "cache"), "NO_PROXY": "127.0.0.1,localhost"}
        p = subprocess.run([sys.executable, "-m", "pike", "optimize", "--resume", str(out), "--budget", "6", "--json"],
                           capture_output=True, text=True, env=env, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout)["queries"] == 6
    # Two branches a phase (the stored num_branches; the default is 10), one parent each (top_k 1).
    per_phase = db(out).execute("SELECT phase, COUNT(*) FROM exchanges WHERE role = 'coa' GROUP BY phase ORDER BY phase").fetchall()
    assert [tuple(r) for r in per_phase] == [(0, 2), (1, 2), (2, 2)]
    # The resume wrote the config back in the sections.
    assert "[search.pike_b]\nnum_branches = 2\ntop_k = 1\n" in (out / "config.toml").read_text()
