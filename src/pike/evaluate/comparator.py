"""The comparator: a process beside the evaluation children that compares their outputs with the
references where the outputs are (evaluator step 6, on the GPU).

It never imports candidate code. A child hands it its outputs as JSON descriptions of memory
(``ipc``); it maps them, reads the reference files itself (``weights_only``), keeps recently used
references on its device, and runs the same comparison as the orchestrator (``compare``). Without
it every checked output went device -> host -> file -> orchestrator, about 9 s per candidate at
256 MB of outputs.

Protocol: one JSON object per line on stdin, one answer per line on stdout.
  {"op": "compare", "items": [{"ref": FILE, "ref_sha": SHA256, "gold": FILE or null, "gold_sha": SHA256,
   "strict": B, "rel_norm": X or null, "atol_floor": X, "out": DESCRIPTION}, ...]}
  ->  {"diffs": [{"ok", "reason", "max_abs", "max_rel", "note"}, ...]}
stopping after the first item that fails; {"error": "..."} when it could not compare at all (a
reference file that does not match its checksum included: the orchestrator then reads it itself).
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

READY = "pike-comparator-ready"


class ComparatorError(Exception):
    """The comparator could not give an answer (not a verdict on the candidate)."""


# ---------------------------------------------------------------- server (its own process)


class _RefCache:
    """Reference files on the comparator's device, least recently used dropped beyond ``budget`` bytes."""

    def __init__(self, device, budget: int):
        self.device, self.budget, self.used = device, budget, 0
        self.items: OrderedDict[str, tuple[object, int]] = OrderedDict()

    def get(self, path: str, sha: str):
        """The reference file ``path``, which must hash to ``sha`` (raises checksums.Tampered)."""
        import io

        import torch

        from pike.evaluate.checksums import read_verified
        from pike.evaluate.harness import nbytes

        key = (path, sha)
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key][0]
        value = torch.load(io.BytesIO(read_verified(Path(path), sha)), weights_only=True, map_location=self.device)
        size = nbytes(value)
        if size <= self.budget:
            self.items[key] = (value, size)
            self.used += size
            while self.used > self.budget:
                _, (_, s) = self.items.popitem(last=False)
                self.used -= s
        return value


def _serve(cache_bytes: int) -> None:
    import torch

    from pike.evaluate import ipc
    from pike.evaluate.compare import Tolerance, compare

    device = torch.device("cuda", 0) if torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES") else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.init()  # opening an IPC handle assumes an initialised context (torch's own rebuild does this)
    refs = _RefCache(device, cache_bytes)
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but answers on the protocol stream
    out.write(READY + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            diffs = []
            with torch.inference_mode():
                for item in req["items"]:
                    got = ipc.open_shared(item["out"], item.get("shm"))
                    gold_path, gold_sha = item.get("gold"), item.get("gold_sha", "")
                    tol = Tolerance(strict=bool(item.get("strict")), rel_norm=item.get("rel_norm"), atol_floor=float(item.get("atol_floor", 0.0)))
                    d = compare(refs.get(item["ref"], item.get("ref_sha", "")), got, tol,
                                (lambda p=gold_path, h=gold_sha: refs.get(p, h)) if gold_path else None)
                    del got  # unmaps the child's memory
                    diffs.append(dataclasses.asdict(d))
                    if not d.ok:
                        break
            answer = {"diffs": diffs}
        except Exception as e:  # noqa: BLE001 - reported, the orchestrator falls back
            answer = {"error": f"{type(e).__name__}: {e}"[:1000]}
        out.write(json.dumps(answer) + "\n")
        out.flush()


# ---------------------------------------------------------------- client (the orchestrator)


class Comparator:
    """One comparator process for one evaluator's device, started at first use and restarted after
    a failure. Not thread-safe (an evaluator runs one candidate at a time)."""

    def __init__(self, env: dict[str, str], cache_bytes: int = 2 * 2**30, log: Path | None = None,
                 start_timeout_s: float = 120.0):
        self.env, self.cache_bytes, self.log, self.start_timeout_s = env, cache_bytes, log, start_timeout_s
        self.proc: subprocess.Popen | None = None
        self.failures = 0

    def _readline(self, timeout: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], max(timeout, 0.0))
        if not ready:
            raise ComparatorError(f"no answer within {timeout:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            raise ComparatorError(f"the comparator exited (code {self.proc.poll()})")
        return line

    def _start(self) -> None:
        err = open(self.log, "ab") if self.log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pike.evaluate.comparator", str(self.cache_bytes)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=self.env, text=True,
                start_new_session=True,
            )
        finally:
            if self.log:
                err.close()
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            line = self._readline(deadline - time.monotonic())
            if line.strip() == READY:
                return

    def compare(self, items: list[dict], timeout_s: float = 300.0) -> list[dict]:
        """Diffs of ``items`` in order, up to the first that fails. Raises ComparatorError (and stops
        the process) when there is no answer; the caller then compares another way."""
        try:
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            self.proc.stdin.write(json.dumps({"op": "compare", "items": items}) + "\n")
            self.proc.stdin.flush()
            answer = json.loads(self._readline(timeout_s))
        except (OSError, ValueError, ComparatorError) as e:
            self.failures += 1
            self.close()
            raise ComparatorError(f"{e}{self._log_tail()}") from None
        if "error" in answer:
            self.failures += 1
            self.close()  # a CUDA error can leave its context unusable: start afresh next time
            raise ComparatorError(answer["error"])
        return answer["diffs"]

    def _log_tail(self) -> str:
        try:
            tail = self.log.read_bytes()[-600:].decode(errors="replace").strip() if self.log else ""
        except OSError:
            return ""
        return f"; its log ends: {tail}" if tail else ""

    def close(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001
            self.proc.kill()
            self.proc.wait()
        self.proc = None


if __name__ == "__main__":
    _serve(int(sys.argv[1]) if len(sys.argv) > 1 else 2 * 2**30)
