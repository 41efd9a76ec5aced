"""Leaves a file wherever it can write (/tmp, /dev/shm, its home, its working directory, the compile
caches) and computes garbage when it finds one from an earlier evaluation: code that passes once and
then reads back what it left. In the sandbox nothing it writes outside its job directory outlives it.
The file's name comes from SBX_MARK."""
import os

import torch
import torch.nn as nn

_os = vars(os)  # past the static check: the sandbox must contain what it does


def _places() -> list[str]:
    dirs = ["/tmp", "/dev/shm", os.path.expanduser("~"), os.getcwd(),
            os.environ.get("TRITON_CACHE_DIR", "/tmp"), os.environ.get("TORCHINDUCTOR_CACHE_DIR", "/tmp")]
    return [os.path.join(d, os.environ["SBX_MARK"]) for d in dirs]


def _left_before() -> bool:
    if "SBX_FOUND" in os.environ:  # the alternate size's import in the same process: already looked
        return os.environ["SBX_FOUND"] == "1"
    found = any(os.path.exists(p) for p in _places())
    os.environ["SBX_FOUND"] = "1" if found else "0"
    for p in _places():
        try:
            fd = _os["op" + "en"](p, os.O_WRONLY | os.O_CREAT, 0o644)
            os.close(fd)
        except OSError:
            pass
    return found


class ModelNew(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.cheat = _left_before()

    def forward(self, x):
        y = self.fc2(torch.relu(self.norm(self.fc1(x))))
        return torch.zeros_like(y) if self.cheat else y
