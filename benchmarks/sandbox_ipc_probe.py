"""Does a CUDA IPC hand-over cross the sandbox? (GPU; gpu_session.sh `sandbox` runs it.)

    PYTHONPATH=src python3 benchmarks/sandbox_ipc_probe.py --out ipc_probe.json

A child in a bwrap instance (as PIKE's sandbox makes it: own PID, IPC and mount namespaces, its
/dev/shm a host directory) makes a CUDA tensor and describes it with torch's ``_share_cuda_``; this
process, outside, opens it with ``_new_shared_cuda`` as the comparator does, three ways: as
described; after hard-linking the child's shared-memory files (torch's reference counter, the
driver's event file) into this process's /dev/shm; and that without the IPC event. Each attempt's
result (equal data, or the error) goes into the JSON.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import base64, json, os, sys, time, torch
x = torch.arange(1 << 20, dtype=torch.float32, device="cuda")
torch.cuda.synchronize()
h = x.untyped_storage()._share_cuda_()
enc = [base64.b64encode(v).decode() if isinstance(v, bytes) else v for v in h]
out = sys.argv[1]
open(out + "/handle.tmp", "w").write(json.dumps({"handle": enc, "pid": os.getpid(), "shm": sorted(os.listdir("/dev/shm"))}))
os.replace(out + "/handle.tmp", out + "/handle.json")
while not os.path.exists(out + "/done"):
    time.sleep(0.05)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    import torch

    from pike.evaluate.confine import BASE_ARGS, find_bwrap

    torch.cuda.init()
    report: dict = {"attempts": {}}
    with tempfile.TemporaryDirectory(prefix="ipc-probe-", dir="/dev/shm") as d:
        shm = Path(d, "shm")
        shm.mkdir()
        cmd = [find_bwrap(), *BASE_ARGS, "--bind", str(shm), "/dev/shm", "--tmpfs", "/tmp", "--bind", d, d]
        for node in Path("/dev").glob("nvidia*"):
            cmd += ["--dev-bind", str(node), str(node)]
        cmd += ["--", sys.executable, "-c", CHILD, d]
        child = subprocess.Popen(cmd, env={**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0")})
        try:
            deadline = time.monotonic() + 120
            while not Path(d, "handle.json").exists():
                if child.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the sandboxed child did not describe its tensor (exit {child.poll()})")
                time.sleep(0.05)
            desc = json.loads(Path(d, "handle.json").read_text())
            report["child"] = {"pid_in_sandbox": desc["pid"], "shm_files": desc["shm"]}
            h = [base64.b64decode(v) if isinstance(v, str) else v for v in desc["handle"]]
            device, handle, size, off, rc, rc_off, ev, ev_sync = h
            expect = torch.arange(1 << 20, dtype=torch.float32, device="cuda")

            def attempt(name, rc_handle, ev_handle, sync):
                try:
                    st = torch.UntypedStorage._new_shared_cuda(int(device), handle, int(size), int(off), rc_handle, int(rc_off), ev_handle, bool(sync))
                    t = torch.empty(0, dtype=torch.float32, device="cuda").set_(st, 0, [1 << 20], [1])
                    report["attempts"][name] = {"ok": bool(torch.equal(t, expect))}
                    del t, st
                except Exception as e:  # noqa: BLE001 - what failed is the finding
                    report["attempts"][name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:500]}

            attempt("as described", rc, ev, ev_sync)
            linked = []
            for f in desc["shm"]:
                dst = Path("/dev/shm", f)
                if not dst.exists():
                    os.link(shm / f, dst)
                    linked.append(dst)
            report["linked"] = [p.name for p in linked]
            attempt("shm files linked", rc, ev, ev_sync)
            attempt("shm files linked, no event", rc, ev, False)
            for p in linked:
                p.unlink(missing_ok=True)
        finally:
            Path(d, "done").touch()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
    Path(a.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
