"""The task's model with a 5% error: wrong, whatever tolerance eager's own deviation allows."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class ModelNew(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.proj = nn.Linear(d_in, d_out)

    def forward(self, x):
        return 1.05 * F.linear(x, self.proj.weight, self.proj.bias)
