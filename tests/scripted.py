"""Candidate replies shared by the tests that script an LLM (see llm_server.py): the test task and a
correct, a broken (NameError) and a correct-but-slower rewrite of it."""

from __future__ import annotations

from pathlib import Path

from llm_server import Reply, last_user_message

HERE = Path(__file__).parent
TASK = HERE / "tasks" / "ln_mlp.py"
FUSED = (HERE / "candidates" / "ln_fused.py").read_text()
BROKEN = FUSED.replace("torch.addmm(self.fc2.bias, h", "torch.addmm(self.fc2.bias, undefined_name")
# Correct but slower: computes the block twice.
SLOW = FUSED.replace("        h = torch.addmm(self.fc1.bias", "        _ = self.fc2(torch.relu(self.norm(self.fc1(x))))\n        h = torch.addmm(self.fc1.bias")


def fenced(code: str) -> str:
    return f"Here is the optimised model.\n\n```python\n{code}\n```\n"


IDEAS = "1. Fuse the bias add into the matmul.\n2. Use F.layer_norm directly.\n3. Apply ReLU in place."


def by_prompt(req):
    """Replies that depend only on the prompt, so any executor, order or tree gives the same
    candidates: ideas, the fused rewrite, and a broken one for the layer-norm idea (fixed by EFA)."""
    text = last_user_message(req)
    if text.startswith("Brainstorm"):
        return Reply(IDEAS)
    if text.startswith("A solution for the task below failed"):
        return Reply(f"```python\n{FUSED}\n```")
    if "Use F.layer_norm directly" in text.split("## Optimisation to apply")[-1].split("##")[0]:
        return Reply(f"```python\n{BROKEN}\n```")
    return Reply(f"```python\n{FUSED}\n```")
