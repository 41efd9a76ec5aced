"""Must not pass: caches outputs by a fingerprint of the input's content. Right on every check
(new inputs miss the cache), fast only on inputs it has seen: the timing loop's repeated sets."""
import torch
import torch.nn as nn

CACHE = {}


class ModelNew(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        # The weights are in the key too, so that the re-randomised-weights check misses the cache as well.
        key = (tuple(x.shape), float(x[0, :16].sum()), float(x[-1, -16:].sum()), float(self.fc2.weight[0, :16].sum()))
        hit = CACHE.get(key)
        if hit is None:
            hit = CACHE[key] = self.fc2(torch.relu(self.fc1(x)))
        return hit.clone()
