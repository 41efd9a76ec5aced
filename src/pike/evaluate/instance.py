"""One sandbox instance: the process tree of one job, from its warm start to its kill.

Under bwrap the instance is ``bwrap ... python -m pike.evaluate.child``: killing the outer bwrap ends
its PID namespace and with it every process the job started (daemons in new sessions included);
with a cgroup, ``cgroup.kill`` does the same exactly. Without a sandbox it is the child in its own
session, and only that session's process group is killed.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from pike.evaluate.confine import Confinement, InstanceSpec, Mounts, bwrap_argv, shm_dir
from pike.evaluate.limits import JobCgroup


def read_pipe(fd: int, drain) -> bool:
    """What a non-blocking pipe holds now, to ``drain`` (which may return False to stop early);
    False once the pipe has ended."""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        if drain(chunk) is False:
            return True


class InstanceFailed(RuntimeError):
    """The instance's process did not come up (not a verdict on any candidate)."""


class Instance:
    def __init__(self, conf: Confinement, mounts: Mounts, spec: InstanceSpec, env: dict[str, str], *,
                 cpus: tuple[int, ...] | None, cgroup: JobCgroup | None, cwd: str | None):
        self.spec, self.conf, self.cgroup, self.cwd, self.mounts = spec, conf, cgroup, cwd, mounts
        if conf.confined:
            os.makedirs(shm_dir(spec.job_dir), exist_ok=True)
        ctl_r, ctl_w = os.pipe()
        log_r, log_w = os.pipe()
        info_r, info_w = os.pipe() if conf.confined else (None, None)
        cmd = [sys.executable, "-m", "pike.evaluate.child", "--ctl", str(ctl_w)]
        if cpus:
            cmd += ["--cpus", ",".join(map(str, cpus))]
        if conf.confined:
            cmd = bwrap_argv(conf, mounts, spec, info_w) + cmd
        if cgroup is not None:  # in its cgroup before bwrap starts: everything it forks is counted
            cmd = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', cgroup.procs_file, *cmd]
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log_w, stderr=log_w, env=env, cwd=cwd,
                                         pass_fds=tuple(fd for fd in (ctl_w, info_w) if fd is not None),
                                         start_new_session=True)
        finally:
            for fd in (ctl_w, log_w, info_w):
                if fd is not None:
                    os.close(fd)
        self.ctl, self.log, self.info = ctl_r, log_r, info_r
        for fd in (ctl_r, log_r):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self._ctl_buf = b""
        self._info: dict | None = None
        self.started = time.monotonic()
        self.ready = False
        self.paused = False
        self.log_open = True

    # -------------------------------------------------------------- start-up

    def wait_ready(self, timeout: float, drain) -> None:
        """Until the child has imported torch and the harness. ``drain(bytes)`` takes its output."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            if self.proc.poll() is not None:
                self.read_log(drain)
                raise InstanceFailed(f"the evaluation process exited at start ({self.describe_rc()})")
            left = deadline - time.monotonic()
            if left <= 0:
                raise InstanceFailed(f"the evaluation process was not ready after {timeout:.0f} s")
            r, _, _ = select.select([self.ctl, self.log] if self.log_open else [self.ctl], [], [], min(left, 0.5))
            if self.log in r:
                self.read_log(drain)
            if self.ctl in r and "ready" in self.read_ctl():
                self.ready = True

    def start(self, request: dict) -> None:
        """Hand the job over. Stdin stays open: its end tells the child the orchestrator is gone."""
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()

    # -------------------------------------------------------------- while it runs

    def fds(self) -> list[int]:
        return [self.log] if self.log_open else []

    def finished(self) -> bool:
        return self.proc.poll() is not None

    def read_ctl(self) -> list[str]:
        try:
            chunk = os.read(self.ctl, 4096)
        except BlockingIOError:
            return []
        self._ctl_buf = (self._ctl_buf + chunk)[-4096:]  # a candidate may write here too: bounded
        *lines, self._ctl_buf = self._ctl_buf.split(b"\n")
        return [line.decode(errors="replace").strip() for line in lines]

    def read_log(self, drain) -> None:
        """Whatever the job wrote to stdout and stderr so far (to ``drain``); notes the pipe's end."""
        if self.log_open:
            self.log_open = read_pipe(self.log, drain)

    def _child_pid(self) -> int | None:
        """The host pid of the sandboxed Python (under bwrap: the child of bwrap's PID 1)."""
        if not self.conf.confined:
            return self.proc.pid
        info = self.info_json()
        init = info.get("child-pid")
        if not init:
            return None
        try:
            kids = Path(f"/proc/{init}/task/{init}/children").read_text().split()
            return int(kids[0]) if kids else None
        except (OSError, ValueError):
            return None

    def info_json(self) -> dict:
        """bwrap's ``--info-fd`` report (its PID 1's host pid, its namespaces)."""
        if self._info is None and self.info is not None:
            buf = b""
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                r, _, _ = select.select([self.info], [], [], 0.1)
                if r:
                    chunk = os.read(self.info, 4096)
                    buf += chunk
                    try:
                        self._info = json.loads(buf)
                        break
                    except ValueError:
                        if not chunk:
                            break
            self._info = self._info or {}
        return self._info or {}

    def pause(self, stop: bool) -> None:
        """Stop (or continue) a spare's warm-up while another job is being timed."""
        if stop == self.paused or self.proc.poll() is not None:
            return
        pid = self._child_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGSTOP if stop else signal.SIGCONT)
                self.paused = stop
            except ProcessLookupError:
                pass

    def processes(self) -> int | None:
        """How many processes the job has now: the members of its PID namespace (bwrap only)."""
        ns = self.info_json().get("pid-namespace")
        if not ns:
            return None
        n = 0
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    n += os.stat(f"/proc/{name}/ns/pid").st_ino == ns
                except OSError:
                    pass
        return n

    def describe_rc(self) -> str:
        rc = self.proc.returncode
        return "still running" if rc is None else f"exit status {rc}"

    def status(self) -> tuple[int | None, int | None]:
        """(exit code, signal) of the job: bwrap reports a signal as 128 + its number."""
        rc = self.proc.returncode
        if rc is None:
            return None, signal.SIGKILL
        if rc < 0:
            return None, -rc
        if self.conf.confined and rc > 128:
            return None, rc - 128
        return rc, None

    # -------------------------------------------------------------- the end

    def kill(self) -> None:
        """Everything of the instance goes: its namespace (bwrap), its cgroup, its process group."""
        if self.paused:
            self.pause(False)
        if self.cgroup is not None:
            self.cgroup.remove_processes()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        self.kill()
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        for fd in (self.ctl, self.log, self.info):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.ctl = self.log = self.info = None
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None
