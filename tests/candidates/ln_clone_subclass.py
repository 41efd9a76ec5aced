"""Must not pass: in the timing loop (recognised by its RNG seeds, which repeat) forward returns a
tensor subclass that does the real work when the harness clones it, outside the timed region; on
every check (a seed seen for the first times) a plain, correct tensor."""
import torch
import torch.nn as nn


class Deferred(torch.Tensor):
    def detach(self):
        return self

    def clone(self, *args, **kwargs):
        model, x = self.work
        return model.compute(x)


class ModelNew(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.seen = {}

    def compute(self, x):
        return self.fc2(torch.relu(self.norm(self.fc1(x))))

    def forward(self, x):
        seed = torch.initial_seed()
        self.seen[seed] = self.seen.get(seed, 0) + 1
        if self.seen[seed] < 3:
            return self.compute(x)
        out = torch.empty(0).as_subclass(Deferred)
        out.work = (self, x)
        return out
