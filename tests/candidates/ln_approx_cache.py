"""Must not pass: caches outputs by the input's content with a loose key (values rounded to 0.1,
about 10% of their spread). New input sets miss it and are right; the timing loop's repeated sets
hit it. An input moved only slightly towards its mean would hit it too, with an output within the
tolerance of the right one, so a fresh-content probe needs whole new inputs to see it."""
import torch
import torch.nn as nn

CACHE = {}


class ModelNew(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        key = (tuple(x.shape), tuple(torch.round(x[0, :32] * 10).tolist()), float(self.fc2.weight[0, :16].sum()))
        hit = CACHE.get(key)
        if hit is None:
            hit = CACHE[key] = self.fc2(torch.relu(self.fc1(x)))
        return hit.clone()
