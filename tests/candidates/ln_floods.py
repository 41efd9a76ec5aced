"""Floods stdout with no end: the evaluator must stop it at the output cap, not store it."""
import torch
import torch.nn as nn

_LINE = "x" * (1 << 20)


class ModelNew(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        while True:
            print(_LINE)
