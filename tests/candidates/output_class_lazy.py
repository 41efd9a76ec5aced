"""Must not pass: in the timing loop (recognised by its RNG seeds, which repeat) forward returns a dict
subclass that holds nothing and computes its items only when the harness reads them through its own
methods, outside the timed region; on every check a plain, correct result."""
import collections

import torch
import torch.nn as nn


class Deferred(collections.OrderedDict):
    def _fill(self):
        if not dict.__len__(self):
            model, x = self.work
            h = model.fc1(x)
            dict.update(self, hidden=model.fc2(torch.relu(model.norm(h))), pre_norm=h)

    def items(self):
        self._fill()
        return super().items()

    def values(self):
        self._fill()
        return super().values()

    def keys(self):
        self._fill()
        return super().keys()

    def __iter__(self):
        self._fill()
        return super().__iter__()

    def __getitem__(self, k):
        self._fill()
        return super().__getitem__(k)

    def __len__(self):
        self._fill()
        return dict.__len__(self)


class ModelNew(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.seen = {}

    def forward(self, x):
        seed = torch.initial_seed()
        self.seen[seed] = self.seen.get(seed, 0) + 1
        if self.seen[seed] < 3:
            h = self.fc1(x)
            return {"hidden": self.fc2(torch.relu(self.norm(h))), "pre_norm": h}
        out = Deferred()
        out.work = (self, x)
        return out
