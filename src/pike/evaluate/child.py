"""What runs in a job's own process before the job: its set-up, and the entry of a sandbox instance.

A job's process gets its request from the orchestrator as JSON: ``job_dir``, ``env`` (the job's cache
directories, extension build), ``cpus`` and ``timing_cpus`` (the slot's cores), ``cwd`` (an empty
directory), its limits and, where there is one, its cgroup. Nothing of this reaches the environment:
the candidate sees the user's scrubbed environment plus what its device needs. ``alive`` is a pipe
the orchestrator holds open: its hang-up means the orchestrator is gone (``harness.orchestrator_gone``).

A sandbox instance (``python -m pike.evaluate.child --ctl FD``, started by ``instance.Instance``
before its job is known) imports torch and the harness, writes ``ready`` on its control pipe, then
reads its one job from stdin, runs it and leaves; under bwrap everything it started ends with it.
It never touches ``torch.cuda`` before its job: a spare must not hold a GPU context.
"""

from __future__ import annotations

import json
import os
import sys

TIMING_STARTED = "timing.started"  # written in the job directory when the timed runs start (harness.pin_for_timing)


def _pin(cpus) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, set(cpus))
        except OSError:
            pass


def run_job(req: dict, alive: int) -> int:
    """Set up this process for its job (before any candidate code), then run it."""
    from pike.evaluate import harness
    from pike.evaluate.limits import apply_rlimits

    if req.get("cgroup"):
        with open(req["cgroup"], "w") as f:
            f.write(str(os.getpid()))
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")  # under memory pressure, the candidate goes before anything else
    except OSError:
        pass
    os.environ.update(req.get("env", {}))
    _pin(req.get("cpus"))
    if req.get("cwd"):
        os.chdir(req["cwd"])
    os.environ["PWD"] = os.getcwd()  # as a shell sets it for the processes it starts
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    harness.configure(job_dir=req["job_dir"], timing_cpus=req.get("timing_cpus"), alive_fd=alive,
                      memory_bytes=req.get("memory_bytes"))
    apply_rlimits(req.get("memory_bytes"), req.get("file_size_bytes"))
    from pike.evaluate import worker

    return worker.main(req["job_dir"])


def finish(run) -> None:
    """Run ``run()`` and leave with its code, without running atexit hooks (a forked child must not
    run its server's)."""
    code = 1
    try:
        code = run()
    except BaseException:  # noqa: BLE001 - report anything
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        remove_ipc_files(os.getpid())
        os._exit(code)


def main(argv: list[str]) -> None:
    ctl = int(argv[argv.index("--ctl") + 1])
    if "--cpus" in argv:
        _pin([int(c) for c in argv[argv.index("--cpus") + 1].split(",")])
    # What every job needs, before the job is known; nothing here may initialise CUDA.
    import torch  # noqa: F401

    from pike.evaluate import worker  # noqa: F401

    os.write(ctl, b"ready\n")
    os.close(ctl)
    line = sys.stdin.buffer.readline()
    if not line.strip():
        os._exit(0)  # the orchestrator closed without a job: a spare nobody needed
    finish(lambda: run_job(json.loads(line), os.dup(0)))


def remove_ipc_files(pid: int, root: str = "/dev/shm") -> list[str]:
    """Shared-memory files of a process that exported CUDA IPC handles: the driver's
    (``cuda.shm.<uid>.<pid in hex>.<n>``) and torch's reference counters for shared CUDA memory
    (``torch_<pid>_<random>_<n>``). Both are removed at a normal exit, but a child leaves by
    ``os._exit``, so every candidate that handed its outputs to the comparator left them behind
    (counted on an H200: one of each per candidate). The comparator has answered by then."""
    import re

    pat = re.compile(rf"cuda\.shm\.\d+\.{pid:x}\.\d+|torch_{pid}_\d+_\d+")
    removed = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        if pat.fullmatch(name):
            try:
                os.unlink(os.path.join(root, name))
                removed.append(name)
            except OSError:
                pass
    return removed


if __name__ == "__main__":
    main(sys.argv)
