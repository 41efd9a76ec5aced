"""The fork server: a clean process that forks one child per job (evaluator step 3).

Started by :class:`pike.evaluate.sandbox.Sandbox` with a scrubbed environment, it imports torch and the
worker once (so a child starts in ~30 ms instead of ~2 s) and never touches ``torch.cuda``: forking a
process that has a CUDA context is unsafe. Each child gets its own session (so a timeout kills its whole
process group), a raised ``oom_score_adj``, a temp working directory, its own log file on fds 1 and 2,
and the per-job environment (the GPU pin, cache directories).

Protocol on stdin/stdout, one JSON object per line:
  -> {"job_dir": ..., "cwd": ..., "env": {...}}
  <- {"pid": N}                            after the fork
  <- {"pid": N, "exit": code, "signal": s}  when the child ends (killed by the orchestrator or not)
One job at a time per server; the orchestrator runs one server per worker slot.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time


def _child(req: dict) -> None:
    os.setsid()
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")  # under memory pressure, kill the candidate before anything else
    except OSError:
        pass
    os.environ.update(req.get("env", {}))
    cpus = os.environ.get("PIKE_CPU_AFFINITY")
    if cpus:  # keep compilers off the cores of the process that is being timed (and vice versa)
        try:
            os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
        except (OSError, ValueError):
            pass
    try:
        os.chdir(req["cwd"])
        log = os.open(os.path.join(req["job_dir"], "log.txt"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:  # the job's directory is gone (the orchestrator is shutting down): nothing to run
        os._exit(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(devnull)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    code = 1
    try:
        from pike.evaluate import worker

        code = worker.main(req["job_dir"])
    except BaseException:  # noqa: BLE001 - report anything, then leave without running atexit hooks
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        remove_ipc_files(os.getpid())
        os._exit(code)


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


def _status(st: int) -> tuple[int | None, int | None]:
    if os.WIFSIGNALED(st):
        return None, os.WTERMSIG(st)
    return os.WEXITSTATUS(st), None


def _wait(pid: int, orchestrator: int):
    """The child's wait status; None if the orchestrator died first (a killed run): then the child,
    which may hang with nobody left to enforce its timeout, is killed with its process group."""
    while True:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            return st
        if os.getppid() != orchestrator:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return None
        time.sleep(0.005)


def serve() -> None:
    # Preload what every child needs; nothing here may initialise CUDA.
    import torch  # noqa: F401

    from pike.evaluate import worker  # noqa: F401

    orchestrator = os.getppid()

    out = sys.stdout
    out.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        out.flush()
        pid = os.fork()
        if pid == 0:
            _child(req)
        out.write(json.dumps({"pid": pid}) + "\n")
        out.flush()
        st = _wait(pid, orchestrator)
        if st is None:
            return  # the orchestrator is gone, and with it the child's timeout: the child was killed
        code, sig = _status(st)
        out.write(json.dumps({"pid": pid, "exit": code, "signal": sig}) + "\n")
        out.flush()


if __name__ == "__main__":
    try:
        serve()
    except (BrokenPipeError, KeyboardInterrupt):  # the orchestrator went away: nothing left to report
        pass
