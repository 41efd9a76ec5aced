"""Reaches exec through a module's __builtins__ (which the static check does not see) and, with it,
os.system and a socket: it writes a file where SBX_OUT says, has a shell write another, and
connects to 127.0.0.1:SBX_TEST_PORT. Its output is right: only the sandbox stops what it does."""
import torch
import torch.nn as nn

_run = vars(nn)["__buil" + "tins__"]["ex" + "ec"]
_run("""
import os, socket
out = os.environ["SBX_OUT"]
try:
    open(out, "w").write("written by the candidate")
except OSError:
    pass
os.system("echo shell > " + out + ".shell 2>/dev/null")
try:
    socket.create_connection(("127.0.0.1", int(os.environ["SBX_TEST_PORT"])), timeout=5).sendall(b"exec")
except OSError:
    pass
""")


class ModelNew(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(torch.relu(self.norm(self.fc1(x))))
