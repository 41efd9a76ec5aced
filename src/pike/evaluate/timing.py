"""Timing one forward from an idle queue (evaluator step 7). Runs inside the child.

Each run: (GPU) flush the L2, synchronize, host clock and start event, forward, end event, copy the
output out on the current stream with no sync first (a missing stream join then shows as a mismatch),
another event, synchronize, host clock. Host time well above event time means work ran outside the
current stream: it is flagged, and host time is used. Warm-up is by time, so that idle GPU clocks ramp
up in every fresh process. Input sets rotate between runs. A few runs chosen at random keep their output
copies for the orchestrator to check against held-out references; the count adapts until the median is
stable (about a second at most).
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

# Bound before any candidate code is imported, so that patching the module attribute changes nothing.
_perf_counter = time.perf_counter


@dataclass
class TimingConfig:
    warmup_ms: float = 100.0  # of forward work, in every fresh process
    min_runs: int = 5
    max_runs: int = 2000
    max_time_s: float = 1.0
    stable_rel: float = 0.01  # stop once the median moved less than this over the last chunk
    chunk: int = 10
    spot_checks: int = 2  # random timed runs checked (plus the last one)
    flush_l2: bool = True

    def to_json(self) -> dict:
        return asdict(self)


def quantiles(samples: list[float]) -> tuple[float, float]:
    """Median and interquartile range."""
    if len(samples) < 2:
        return (samples[0] if samples else 0.0), 0.0
    q = statistics.quantiles(samples, n=4, method="inclusive")
    return statistics.median(samples), q[2] - q[0]


def clone_outputs(out):
    if isinstance(out, torch.Tensor):
        return out.detach().clone()
    if isinstance(out, (tuple, list)):
        return type(out)(clone_outputs(o) for o in out)
    if isinstance(out, dict):
        return {k: clone_outputs(v) for k, v in out.items()}
    return out


class _Clock:
    """CPU: perf_counter. CUDA: events on the current stream plus the host clock."""

    def __init__(self, device: torch.device, flush_l2: bool):
        self.cuda = device.type == "cuda"
        self.flush_buf = None
        if self.cuda and flush_l2:
            l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 64 * 2**20
            self.flush_buf = torch.empty(max(2 * l2, 64 * 2**20) // 4, dtype=torch.int32, device=device)

    def run(self, fn: Callable[[], object]):
        """Returns (output copy, event ms, host ms, copy ms)."""
        if not self.cuda:
            t0 = _perf_counter()
            out = fn()
            t1 = _perf_counter()
            copy = clone_outputs(out)
            t2 = _perf_counter()
            ms = (t1 - t0) * 1e3
            return copy, ms, ms, (t2 - t1) * 1e3
        if self.flush_buf is not None:
            self.flush_buf.zero_()
        start, end, copied = (torch.cuda.Event(enable_timing=True) for _ in range(3))
        torch.cuda.synchronize()
        t0 = _perf_counter()
        start.record()
        out = fn()
        end.record()
        copy = clone_outputs(out)  # on the current stream, no sync first
        copied.record()
        torch.cuda.synchronize()
        t1 = _perf_counter()
        return copy, start.elapsed_time(end), (t1 - t0) * 1e3, end.elapsed_time(copied)


def time_forward(
    call: Callable[[int], object],
    set_ids: list[int],
    device: torch.device,
    cfg: TimingConfig,
    rng: random.Random,
    prepare: Callable[[int], None] = lambda sid: None,
) -> tuple[dict, list[tuple[int, int, object]]]:
    """Time ``call(set_id)`` rotating over ``set_ids``; ``prepare(set_id)`` (RNG re-seeding) runs
    before each run, outside the timed region.

    Returns (stats, spot) where spot holds (run index, set id, output copy) for a random sample of runs
    (reservoir sampling, since the run count is adaptive) and always the last run.
    """
    clock = _Clock(device, cfg.flush_l2)
    # Warm-up by time: compiles, autotunes and lets the clocks ramp up.
    t_end = _perf_counter() + cfg.warmup_ms / 1e3
    n = 0
    while n < 3 or _perf_counter() < t_end:
        sid = set_ids[n % len(set_ids)]
        prepare(sid)
        clock.run(lambda: call(sid))
        n += 1
        if n > 10000:
            break
    if clock.cuda:
        torch.cuda.reset_peak_memory_stats(device)
    event, host, copy_ms = [], [], []
    spot: list[tuple[int, int, object]] = []
    last = None
    t_start = _perf_counter()
    prev_median = None
    i = 0
    while i < cfg.max_runs:
        sid = set_ids[i % len(set_ids)]
        prepare(sid)
        out, ev, ho, cp = clock.run(lambda: call(sid))
        event.append(ev)
        host.append(ho)
        copy_ms.append(cp)
        # Reservoir sample of the runs whose outputs get checked.
        if len(spot) < cfg.spot_checks:
            spot.append((i, sid, out))
        else:
            j = rng.randrange(i + 1)
            if j < cfg.spot_checks:
                spot[j] = (i, sid, out)
        last = (i, sid, out)
        i += 1
        if i >= cfg.min_runs and i % cfg.chunk == 0:
            med = statistics.median(event)
            if prev_median is not None and abs(med - prev_median) <= cfg.stable_rel * prev_median:
                break
            prev_median = med
        if i >= cfg.min_runs and _perf_counter() - t_start > cfg.max_time_s:
            break
    if last is not None and all(s[0] != last[0] for s in spot):
        spot.append(last)
    ev_med, ev_iqr = quantiles(event)
    ho_med, _ = quantiles(host)
    cp_med, _ = quantiles(copy_ms)
    stats = {"runs": len(event), "samples_ms": event}
    if clock.cuda:
        # Host time covers the forward and the copy-out; events on the current stream cover the same
        # region. Far more host time means work on another stream or on the host after the end event.
        out_of_stream = ho_med > 1.5 * (ev_med + cp_med) + 0.05
        if out_of_stream:
            host_fwd = [h - c for h, c in zip(host, copy_ms)]
            med, iqr = quantiles(host_fwd)
        else:
            med, iqr = ev_med, ev_iqr
        # Weights, inputs, activations and outputs; not the L2 flush buffer.
        flush = clock.flush_buf.numel() * 4 if clock.flush_buf is not None else 0
        peak = torch.cuda.max_memory_allocated(device) - flush
        stats.update(
            median_ms=med,
            iqr_ms=iqr,
            event_median_ms=ev_med,
            host_median_ms=ho_med,
            out_of_stream=out_of_stream,
            peak_mem_bytes=int(max(peak, 0)),
        )
    else:
        stats.update(median_ms=ev_med, iqr_ms=ev_iqr, host_median_ms=ho_med)
    return stats, spot


def fresh_content_probe(
    call: Callable[[int], object],
    repeat_sid: int,
    fresh_sid: int,
    freshen: Callable[[int], None],
    device: torch.device,
    cfg: TimingConfig,
    prepare: Callable[[int], None] = lambda sid: None,
    pairs: int = 8,
    max_time_s: float = 0.5,
) -> dict:
    """Runs on inputs seen many times against runs on inputs never seen, A B A B ... (``freshen(sid)``
    gives set ``fresh_sid`` new content in place before each B run). An honest forward takes as long
    on both; one that caches outputs by input content is fast only on A. Host time on both sides, so
    that work outside the current stream counts too."""
    clock = _Clock(device, cfg.flush_l2)
    a, b = [], []
    t0 = _perf_counter()
    for k in range(pairs):
        prepare(repeat_sid)
        a.append(clock.run(lambda: call(repeat_sid))[2])
        freshen(fresh_sid)
        prepare(fresh_sid)
        b.append(clock.run(lambda: call(fresh_sid))[2])
        if k >= 3 and _perf_counter() - t0 > max_time_s:
            break
    rep, fresh = statistics.median(a), statistics.median(b)
    return {"pairs": len(a), "repeat_ms": rep, "fresh_ms": fresh, "ratio": fresh / rep if rep > 0 else 1.0}


def interleaved(
    calls: dict[str, Callable[[int], object]],
    set_ids: list[int],
    device: torch.device,
    cfg: TimingConfig,
    prepare: Callable[[int], None] = lambda sid: None,
    max_time_s: float = 3.0,
    max_rounds: int = 500,
) -> dict[str, dict]:
    """Time several models in one process, one run of each in turn (A B C A B C ...), so that clock
    drift and a noisy neighbour hit them alike; the numbers reported for a run's final table."""
    clock = _Clock(device, cfg.flush_l2)
    names = list(calls)
    for name in names:  # warm each up by time
        t_end = _perf_counter() + cfg.warmup_ms / 1e3
        n = 0
        while n < 3 or _perf_counter() < t_end:
            sid = set_ids[n % len(set_ids)]
            prepare(sid)
            clock.run(lambda: calls[name](sid))
            n += 1
    samples: dict[str, list[float]] = {n: [] for n in names}
    t0 = _perf_counter()
    for r in range(max_rounds):
        sid = set_ids[r % len(set_ids)]
        order = names if r % 2 == 0 else names[::-1]  # A B C, then C B A: no fixed position
        for name in order:
            prepare(sid)
            _, ev, host, copy_ms = clock.run(lambda: calls[name](sid))
            samples[name].append(ev)
        if r + 1 >= cfg.min_runs and _perf_counter() - t0 > max_time_s:
            break
    out = {}
    for name, s in samples.items():
        med, iqr = quantiles(s)
        out[name] = {"median_ms": med, "iqr_ms": iqr, "runs": len(s), "samples_ms": s}
    return out
