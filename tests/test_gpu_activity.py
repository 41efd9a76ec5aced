"""Kernels active per GPU (``gpu_activity``), read from nvidia-smi; a stand-in nvidia-smi on PATH
prints what the real one prints, so the parsing, the matching to the pool's GPUs and the means are
checked on a CPU machine."""

from __future__ import annotations

import os
import stat
import time

from pike.evaluate.gpu_activity import KernelActivity

FAKE = """#!/bin/sh
# what `nvidia-smi --query-gpu=index,uuid,utilization.gpu --format=csv,noheader,nounits -lms=N -i ...` prints
echo "$@" > "$(dirname "$0")/args"
while true; do
  echo "0, GPU-aaaa, 20"
  echo "1, GPU-bbbb, 60"
  echo "2, GPU-cccc, [N/A]"
  sleep 0.05
done
"""


def fake_smi(tmp_path, monkeypatch):
    exe = tmp_path / "nvidia-smi"
    exe.write_text(FAKE)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_means_per_pool_gpu_by_index_or_uuid(tmp_path, monkeypatch):
    d = fake_smi(tmp_path, monkeypatch)
    with KernelActivity(["1", None, "GPU-aaaa", "2"], period_ms=50) as act:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(act.samples[g] for g in ("1", "GPU-aaaa")):
            time.sleep(0.05)
        got = act.fractions()
    assert got[0] == 0.6 and got[1] is None and got[2] == 0.2
    assert got[3] is None  # "[N/A]" is no sample
    args = (d / "args").read_text().split()
    assert "-i" in args and args[args.index("-i") + 1] == "1,GPU-aaaa,2" and "-lms=50" in args
    assert act.reason == ""


def test_without_nvidia_smi_or_gpus_it_says_why(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    act = KernelActivity(["0"]).start()
    act.stop()
    assert act.fractions() == [None] and "not on PATH" in act.reason
    act = KernelActivity([None, None]).start()
    act.stop()
    assert act.fractions() == [None, None] and act.reason == "no GPU in the pool"
