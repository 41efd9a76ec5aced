"""Must not pass: never runs the model. It looks for stored reference outputs in its working
directory, its job directory and the evaluator's work directory around them, and in every directory
its job.json names; where it finds an input file equal to the input it was given, it returns the
output file of the same name from an ``outputs`` directory (from a ``random`` one once its weights
were replaced). Before issue 17 it passed every check. File reads go through getattr, past the
static check (as issue 17's attack did)."""
import json
import os

import torch
import torch.nn as nn

_b = getattr(nn, "__buil" + "tins__")
_open = _b["op" + "en"] if isinstance(_b, dict) else getattr(_b, "op" + "en")
_load = getattr(torch, "lo" + "ad")
_walk = getattr(os, "wa" + "lk")


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def _roots():
    cwd = os.getcwd()
    roots = [cwd, os.path.dirname(cwd), os.path.dirname(os.path.dirname(cwd))]
    for r in list(roots):
        job = os.path.join(r, "job.json")
        if os.path.isfile(job):
            with _open(job) as f:
                named = [s for s in _strings(json.loads(f.read())) if os.path.isabs(s)]
            roots += [s if os.path.isdir(s) else os.path.dirname(s) for s in named]
    return roots


def _stored_answer(x, kind):
    files = []
    for root in _roots():
        for d, _, names in _walk(root):
            files += [os.path.join(d, n) for n in names if n.endswith(".pt")]
    outputs = [f for f in files if os.sep + kind + os.sep in f]
    for f in files:
        if os.sep + "inputs" + os.sep not in f:
            continue
        try:
            given = _load(f, weights_only=False)
        except Exception:
            continue
        if isinstance(given, (list, tuple)) and given and torch.equal(given[0], x):
            # the output of the same name that lives closest to this input file (the same entry)
            same = [o for o in outputs if os.path.basename(o) == os.path.basename(f)]
            if same:
                return _load(max(same, key=lambda o: len(os.path.commonpath([o, f]))), weights_only=False)
    return None


class ModelNew(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self._seeded = float(self.fc1.weight.sum())

    def forward(self, x):
        found = _stored_answer(x, "outputs" if float(self.fc1.weight.sum()) == self._seeded else "random")
        return found.to(x.device) if isinstance(found, torch.Tensor) else torch.zeros_like(x)
