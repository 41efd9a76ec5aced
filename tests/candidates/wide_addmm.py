"""Must pass: the wide MLP with its bias adds fused into addmm (an honest rewrite of tests/tasks/wide_mlp.py)."""
import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return torch.addmm(self.fc2.bias, torch.relu(torch.addmm(self.fc1.bias, x, self.fc1.weight.t())), self.fc2.weight.t())
