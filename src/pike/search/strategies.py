"""Search strategies: the protocol every strategy follows and the registry of them.

A strategy is a policy over the primitives of :class:`~pike.search.taskrun.TaskRun` (one module per
strategy). What the engine and the commands need to know about one is declared on its class, never
read off its name; a preset names its strategy's ``kind`` (:data:`pike.config.PRESETS`). A new
strategy is a module with such a class and one line in :data:`STRATEGIES`.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

from pike.config import RunConfig, strategy_kind
from pike.search.offline import Offline
from pike.search.pike_b import PikeB
from pike.search.pike_o import PikeO
from pike.search.replay import Replay
from pike.search.taskrun import TaskRun
from pike.store import Solution


class Strategy(Protocol):
    kind: ClassVar[str]  # the name presets give it (`kind` in pike.config.PRESETS)
    needs_llm: ClassVar[bool]  # it queries a model: the engine makes clients; a run without llm.model is refused
    # Its candidates come in phases, each finished before the next starts (else one at a time, concurrently).
    phase_synchronous: ClassVar[bool]
    # It honours search.seed_offline: the engine runs the offline portfolio first and hands its winner over.
    seeds_from_offline: ClassVar[bool]
    # Its candidates include the torch.compile modes: the final table's compile baselines join them.
    compile_variants: ClassVar[bool]

    def __init__(self, cfg: RunConfig) -> None: ...

    async def run(self, run: TaskRun, seed: Solution | None = None) -> None:
        """Search one task until its budget (or time) is spent; ``seed``: the program to start from
        instead of the reference (the offline winner), where the class ``seeds_from_offline``."""


STRATEGIES: dict[str, type[Strategy]] = {cls.kind: cls for cls in (PikeB, PikeO, Offline, Replay)}


def strategy_class(cfg: RunConfig) -> type[Strategy]:
    """The class of the config's strategy (ValueError for an unknown preset or kind)."""
    kind = strategy_kind(cfg.search.strategy)
    if kind not in STRATEGIES:
        raise ValueError(f"strategy {cfg.search.strategy!r}: no strategy of kind {kind!r} (known: {', '.join(STRATEGIES)})")
    return STRATEGIES[kind]


def make_strategy(cfg: RunConfig) -> Strategy:
    """A fresh strategy for one task (a strategy may keep per-task state: PIKE-O's library)."""
    return strategy_class(cfg)(cfg)


async def offline_winner(run: TaskRun, cfg: RunConfig) -> Solution | None:
    """The offline portfolio run on the task, then its winner; None when eager itself won (the
    reference is the starting point anyway)."""
    await Offline(cfg).run(run)
    top = run.best(1)
    return top[0] if top and top[0].code != run.task.source else None
