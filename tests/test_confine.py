"""What a sandbox instance sees and its limits, without running one (test_sandbox.py runs them)."""

from __future__ import annotations

import os

import pytest

from pike.evaluate import confine
from pike.evaluate.confine import Confinement, InstanceSpec, Mounts, bwrap_argv, hidden_dirs
from pike.evaluate.limits import JobCgroup, Limits


def test_hidden_dirs_never_hide_the_system_and_nest(tmp_path, monkeypatch):
    monkeypatch.chdir("/usr")  # a run started from a system directory: that stays visible
    hidden = hidden_dirs((str(tmp_path), str(tmp_path / "inner"), "/", "/etc"))
    assert "/usr" not in hidden and "/" not in hidden and "/etc" not in hidden
    assert str(tmp_path) in hidden and str(tmp_path / "inner") not in hidden  # under one already hidden
    home = os.path.realpath(os.path.expanduser("~"))
    assert home in hidden or home in confine._SYSTEM


def test_an_instance_hides_then_shows_and_overlays(tmp_path, monkeypatch):
    cache, work, job = tmp_path / "cache", tmp_path / "work", tmp_path / "work" / "jobs" / "00001"
    (cache / "triton").mkdir(parents=True)
    job.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    mounts = Mounts(hide=(str(cache), str(work)), caches=(str(cache / "triton"),), read_only=(str(work / "jobs"),))
    conf = Confinement("bwrap", "/bin/bwrap", "0.11.0")
    argv = bwrap_argv(conf, mounts, InstanceSpec(str(job)), info_fd=9)
    pairs = list(zip(argv, argv[1:]))
    assert ("--unshare-all" in argv and "--die-with-parent" in argv and ("--cap-drop", "ALL") in pairs
            and ("--proc", "/proc") in pairs and ("--tmpfs", "/tmp") in pairs)
    assert argv[argv.index(str(job / "shm")) + 1] == "/dev/shm"  # its own, in its job directory
    hidden = [b for a, b in pairs if a == "--tmpfs"]
    assert str(tmp_path) in hidden  # the working directory, holding the cache and work directories
    # shown again only after the tmpfs that hides it, and only read-only; the caches as an overlay
    assert argv.index(str(work / "jobs")) > argv.index(str(tmp_path))
    assert ("--ro-bind", str(work / "jobs")) in pairs
    assert ("--tmp-overlay", str(cache / "triton")) in pairs and ("--bind", str(cache / "triton")) not in pairs
    assert ("--bind", str(job)) in pairs and argv[argv.index(str(job)) + 1] == str(job)  # at its own path
    assert argv[-1] == "--"
    trusted = bwrap_argv(conf, mounts, InstanceSpec(str(job), trusted=True), info_fd=9)
    assert ("--bind", str(cache / "triton")) in zip(trusted, trusted[1:])


def test_the_gpu_of_a_slot_maps_to_its_device_node(tmp_path, monkeypatch):
    info = tmp_path / "gpus"
    for bus, uuid, minor in [("0000:01:00.0", "GPU-aaaa", 0), ("0000:02:00.0", "GPU-bbbb", 3)]:
        (info / bus).mkdir(parents=True)
        (info / bus / "information").write_text(f"Model: H200\nGPU UUID: {uuid}\nDevice Minor: {minor}\n")
    monkeypatch.setattr(confine, "_NV_INFO", info)
    from pike.evaluate import devices

    monkeypatch.setattr(devices, "_nvidia_smi", lambda *a: "0, GPU-aaaa\n1, GPU-bbbb\n")
    assert confine._minor_of("1") == 3 and confine._minor_of("GPU-aaaa") == 0
    assert confine._minor_of("7") is None  # not known: every GPU's nodes are bound instead
    assert confine.gpu_nodes(None) == []


def test_limits_and_their_cgroup(tmp_path):
    with pytest.raises(ValueError, match="max_processes"):
        Limits(max_processes=0)
    with pytest.raises(ValueError, match="memory_gb"):
        Limits(memory_gb=-1)
    assert Limits(memory_gb=2).memory_bytes == 2 * 2**30
    # A cgroup directory as the kernel shows it (here plain files): its limits are written, its
    # events read.
    cg = JobCgroup(tmp_path, "job", 2**30, 64)
    assert (cg.path / "memory.max").read_text() == str(2**30) and (cg.path / "pids.max").read_text() == "64"
    assert not cg.oom_killed()
    (cg.path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert cg.oom_killed()


def test_eval_settings_are_checked():
    from pike.evaluate.evaluator import EvalConfig

    with pytest.raises(ValueError, match="eval.sandbox must be one of auto, bwrap, none"):
        EvalConfig(sandbox="docker")
    with pytest.raises(ValueError, match="max_log_mb"):
        EvalConfig(max_log_mb=-1)


def test_the_comparator_reads_a_sandboxed_childs_memory_only_in_its_shm(tmp_path):
    """A sandboxed child's /dev/shm is its job directory's shm/: the comparator maps the outputs it
    names there, and nothing it links to elsewhere (a reference file, say)."""
    import torch

    from pike.evaluate import ipc

    shm = tmp_path / "shm"
    shm.mkdir()
    data = torch.arange(6, dtype=torch.float32)
    (shm / "torch_2_7_0").write_bytes(b"\0" * 64 + data.numpy().tobytes())  # torch's header, then the data
    spec = {"tensor": {"dtype": "float32", "shape": [6], "stride": [1], "offset": 0,
                       "cpu": [ipc._b64(b"/m"), ipc._b64(b"/torch_2_7_0"), 24]}}
    assert torch.equal(ipc.open_shared(spec, str(shm)), data)
    secret = tmp_path / "reference.bin"
    secret.write_bytes(b"\0" * 64 + data.numpy().tobytes())
    (shm / "torch_2_7_1").symlink_to(secret)
    for name in ("/torch_2_7_1", "/../reference.bin", "/sub/x"):
        spec["tensor"]["cpu"][1] = ipc._b64(name.encode())
        with pytest.raises((OSError, ValueError)):
            ipc.open_shared(spec, str(shm))
