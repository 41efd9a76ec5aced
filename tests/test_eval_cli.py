"""The evaluator against reward hacks and accidents, each through the real `pike eval` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here evaluates candidates or runs a search

HERE = Path(__file__).parent
TASKS = HERE / "tasks"
CANDS = HERE / "candidates"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("pike-cache")


def pike_eval(cache: Path, task: str, cand: str, *extra: str, env: dict | None = None) -> dict:
    return pike_eval_logged(cache, task, cand, *extra, env=env)[0]


def pike_eval_logged(cache: Path, task: str, cand: str, *extra: str, env: dict | None = None) -> tuple[dict, str]:
    """The result and what `pike eval` wrote to stderr."""
    cmd = [sys.executable, "-m", "pike", "eval", str(TASKS / task), str(CANDS / cand), "--json", *extra]
    full_env = {**os.environ, "PIKE_CACHE_DIR": str(cache), **(env or {})}
    p = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=300)
    assert p.stdout.strip(), f"no JSON from pike eval (rc={p.returncode}):\n{p.stderr[-3000:]}"
    result = json.loads(p.stdout)
    # The exit code says whether the solution passed, for scripts.
    assert (p.returncode == 0) == (result["status"] == "ok"), (p.returncode, result["status"])
    return result, p.stderr


# ---------------------------------------------------------------- must not pass

# One evaluation each: the task, the candidate, the verdict, and what its message or stage must say
# (the last two must pass).
VERDICTS = [
    ("ln_mlp.py", "ln_pointer_cache.py", "mismatch", "", None),
    ("ln_mlp.py", "ln_count_cache.py", "mismatch", "", "timing"),  # right while checked, wrong while timed
    ("ln_mlp.py", "ln_lazy_subclass.py", "rejected", "subclass", None),
    # Plain and right on every check; in the timing loop a subclass whose clone does the work. Its
    # exact type is checked before the harness clones it.
    ("ln_mlp.py", "ln_clone_subclass.py", "rejected", "Deferred (a torch.Tensor subclass)", "timing"),
    # A loose content key (values rounded to 0.1): the probe's whole new input sets miss it.
    ("wide_mlp.py", "ln_approx_cache.py", "suspect", "cached by input content", None),
    ("ln_mlp.py", "ln_thread.py", "rejected", "threading", None),
    ("ln_mlp.py", "ln_patch_allclose.py", "rejected", "torch.allclose", None),
    ("ln_mlp.py", "ln_patch_timer.py", "rejected", "time.perf_counter", None),
    ("ln_mlp.py", "ln_mutates_input.py", "mismatch", "modified input 0", None),
    ("ln_mlp.py", "ln_calls_reference.py", "rejected", "ln_mlp", None),
    ("ln_mlp.py", "ln_wrong_shape.py", "mismatch", "shape (1, 48)", None),
    ("ln_mlp.py", "ln_nan.py", "mismatch", "NaN", None),
    ("ln_mlp.py", "ln_drops_affine.py", "mismatch", "default initialisation", None),
    ("ln_mlp.py", "ln_abort.py", "runtime_error", "SIGABRT", None),
    # It searches its working and job directories, the evaluator's work directory and what its
    # job.json names for input files equal to its input and the outputs stored beside them (and
    # passed every check when job.json named the reference's directory): it finds none.
    ("ln_mlp.py", "ln_reads_answers.py", "mismatch", "got 0", None),
    ("ln_mlp.py", "ln_big_list.py", "mismatch", "not read", None),
    # A ModelOutput-style container (a dict subclass with dataclass fields) holds the outputs.
    ("ln_mlp_output_class.py", "output_class_fused.py", "ok", "", None),
    ("ln_mlp.py", "ln_model_only.py", "ok", "", None),
]


@pytest.mark.parametrize("task, cand, status, says, stage", VERDICTS, ids=[v[1].removesuffix(".py") for v in VERDICTS])
def test_verdict(cache, task, cand, status, says, stage):
    r = pike_eval(cache, task, cand)
    assert r["status"] == status, r
    assert says in r["message"], r["message"]
    assert stage is None or r["stage"] == stage, r


def test_output_cached_by_input_content(cache):
    # Right on every check (new inputs miss its cache, and the weights are in its key), so only
    # timing on inputs it has never seen, against the repeated timing inputs, shows it.
    r = pike_eval(cache, "wide_mlp.py", "wide_content_cache.py")
    assert r["status"] == "suspect", r
    assert "inputs it had not seen" in r["message"] and "cached by input content" in r["message"]
    # An honest rewrite of the same task takes as long on new inputs: it passes.
    r = pike_eval(cache, "wide_mlp.py", "wide_addmm.py")
    assert r["status"] == "ok", r


def test_dict_subclass_that_works_when_read(cache):
    # A ModelOutput-style container may hold the outputs, but it is read through dict's own C
    # accessors: its items() (which would do the work outside the timed region) never run.
    r = pike_eval(cache, "ln_mlp_output_class.py", "output_class_lazy.py")
    assert r["status"] not in ("ok", "suspect"), r


def test_layernorm_dropped_with_its_weights(cache):
    r = pike_eval(cache, "ln_mlp.py", "ln_drops_norm_module.py")
    assert r["status"] == "rejected", r
    assert r["state_dict_compatible"] is False
    assert "norm.weight" in r["message"]


def test_hanging_forward_times_out_then_next_candidate_is_fine(cache):
    r = pike_eval(cache, "ln_mlp.py", "ln_hang.py", "--timeout", "8")
    assert r["status"] == "timeout", r
    assert "while at: correctness trials" in r["message"], r["message"]  # where the time went
    assert r["durations_s"]["total_s"] < 30
    after = pike_eval(cache, "ln_mlp.py", "ln_fused.py")
    assert after["status"] == "ok", after


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_poisoned_reference_cache_is_caught_and_the_next_evaluation_is_normal(tmp_path, sandbox):
    # A cache of its own: every reference it reaches is poisoned. In the sandbox it reaches none (the
    # cache is hidden). Without it, its own outputs are compared with references already in memory (a
    # mismatch) or read after it poisoned them: then the entry is computed again and it runs again,
    # poisons again, and is rejected.
    r, log = pike_eval_logged(tmp_path, "ln_mlp.py", "ln_poisons_cache.py", "--sandbox", sandbox)
    assert r["status"] == "mismatch" or r["status"] == "rejected" and "changed on disk" in r["message"], r
    after, log_after = pike_eval_logged(tmp_path, "ln_mlp.py", "ln_fused.py", "--sandbox", sandbox)
    assert after["status"] == "ok", after
    if sandbox == "none":
        # Whatever it left poisoned (its checksums rewritten to match) was found and computed again.
        assert "signature does not match" in log + log_after and "computed again" in log_after, (log, log_after)
    else:
        assert "signature does not match" not in log + log_after, (log, log_after)  # nothing was reached


def test_candidate_finds_no_api_keys(cache):
    secrets = {"OPENAI_API_KEY": "sk-test", "GITHUB_TOKEN": "ghp_x", "MY_SECRET": "s", "DB_PASSWORD": "p", "ANTHROPIC_API_KEY": "a"}
    r = pike_eval(cache, "ln_mlp.py", "ln_env_keys.py", env=secrets)
    # The candidate adds 1000 to its output if it sees any secret-like variable.
    assert r["status"] == "ok", r


# ---------------------------------------------------------------- must pass


def test_triton_kernel_under_interpreter(cache):
    r = pike_eval(cache, "matmul.py", "matmul_triton.py", "--timeout", "120")
    assert r["status"] == "ok", r
    assert "triton" in r["tags"]
    assert r["runtime_ms"] > 0 and r["eager_ms"] > 0


def test_fused_pytorch_rewrite(cache):
    r = pike_eval(cache, "ln_mlp.py", "ln_fused.py")
    assert r["status"] == "ok", r
    assert r["state_dict_compatible"] is True
    assert r["max_abs_err"] < 1e-3
    assert r["speedup_vs_eager"] > 0 and r["timing"]["runs"] >= 5
    assert r["trials"] >= 5 + 2  # seeded, re-randomised weights and alternate size


def test_honest_candidates_under_background_load_are_not_suspect(cache):
    # A process spinning on one of the cores for the whole evaluation (the test_fused_pytorch_rewrite
    # false alarm happened under such load).
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for task, cand in (("ln_mlp.py", "ln_fused.py"), ("wide_mlp.py", "wide_addmm.py")):
            r = pike_eval(cache, task, cand)
            assert r["status"] == "ok", r
    finally:
        hog.kill()


def test_eval_times_eager_beside_the_candidate_and_prints_the_interval(cache):
    r = pike_eval(cache, "wide_mlp.py", "wide_addmm.py")
    ci = r["speedup_interval"]
    assert ci["lo"] <= r["speedup_vs_eager"] <= ci["hi"] and ci["n"] >= 5 and ci["paired"]
    assert r["timing"]["throughput_ms"] > 0  # back to back, beside the latency
    cmd = [sys.executable, "-m", "pike", "eval", str(TASKS / "wide_mlp.py"), str(CANDS / "wide_addmm.py")]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PIKE_CACHE_DIR": str(cache)}, timeout=300)
    text = " ".join(p.stdout.split())  # the console wraps long lines
    assert p.returncode == 0 and "95% interval" in text and "rounds side by side with eager" in text, p.stdout
    assert "back to back" in text


def test_task_drawing_random_numbers(cache):
    r = pike_eval(cache, "noisy.py", "noisy_fused.py")
    assert r["status"] == "ok", r
    assert "random" in r["task_flags"]


def test_readable_verdict_without_json(cache):
    cmd = [sys.executable, "-m", "pike", "eval", str(TASKS / "ln_mlp.py"), str(CANDS / "ln_nan.py")]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PIKE_CACHE_DIR": str(cache)}, timeout=300)
    assert p.returncode == 1
    assert "MISMATCH" in p.stdout and "NaN" in p.stdout


@pytest.mark.slow
def test_every_eval_key_can_be_set(cache):
    # Keys of the eval section that have no flag of their own: accepted, and in force.
    r = pike_eval(cache, "ln_mlp.py", "ln_fused.py", "--no-time", "--set", "eval.keep_jobs=true", "--set", "eval.trials=2",
                  "--set", "eval.alt_trials=0", "--set", "eval.random_weight_trials=0")
    assert r["status"] == "ok" and r["trials"] == 2, r
    assert "alternate" not in r["message"] and "small_alt" not in r["message"]


@pytest.mark.parametrize("extra, message", [
    (["--set", "eval.trials=0"], "eval.trials: must be at least 1, not '0'"),
    (["--trials", "0"], "--trials (eval.trials): must be at least 1, not '0'"),
    (["--set", "search.budget=3"], "--set search.budget=3: this command takes eval.* keys only"),
    (["--set", "eval.nope=1"], "unknown config key eval.nope"),
])
def test_a_bad_eval_setting_is_one_line(extra, message):
    cmd = [sys.executable, "-m", "pike", "eval", str(TASKS / "ln_mlp.py"), str(CANDS / "ln_fused.py"), *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, p.stderr
