"""The command-line flags that set config keys: one table, from which the commands take each flag's
key, its help text and its default (the config's), and turn the flags given into ``--set`` values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import typer

from pike import config as cfgmod


@dataclass(frozen=True)
class Flag:
    name: str  # --max-usd
    key: str  # the config key it sets
    help: str
    switch: str | None = None  # a flag without a value: the value it gives its key

    @property
    def param(self) -> str:
        """The command function's parameter (typer's name for the flag)."""
        return self.name.removeprefix("--").replace("-", "_")


DEVICE = "auto (the first CUDA device when there is one, else cpu), cpu, cuda or cuda:N."
SIZE = "Size set: auto (small on CPU), default, or a name from the tasks' SIZES."

FLAGS = {f.name: f for f in (
    Flag("--llm", "llm.model", "Model: openai/..., gemini/..., anthropic/..., openrouter/..., local/<model>@<url>, cmd:<shell>;"
         " or batch:DIR for file rounds (llm.batch_dir; the model for prices: --set llm.model=...; see README)."),
    Flag("--fix-model", "llm.fix_model", "A different (cheaper) model for the error-fixing agent."),
    Flag("--budget", "search.budget", "LLM queries per task (fixes count)."),
    Flag("--max-usd", "search.max_usd", "USD budget for the whole run."),
    Flag("--time-limit", "search.time_limit_min",
         "Wall-clock limit of this invocation: 90s, 45m, 2h (a bare number is minutes). Then nothing new starts, the offline"
         " portfolio stops the variant in flight (a resume tries it again), LLM strategies let evaluations in flight finish,"
         " and the final tables are made."),
    Flag("--seed-offline", "search.seed_offline", "LLM strategies start from the offline winner.", switch="true"),
    Flag("--device", "eval.device", DEVICE),
    Flag("--size", "eval.size", SIZE),
    Flag("--gpus", "eval.gpus", "Comma-separated subset of the visible GPUs to evaluate on (default: all)."),
    Flag("--executor", "eval.executor", "local (this machine) or ray (a Ray cluster: one actor per GPU)."),
    Flag("--ray-address", "eval.ray_address", "Address of an existing Ray cluster (default: start a local one)."),
    Flag("--timeout", "eval.timeout_s", "Seconds before the candidate is killed."),
    Flag("--baseline-timeout", "eval.baseline_timeout_s", "Seconds per baseline run (compilation included)."),
    Flag("--trials", "eval.trials", "Correctness trials on held-out inputs."),
    Flag("--strict", "eval.strict", "Tolerance 1e-4 instead of 1e-2 (fp32).", switch="true"),
    Flag("--allow-seeded-only", "eval.require_state_dict", "Accept solutions whose state_dict differs from the reference's.",
         switch="false"),
    Flag("--objective", "eval.objective", "latency (one forward from an idle queue) or throughput (back to back): the figure"
         " and its speedup."),
    Flag("--start-method", "eval.start_method", "warm (processes started before their jobs) or spawn."),
    Flag("--sandbox", "eval.sandbox", "auto (bubblewrap where it runs, else none with a warning), bwrap or none."),
    Flag("--memory-limit-gb", "eval.memory_limit_gb", "Memory limit of each evaluation process (0: three quarters of the machine's)."),
)}

_DEFAULTS = cfgmod.dotted(cfgmod.RunConfig().to_dict())


def option(name: str, *, metavar: str | None = None) -> Any:
    """The typer option of flag ``name``: no default of its own (the config's is shown), so that a
    flag not given leaves its key to --config and --set."""
    f = FLAGS[name]
    if f.switch is not None:
        return typer.Option(False, f.name, help=f"{f.help} (config: {f.key}={f.switch})")
    default = _DEFAULTS[f.key]
    shown = "none" if default is None else (",".join(map(str, default)) or "all") if isinstance(default, list) else default
    return typer.Option(None, f.name, metavar=metavar, help=f"{f.help} (config: {f.key}, default {shown})")


def assignments(given: dict[str, Any], names: list[str]) -> tuple[list[str], dict[str, str]]:
    """The ``key=value`` strings of the flags among ``names`` that were given (``given``: the command's
    parameters), and which flag set each key."""
    out, by_key = [], {}
    for name in names:
        f = FLAGS[name]
        value = given.get(f.param)
        if f.switch is not None:
            value = f.switch if value else None
        if value is not None:
            out.append(f"{f.key}={value}")
            by_key[f.key] = f.name
    return out, by_key


def explain(msg: str, by_key: dict[str, str]) -> str:
    """A config error, naming the flag where a flag set the key."""
    for key, flag in by_key.items():
        msg = msg.replace(f"{key}:", f"{flag} ({key}):")
    return msg
