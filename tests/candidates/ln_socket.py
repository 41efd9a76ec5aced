"""Connects to a listener on 127.0.0.1 (port in SBX_TEST_PORT) and sends a message; its output is
wrong if it got through. The sandbox has its own network namespace: nothing listens there."""
import logging.handlers
import os

import torch
import torch.nn as nn


socket = vars(logging.handlers)["socket"]  # past the static check: the sandbox must contain what it does


def _reach() -> bool:
    try:
        s = socket.create_connection(("127.0.0.1", int(os.environ["SBX_TEST_PORT"])), timeout=5)
        s.sendall(b"hello from the candidate")
        s.close()
        return True
    except OSError:
        return False


class ModelNew(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.reached = _reach()

    def forward(self, x):
        y = self.fc2(torch.relu(self.norm(self.fc1(x))))
        return y + 1000.0 if self.reached else y
