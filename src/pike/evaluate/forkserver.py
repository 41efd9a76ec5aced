"""The fork server: one warm process per slot that forks a child per job, for the jobs that need no
sandbox instance of their own (PIKE's own code: references, baselines, offline variants; every job
when ``eval.sandbox = none``). Both sides of its protocol are here.

Started with a scrubbed environment, it imports torch and the worker once (a child starts in ~30 ms
instead of seconds) and never touches ``torch.cuda``: forking a process that has a CUDA context is
unsafe. Each child gets its own session (a timeout kills its whole process group), the set-up of
``child.run_job`` and, on fds 1 and 2, the FIFO the orchestrator reads its output from (with a cap).

Protocol on stdin/stdout, one JSON object per line:
  -> a job request (see ``child``) plus "log": the FIFO's path
  <- {"pid": N}                            after the fork
  <- {"pid": N, "exit": code, "signal": s}  when the child ends (killed by the orchestrator or not)
One job at a time per server.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from pike.evaluate.instance import read_pipe


# ---------------------------------------------------------------- server (its own process)


def _child(req: dict) -> None:
    from pike.evaluate.child import finish, run_job

    os.setsid()
    try:
        log = os.open(req["log"], os.O_WRONLY)
    except OSError:  # the job's directory is gone (the orchestrator is shutting down): nothing to run
        os._exit(1)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    finish(lambda: run_job(req, os.dup(0)))


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
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
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


# ---------------------------------------------------------------- client (the orchestrator)


class ForkServer:
    def __init__(self, env: dict[str, str], cwd: str, cpus: tuple[int, ...] | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "pike.evaluate.forkserver"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, cwd=cwd, start_new_session=True)
        if cpus and hasattr(os, "sched_setaffinity"):
            try:
                os.sched_setaffinity(self.proc.pid, set(cpus))
            except OSError:
                pass
        self._buf = b""
        try:
            ready = self.read(timeout=300)
        except EOFError:
            ready = None
        if not ready or not ready.get("ready"):
            self.close()
            raise RuntimeError("the evaluation fork server did not start (is torch importable?)")

    @property
    def fd(self) -> int:
        return self.proc.stdout.fileno()

    def read(self, timeout: float) -> dict | None:
        """One protocol line, or None on timeout. EOF raises."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            if not select.select([self.fd], [], [], max(deadline - time.monotonic(), 0))[0]:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise EOFError("fork server exited")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def launch(self, req: dict) -> int:
        self.proc.stdin.write(json.dumps(req).encode() + b"\n")
        self.proc.stdin.flush()
        reply = self.read(timeout=60)
        if reply is None:
            raise RuntimeError("fork server did not answer")
        return reply["pid"]

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


class ForkedJob:
    """A job in a child of the fork server, as the sandbox's run loop watches it (see ``Instance``)."""

    def __init__(self, server: ForkServer, req: dict, job_dir: Path, cgroup=None):
        self.server, self.cgroup, self.cwd = server, cgroup, req["cwd"]
        self.fifo = fifo = job_dir / "log.fifo"
        os.mkfifo(fifo)
        self.log = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self._writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # no end of file before the child opens it
        self.log_open = True
        self.pid = server.launch({**req, "log": str(fifo), "cgroup": cgroup.procs_file if cgroup else None})
        self._status: tuple[int | None, int | None] | None = None

    def fds(self) -> list[int]:
        return [self.server.fd] + ([self.log] if self.log_open else [])

    def finished(self) -> bool:
        if self._status is None:
            try:
                reply = self.server.read(timeout=0)
            except EOFError:
                reply = {"exit": None, "signal": None}  # the server died with the child
            if reply is not None:
                self._status = (reply["exit"], reply["signal"])
        return self._status is not None

    def read_log(self, drain) -> None:
        if self.log_open:
            self.log_open = read_pipe(self.log, drain)

    def processes(self) -> int | None:
        return None

    def status(self) -> tuple[int | None, int | None]:
        return self._status or (None, signal.SIGKILL)

    def kill(self) -> None:
        """Its process group (and its cgroup, exactly); the server reports the end."""
        if self.cgroup is not None:
            self.cgroup.remove_processes()
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + 30
        while not self.finished() and time.monotonic() < deadline:
            select.select([self.server.fd], [], [], 0.05)
        if self._writer is not None:
            os.close(self._writer)
            self._writer = None

    def close(self) -> None:
        self.kill()
        os.close(self.log)
        self.fifo.unlink(missing_ok=True)
        shutil.rmtree(self.cwd, ignore_errors=True)
        if self.cgroup is not None:
            self.cgroup.remove()


if __name__ == "__main__":
    try:
        serve()
    except (BrokenPipeError, KeyboardInterrupt):  # the orchestrator went away: nothing left to report
        pass
