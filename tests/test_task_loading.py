"""Task files load as Python loads a script: dataclass init inputs of the task's own classes, typing
tricks, sibling and relative imports of the user's package without PYTHONPATH, a __main__ block,
module-level prints; and what cannot load says which file and why, in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pike.task import load_task

DATACLASS_TASK = '''
"""Init input: a dataclass of model args defined in this file (as Llama- and DeepSeek-style code does)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from collections.abc import Sequence

print("a module-level print of the task")


@dataclass
class ModelArgs:
    dim: int = 32
    hidden: int = 64
    eps: Optional[float] = 1e-5


class Model(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.norm = nn.LayerNorm(args.dim, eps=args.eps)
        self.up = nn.Linear(args.dim, args.hidden)
        self.down = nn.Linear(args.hidden, args.dim)

    def forward(self, x):
        return x + self.down(torch.relu(self.up(self.norm(x))))


def get_inputs():
    return [torch.randn(4, 8, 32)]


def get_init_inputs():
    return [ModelArgs()]


if __name__ == "__main__":
    raise SystemExit("the evaluator must not run this block")
'''

BLOCKS = '''
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, x):
        return self.lin(x).relu()
'''

# In the package: a relative import, and a sibling import as `python mypkg/sibling_task.py` allows.
RELATIVE_TASK = '''
import torch

from .blocks import Block

try:
    from blocks import Block as Sibling
except ImportError:
    raise

Model = Sibling if Sibling.__name__ == Block.__name__ else None


def get_inputs():
    return [torch.randn(4, 16)]


def get_init_inputs():
    return [16]
'''


def write(root):
    tasks = root / "tasks"
    pkg = tasks / "mypkg"
    pkg.mkdir(parents=True)
    (tasks / "dataclass_args.py").write_text(textwrap.dedent(DATACLASS_TASK))
    (pkg / "__init__.py").write_text("")
    (pkg / "blocks.py").write_text(textwrap.dedent(BLOCKS))
    (pkg / "relative_task.py").write_text(textwrap.dedent(RELATIVE_TASK))
    return tasks


def pike(tmp_path, *args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIKE_CACHE_DIR"] = str(tmp_path / "cache")
    return subprocess.run([sys.executable, "-m", "pike", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=900)


@pytest.mark.slow
def test_dataclass_init_inputs_and_package_imports_optimize(tmp_path):
    tasks = write(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "run"
    for task in (tasks / "dataclass_args.py", tasks / "mypkg" / "relative_task.py"):
        p = pike(tmp_path, "optimize", str(task), "--out", str(out / task.stem), "--json", cwd=elsewhere)
        assert p.returncode == 0, p.stderr[-3000:]
        row = json.loads(p.stdout)["rows"][0]
        assert row["status"] == "done" and row["speedup_eager"] >= 1.0, row
        assert (out / task.stem / "best" / f"{task.stem}.py").is_file()


def test_static_loading_finds_names_in_if_and_try_blocks(tmp_path):
    f = tmp_path / "guarded.py"
    f.write_text(textwrap.dedent('''
        import torch
        try:
            from fast_impl import Model
        except ImportError:
            class Model(torch.nn.Module):
                def forward(self, x):
                    return x
        if True:
            def get_inputs():
                return [torch.randn(2)]
        def get_init_inputs():
            return []
    '''))
    assert load_task(f).name == "guarded"


@pytest.mark.slow
def test_a_task_that_cannot_load_names_the_file_line_and_cause(tmp_path):
    f = tmp_path / "broken.py"
    f.write_text("import torch\nimport no_such_module_anywhere\n\nclass Model(torch.nn.Module):\n    pass\n\n"
                 "def get_inputs():\n    return [torch.randn(2)]\n\ndef get_init_inputs():\n    return []\n")
    p = pike(tmp_path, "eval", str(f), str(f), cwd=tmp_path)
    assert p.returncode == 2
    text = " ".join(p.stderr.split())  # the console wraps long lines
    assert (f"error: {f}: importing the task raised ModuleNotFoundError: No module named "
            "'no_such_module_anywhere' (line 2: import no_such_module_anywhere)") in text, p.stderr
    assert "Traceback" not in p.stderr
    p = pike(tmp_path, "--debug", "eval", str(f), str(f), cwd=tmp_path)
    assert "Traceback" in p.stderr
