"""A killed orchestrator leaves no evaluation child behind: neither one waiting for its answer nor a
candidate that hangs (its timeout was the orchestrator's to enforce); and its scratch directories go
with the next run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here evaluates candidates or runs a search

HERE = Path(__file__).parent

ASKER = """
import os, sys
from pathlib import Path
from pike.evaluate.harness import ask, configure
configure(alive_fd=int(sys.argv[2]))
ask(Path(sys.argv[1]), "checks")
"""


def _asker(job: Path) -> tuple[subprocess.Popen, int]:
    """A child waiting for its answer, and the end of the pipe whose closing says the orchestrator is gone."""
    r, w = os.pipe()
    child = subprocess.Popen([sys.executable, "-c", ASKER, str(job), str(r)], pass_fds=(r,))
    os.close(r)
    return child, w


def test_a_child_waiting_for_a_killed_orchestrator_leaves(tmp_path):
    from pike.evaluate.harness import ORPHANED

    child, alive = _asker(tmp_path)
    deadline = time.monotonic() + 60
    while not (tmp_path / "checks.ready").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.close(alive)  # as the orchestrator's death closes it
    assert child.wait(timeout=30) == ORPHANED
    # and when the job directory is removed under it (the orchestrator alive)
    job = tmp_path / "job"
    job.mkdir()
    child, alive = _asker(job)
    deadline = time.monotonic() + 60
    while not (job / "checks.ready").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    (job / "checks.ready").unlink()
    job.rmdir()
    assert child.wait(timeout=30) == ORPHANED
    os.close(alive)


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


def _descendants(root: int) -> set[int]:
    parent = {}
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit():
                parent[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            pass
    found, todo = set(), [root]
    while todo:
        cur = todo.pop()
        kids = [pid for pid, pp in parent.items() if pp == cur and pid not in found]
        found.update(kids)
        todo += kids
    return found


def test_a_hung_candidate_dies_with_its_orchestrator(tmp_path):
    orch = subprocess.Popen([sys.executable, "-c", ORCHESTRATOR, str(tmp_path), str(HERE)], stdout=subprocess.PIPE, text=True)
    try:
        workdir = Path(orch.stdout.readline().strip())
        deadline = time.monotonic() + 180
        while not any('"candidate"' in j.read_text() for j in workdir.glob("jobs/*/job.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3.0)  # the candidate's forward, looping
        tree = _descendants(orch.pid)
        assert any(b"pike.evaluate.child" in Path(f"/proc/{p}/cmdline").read_bytes() for p in tree if Path(f"/proc/{p}").exists()), \
            "the candidate never started"
    finally:
        orch.kill()  # as a killed run: no clean-up of its own
        orch.wait()
    deadline = time.monotonic() + 20
    while {p for p in tree if Path(f"/proc/{p}").exists()} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not {p for p in tree if Path(f"/proc/{p}").exists()}, "processes of the evaluation outlived their orchestrator"


def test_scratch_directories_of_a_dead_run_are_removed(tmp_path):
    from pike.evaluate.tempdirs import OWNER_FILE, STALE_UNOWNED_S, owned_tempdir

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
