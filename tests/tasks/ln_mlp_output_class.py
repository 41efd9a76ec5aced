"""Test task: ln_mlp returning its outputs in a dict subclass with dataclass fields, as transformers'
ModelOutput does (users read ``out.hidden``; the evaluator reads the items)."""

import collections
import dataclasses

import torch
import torch.nn as nn

batch = 32
dim = 48
hidden = 64

SIZES = {"small": {"batch": 16}, "small_alt": {"batch": 24, "dim": 40}}


class Output(collections.OrderedDict):
    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                self[f.name] = value


@dataclasses.dataclass
class MLPOutput(Output):
    hidden: torch.Tensor = None
    pre_norm: torch.Tensor = None


class Model(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        h = self.fc1(x)
        return MLPOutput(hidden=self.fc2(torch.relu(self.norm(h))), pre_norm=h)


def get_inputs():
    return [torch.randn(batch, dim)]


def get_init_inputs():
    return [dim, hidden]
