"""A killed orchestrator leaves no evaluation child behind: neither one waiting for its answer nor a
candidate that hangs (its timeout was the orchestrator's to enforce); and its scratch directories go
with the next run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent

ASKER = """
import sys
from pathlib import Path
from pike.evaluate.harness import ask
ask(Path(sys.argv[1]), "checks")
"""


def test_a_child_waiting_for_a_killed_orchestrator_leaves(tmp_path):
    from pike.evaluate.harness import ORPHANED

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    env = {**os.environ, "PIKE_ORCHESTRATOR_PID": str(gone.pid)}
    p = subprocess.run([sys.executable, "-c", ASKER, str(tmp_path)], env=env, timeout=60)
    assert p.returncode == ORPHANED and (tmp_path / "checks.ready").exists()
    # and when the job directory is removed under it (the orchestrator alive)
    job = tmp_path / "job"
    job.mkdir()
    env["PIKE_ORCHESTRATOR_PID"] = str(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", ASKER, str(job)], env=env)
    deadline = time.monotonic() + 30
    while not (job / "checks.ready").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    (job / "checks.ready").unlink()
    job.rmdir()
    assert child.wait(timeout=30) == ORPHANED


ORCHESTRATOR = """
import sys, time
from pathlib import Path
from pike.evaluate.evaluator import EvalConfig, Evaluator
from pike.task import load_task
ev = Evaluator(EvalConfig(cache_dir=Path(sys.argv[1]), timeout_s=600))
print(ev.workdir, flush=True)
here = Path(sys.argv[2])
ev.evaluate(load_task(here / "tasks" / "ln_mlp.py", size="small"), (here / "candidates" / "ln_hang.py").read_text())
"""


def _processes_in(path: str) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and os.readlink(p / "cwd").startswith(path):
                pids.append(int(p.name))
        except OSError:
            pass
    return pids


def test_a_hung_candidate_dies_with_its_orchestrator(tmp_path):
    orch = subprocess.Popen([sys.executable, "-c", ORCHESTRATOR, str(tmp_path), str(HERE)], stdout=subprocess.PIPE, text=True)
    try:
        workdir = orch.stdout.readline().strip()
        deadline = time.monotonic() + 120
        while not _processes_in(workdir) and time.monotonic() < deadline:  # the candidate's child, looping
            time.sleep(0.1)
        assert _processes_in(workdir), "the candidate never started"
        time.sleep(1.0)
    finally:
        orch.kill()  # as a killed run: no clean-up of its own
        orch.wait()
    deadline = time.monotonic() + 20
    while _processes_in(workdir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_in(workdir), "the hung candidate outlived its orchestrator"


def test_scratch_directories_of_a_dead_run_are_removed(tmp_path):
    from pike.evaluate.sandbox import OWNER_FILE, STALE_UNOWNED_S, owned_tempdir

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid is free now
    for name, owner in [("pike-eval-dead", gone.pid), ("pike-eval-live", os.getpid()), ("pike-eval-old", None), ("pike-eval-new", None)]:
        (tmp_path / name).mkdir()
        if owner is not None:
            (tmp_path / name / OWNER_FILE).write_text(str(owner))
    old = time.time() - STALE_UNOWNED_S - 60
    os.utime(tmp_path / "pike-eval-old", (old, old))
    (tmp_path / "other-dead").mkdir()
    (tmp_path / "other-dead" / OWNER_FILE).write_text(str(gone.pid))
    made = owned_tempdir("pike-eval-", str(tmp_path))
    assert Path(made, OWNER_FILE).read_text() == str(os.getpid())
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["pike-eval-live", "pike-eval-new", "other-dead", Path(made).name])
