"""Candidate replies shared by the tests that script an LLM (see llm_server.py): the test task and a
correct, a broken (NameError) and a correct-but-slower rewrite of it."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
TASK = HERE / "tasks" / "ln_mlp.py"
FUSED = (HERE / "candidates" / "ln_fused.py").read_text()
BROKEN = FUSED.replace("torch.addmm(self.fc2.bias, h", "torch.addmm(self.fc2.bias, undefined_name")
# Correct but slower: computes the block twice.
SLOW = FUSED.replace("        h = torch.addmm(self.fc1.bias", "        _ = self.fc2(torch.relu(self.norm(self.fc1(x))))\n        h = torch.addmm(self.fc1.bias")


def fenced(code: str) -> str:
    return f"Here is the optimised model.\n\n```python\n{code}\n```\n"
