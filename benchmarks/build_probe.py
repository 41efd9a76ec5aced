"""One load_inline CUDA build, timed, with the build log (issue: GPU timing and pool; build cost)."""
import sys, time, tempfile
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from gpu_evaluator import CUDA_EXT, task
from pike.evaluate.build import Builder
from pike.evaluate.evaluator import EvalConfig, Evaluator

t = task("mlp_shallow_wide")
cache = Path(tempfile.mkdtemp())
with Evaluator(EvalConfig(device="cuda", cache_dir=cache)) as ev:
    arch = ev.arch_list()
print("arch", arch, flush=True)
for jobs in (None,):
    b = Builder(cache, arch_list=arch)
    src = CUDA_EXT.replace("{variant}", "probe").replace("{task_source}", t.source)
    t0 = time.monotonic()
    out = b.build(src, cache / "job", timeout=float(sys.argv[1]) if len(sys.argv) > 1 else 200)
    print("status", out.status, "wall", round(time.monotonic() - t0, 1), out.message[:300], flush=True)
    print(out.log[-3000:] if out.log else "(no log)")
    b.close()
