"""The offline strategy on models people run, through the Python API (random weights, no downloads).

    PYTHONPATH=src python3 benchmarks/real_models.py resnet50,vit --minutes 2 --out $OUT
    PYTHONPATH=src python3 benchmarks/real_models.py gpt2-medium --startup-only --out $OUT

Per model, ``pike.optimize`` runs the offline portfolio with a search time limit of ``--minutes``
(the final table then compiles ``--modes``, default "default" only, and re-times the finalists
side by side with eager). One JSON line per model goes to ``$OUT/real_models.jsonl``: eager,
torch.compile per mode and PIKE's best (ms, re-timed interleaved), the speedups, the winning
variant, whether the search was cut by its time limit, the start-up (reference, eager baseline)
and the minutes of the whole call.

``--startup-only``: the part before a search, timed stage by stage through the same pool and
evaluator (saving the model, the reference job with its phases, the eager baseline): the goal is a
model of 1-3 GB of weights reaching its search in under two minutes on one H200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


def resnet50():
    import torchvision

    return torchvision.models.resnet50(), (torch.randn(32, 3, 224, 224),)


def vit():
    import timm

    return timm.create_model("vit_base_patch16_224", pretrained=False), (torch.randn(32, 3, 224, 224),)


def _gpt2(layers: int, dim: int, heads: int, batch: int, seq: int):
    from transformers import GPT2Config, GPT2Model

    cfg = GPT2Config(n_layer=layers, n_embd=dim, n_head=heads, n_positions=max(1024, seq), use_cache=False)
    return GPT2Model(cfg), (torch.randint(0, cfg.vocab_size, (batch, seq)),)


def gpt2():
    return _gpt2(12, 768, 12, 8, 512)  # GPT-2 small's shape: 124M parameters


def gpt2_medium():
    return _gpt2(24, 1024, 16, 4, 1024)  # GPT-2 medium's shape: 355M parameters, 1.4 GB in fp32


def bert():
    from transformers import BertConfig, BertModel

    cfg = BertConfig()  # BERT-base's shape: 110M parameters
    ids = torch.randint(0, cfg.vocab_size, (32, 128))
    return BertModel(cfg), (ids, torch.ones_like(ids))


def tiny():
    """torch alone: the script's own check on a CPU (``tiny --device cpu``)."""
    layer = torch.nn.TransformerEncoderLayer(64, 4, 128, batch_first=True)
    return torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), (torch.randn(4, 16, 64),)


MODELS = {"resnet50": resnet50, "vit": vit, "gpt2": gpt2, "bert": bert, "gpt2-medium": gpt2_medium, "tiny": tiny}


def build(name: str):
    torch.manual_seed(0)
    model, inputs = MODELS[name]()
    return model.eval(), inputs


def weights_gb(model) -> float:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())) / 2**30


def search(name: str, runs: Path, minutes: float, modes: str, device: str) -> dict:
    import pike

    model, inputs = build(name)
    run_dir = runs / f"{name}-{time.strftime('%H%M%S')}"
    t0 = time.monotonic()
    result = pike.optimize(model, inputs, device=device, time_limit=minutes, out=run_dir,
                           search__final_compile_modes=modes)
    wall = time.monotonic() - t0
    con = sqlite3.connect(run_dir / "run.db")
    state = json.loads(con.execute("SELECT state FROM tasks").fetchone()[0])
    variants = {idea: (status, ms) for idea, status, ms in
                con.execute("SELECT idea, status, runtime_ms FROM solutions WHERE origin = 'offline'")}
    best_id = state["final"].get("best_solution")
    best = con.execute("SELECT idea FROM solutions WHERE id = ?", (best_id,)).fetchone() if best_id else None
    con.close()
    final, row = state["final"], result.summary
    eager = final["eager_ms"]
    return {
        "model": name, "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "weights_gb": weights_gb(model),
        "inputs": [list(t.shape) for t in inputs], "eager_ms": eager, "best_ms": final["best_ms"],
        "best_variant": best[0] if best else "eager", "speedup_eager": row["speedup_eager"],
        "compile_ms": final["compile_ms"], "compile_status": final["compile_status"],
        "speedup_vs_compile": {m: ms / final["best_ms"] for m, ms in final["compile_ms"].items()},
        "compile_vs_eager": {m: eager / ms for m, ms in final["compile_ms"].items()},
        "stopped_by_time_limit": state.get("stopped") == "time limit", "startup": state.get("startup"),
        "shapes_verified": row.get("shapes_verified"), "tolerance": row.get("tolerance"),
        "variants": variants, "minutes": wall / 60,
    }


def startup(name: str, runs: Path, device: str) -> dict:
    """Saving the model, the reference job (its phases from its meta) and the eager baseline, as the
    engine runs them before a search."""
    from pike.evaluate.evaluator import EvalConfig
    from pike.evaluate.pool import EvalPool
    from pike.modeltask import write_task
    from pike.task import load_task

    model, inputs = build(name)
    t0 = time.monotonic()
    task = load_task(write_task(model, inputs, runs / f"startup-{name}-{time.strftime('%H%M%S')}"))
    t1 = time.monotonic()

    async def go():
        with EvalPool(EvalConfig(device=device)) as pool:
            meta = await pool.reference_meta(task)
            t2 = time.monotonic()
            eager = await pool.baseline(task, "eager", fresh=True)
            return meta, t2, eager

    meta, t2, eager = asyncio.run(go())
    t3 = time.monotonic()
    return {"model": name, "weights_gb": weights_gb(model), "save_s": t1 - t0, "reference_s": t2 - t1,
            "eager_s": t3 - t2, "to_search_s": t3 - t0, "eager_status": eager.status, "eager_ms": eager.runtime_ms,
            "reference_phases_s": meta.get("durations_s"), "memory": meta.get("memory"),
            "batch_alt": meta.get("batch_alt"), "eager_default": meta.get("eager_default")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", help=f"comma list of {', '.join(MODELS)}")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "real-models")), help="the JSON lines")
    ap.add_argument("--runs", type=Path, default=Path("/tmp/pike-real-runs"), help="run directories (model files: GBs)")
    ap.add_argument("--minutes", type=float, default=2.0, help="search time limit per model")
    ap.add_argument("--modes", default="default", help="torch.compile modes of the final table (comma list)")
    ap.add_argument("--startup-only", action="store_true", help="time the start-up alone (no search)")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        if name not in MODELS:
            sys.exit(f"unknown model {name!r}: {', '.join(MODELS)}")
        try:
            row = (startup(name, args.runs, args.device) if args.startup_only
                   else search(name, args.runs, args.minutes, args.modes, args.device))
        except Exception as e:  # noqa: BLE001 - one model's failure must not lose the others
            row = {"model": name, "error": f"{type(e).__name__}: {e}"}
        line = json.dumps(row)
        print(line, flush=True)
        with open(args.out / ("startup.jsonl" if args.startup_only else "real_models.jsonl"), "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
