"""Running jobs in isolated child processes (evaluator step 3).

A job is a directory holding ``job.json``; the child (``pike.evaluate.worker``) writes its files there.
Children start from a fork server (fast) or by spawn (a fresh interpreter), always with a scrubbed
environment, in their own session, with a hard timeout that kills the whole process group. A child may
ask the orchestrator a question mid-run (the correctness verdict before timing) through files: it writes
``<name>.ready`` and waits for ``<name>.answer``; see :meth:`Sandbox.run`.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# Variables a candidate must never see: API keys, tokens, passwords and cloud credentials.
_SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION", re.I)
_SECRET_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_", "GCP_", "GH_", "GITHUB_", "OPENAI", "ANTHROPIC", "GEMINI", "OPENROUTER", "HF_")


def scrubbed_env(extra: dict | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not _SECRET.search(k) and not k.upper().startswith(_SECRET_PREFIXES)
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass
class JobOutcome:
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    timed_out: bool
    result: dict | None  # result.json, if the child wrote one
    log_tail: str
    wall_s: float

    def describe_exit(self) -> str:
        if self.timed_out:
            return "timed out"
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}"
        return f"exited with code {self.exit_code}"


def _tail(path: Path, limit: int = 6000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


OWNER_FILE = ".owner"
STALE_UNOWNED_S = 24 * 3600  # directories from before owners were recorded


def owned_tempdir(prefix: str, root: str | None = None) -> str:
    """``mkdtemp`` that records the creating process, after removing the directories of the same
    prefix whose creator is gone: a killed run (or a test that never closed its evaluator) would
    otherwise leave its scratch directories in /dev/shm or /tmp for good."""
    root = root or tempfile.gettempdir()
    sweep_stale(root, prefix)
    d = tempfile.mkdtemp(prefix=prefix, dir=root)
    Path(d, OWNER_FILE).write_text(str(os.getpid()))
    return d


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one of another user counts: we may not signal it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(root: str, prefix: str) -> list[str]:
    removed = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for e in entries:
        if not e.name.startswith(prefix) or not e.is_dir(follow_symlinks=False):
            continue
        try:
            gone = not pid_alive(int(Path(e.path, OWNER_FILE).read_text()))
        except FileNotFoundError:
            try:
                gone = time.time() - e.stat(follow_symlinks=False).st_mtime > STALE_UNOWNED_S
            except OSError:
                continue
        except (OSError, ValueError):
            continue
        if gone:
            shutil.rmtree(e.path, ignore_errors=True)
            removed.append(e.name)
    return removed


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _ForkServer:
    """Client side of :mod:`pike.evaluate.forkserver`."""

    def __init__(self, env: dict[str, str]):
        self.cwd = owned_tempdir("pike-fs-")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pike.evaluate.forkserver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=self.cwd,
            start_new_session=True,
        )
        self._buf = b""
        try:
            ready = self._read(timeout=120)
        except EOFError:  # it exited at start (click would show a bare "Aborted." for an EOFError)
            ready = None
        if not ready or not ready.get("ready"):
            self.close()
            raise RuntimeError("the evaluation fork server did not start (is torch importable?)")

    def _read(self, timeout: float) -> dict | None:
        """One protocol line, or None on timeout. EOF raises."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError("fork server exited")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def launch(self, job_dir: Path, cwd: Path, env: dict[str, str]) -> int:
        msg = json.dumps({"job_dir": str(job_dir), "cwd": str(cwd), "env": env}) + "\n"
        self.proc.stdin.write(msg.encode())
        self.proc.stdin.flush()
        reply = self._read(timeout=60)
        if reply is None:
            raise RuntimeError("fork server did not answer")
        return reply["pid"]

    def poll(self, pid: int, timeout: float) -> tuple[int | None, int | None] | None:
        reply = self._read(timeout)
        if reply is None:
            return None
        assert reply["pid"] == pid, reply
        return reply["exit"], reply["signal"]

    def close(self) -> None:
        kill_group(self.proc.pid)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(self.cwd, ignore_errors=True)


def _raise_oom_score() -> None:
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass


class _Spawned:
    """A fresh interpreter per job: slower (~2 s to import torch) but shares nothing."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.proc: subprocess.Popen | None = None

    def alive(self) -> bool:
        return True

    def launch(self, job_dir: Path, cwd: Path, env: dict[str, str]) -> int:
        log = open(job_dir / "log.txt", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pike.evaluate.worker", str(job_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.env, **env},
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_raise_oom_score,
        )
        log.close()
        return self.proc.pid

    def poll(self, pid: int, timeout: float) -> tuple[int | None, int | None] | None:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return (code, None) if code >= 0 else (None, -code)

    def close(self) -> None:
        pass


class Sandbox:
    """Runs jobs one at a time in isolated children. Not thread-safe: one per worker slot."""

    def __init__(self, start_method: str = "forkserver", env: dict[str, str] | None = None):
        if start_method not in ("forkserver", "spawn"):
            raise ValueError(f"start_method must be forkserver or spawn, not {start_method!r}")
        self.start_method = start_method
        self.env = scrubbed_env(env)
        self._backend: _ForkServer | _Spawned | None = None

    def _ensure(self):
        if self._backend is None or not self._backend.alive():
            if self._backend is not None:
                self._backend.close()
            self._backend = _ForkServer(self.env) if self.start_method == "forkserver" else _Spawned(self.env)
        return self._backend

    def run(
        self,
        job: dict,
        job_dir: Path,
        *,
        timeout: float,
        env: dict[str, str] | None = None,
        on_ask: Callable[[str], dict] | None = None,
    ) -> JobOutcome:
        """Run ``job`` in a child; kill its process group after ``timeout`` seconds.

        ``on_ask(name)`` answers a child's question ``<name>.ready`` with a dict written to
        ``<name>.answer``; time spent answering does not count against the timeout.
        """
        job_dir = Path(job_dir)
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / "job.json").write_text(json.dumps(job))
        cwd = Path(tempfile.mkdtemp(prefix="cwd-", dir=job_dir))
        t0 = time.monotonic()
        backend = self._ensure()
        # A child waiting for an answer gives up when this process is gone (see harness.ask).
        env = {**(env or {}), "PIKE_ORCHESTRATOR_PID": str(os.getpid())}
        try:
            pid = backend.launch(job_dir, cwd, env)
        except (EOFError, OSError, RuntimeError):
            # A dead fork server: start a new one and try once more.
            self._backend = None
            backend = self._ensure()
            pid = backend.launch(job_dir, cwd, env)
        deadline = t0 + timeout
        answered: set[str] = set()
        status = None
        timed_out = False
        while status is None:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                kill_group(pid)
                status = backend.poll(pid, timeout=30) or (None, signal.SIGKILL)
                break
            try:
                status = backend.poll(pid, timeout=min(left, 0.005 if on_ask else 0.2))
            except EOFError:
                status = (None, None)  # the server died with the child
                self._backend = None
                break
            if status is None and on_ask is not None:
                for ready in job_dir.glob("*.ready"):
                    name = ready.stem
                    if name in answered:
                        continue
                    answered.add(name)
                    t_ask = time.monotonic()
                    answer = on_ask(name)
                    tmp = job_dir / f"{name}.answer.tmp"
                    tmp.write_text(json.dumps(answer))
                    os.replace(tmp, job_dir / f"{name}.answer")
                    deadline += time.monotonic() - t_ask
        kill_group(pid)  # leftovers of a finished child (daemons it started) go too
        result = None
        res_path = job_dir / "result.json"
        if res_path.exists() and not timed_out:
            try:
                result = json.loads(res_path.read_text())
            except json.JSONDecodeError:
                result = None
        shutil.rmtree(cwd, ignore_errors=True)
        return JobOutcome(
            exit_code=status[0],
            signal=status[1],
            timed_out=timed_out,
            result=result,
            log_tail=_tail(job_dir / "log.txt"),
            wall_s=time.monotonic() - t0,
        )

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
