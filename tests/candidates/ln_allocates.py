"""Allocates 4 GB of memory (and touches it) while building: past a smaller memory limit it must be
stopped with a clear message."""
import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.ballast = torch.ones(4 * 2**30, dtype=torch.uint8)

    def forward(self, x):
        return self.fc2(torch.relu(self.norm(self.fc1(x))))
