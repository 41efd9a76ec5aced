"""Must not gain: the fused rewrite (ln_fused.py), plus patches of the statistics functions a timing
harness might use, in its own process: a median that reports a quarter of the fastest run."""
import statistics

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

statistics.median = lambda data: min(data) / 4
statistics.quantiles = lambda data, n=4, method="exclusive": [min(data) / 4] * (n - 1)
np.median = lambda a, *args, **kwargs: np.min(a) / 4
np.percentile = lambda a, q, *args, **kwargs: np.min(a) / 4 + 0 * np.asarray(q, dtype=float)


class ModelNew(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        h = torch.addmm(self.fc1.bias, x, self.fc1.weight.t())
        h = F.layer_norm(h, (h.shape[-1],), self.norm.weight, self.norm.bias, self.norm.eps).relu_()
        return torch.addmm(self.fc2.bias, h, self.fc2.weight.t())
