"""Must pass: torch.compile inside forward (Inductor compiles C++ on the CPU at the first call)."""
import torch
import torch.nn as nn


class ModelNew(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self._fn = None

    def _body(self, x):
        return self.fc2(torch.relu(self.norm(self.fc1(x))))

    def forward(self, x):
        if self._fn is None:
            self._fn = torch.compile(self._body)
        return self._fn(x)
