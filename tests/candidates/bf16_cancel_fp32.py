import torch
import torch.nn as nn
import torch.nn.functional as F


class ModelNew(nn.Module):
    """The same sum with fp32 intermediates, rounded to bf16 once (what a fused kernel does)."""

    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, d)
        self.to(torch.bfloat16)

    def forward(self, x, b):
        big = F.linear(x.float(), self.lin.weight.float(), self.lin.bias.float()) * 32
        return ((big + b.float()) - big).to(torch.bfloat16)
