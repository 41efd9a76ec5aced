"""Must not pass: wrong outputs, and it rewrites the harness's hand-over in place (its code object, so
the function is still the same object) so that no checked output reaches the orchestrator: zero
checks must not compare as equal. Only reachable past the static check, which bans both the import
and ``__code__``, as trusted code."""
import torch
import torch.nn as nn

import pike.evaluate.worker as _w


def _no_outputs(job_dir, name, outputs, rows, keep, device):  # runs with the worker's globals
    save_atomic(to_cpu({} if name == "checks" else {"spot": [], "refill": []}), job_dir / f"{name}.pt")  # noqa: F821
    return ask(job_dir, f"{name}-file")  # noqa: F821


_w.hand_over.__code__ = _no_outputs.__code__


class ModelNew(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return torch.zeros(x.shape[0], self.fc2.out_features)
