"""Must pass: writes every output into one buffer it owns, as a CUDA graph (or torch.compile's
reduce-overhead) does: each output is right until the next call overwrites it."""
import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.out = None

    def forward(self, x):
        y = self.fc2(torch.relu(self.norm(self.fc1(x))))
        if self.out is None or self.out.shape != y.shape:
            self.out = torch.empty_like(y)
        return self.out.copy_(y)
