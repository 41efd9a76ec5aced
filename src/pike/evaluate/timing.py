"""Timing one forward from an idle queue (evaluator step 7). Runs inside the child.

Each run: (GPU) flush the L2, synchronize, host clock and start event, forward, end event, the
output's exact type checked, the output copied out on the current stream with no sync first (a
missing stream join then shows as a mismatch), another event, synchronize, host clock. Warm-up is
by time, so that idle GPU clocks ramp up in every fresh process. Input sets rotate between runs. A
few runs chosen at random keep their output copies for the orchestrator to check against held-out
references; the count adapts until the median is stable (about a second at most).

Only raw readings leave this module: every run's event, host and copy times, in order. Medians,
quartiles, intervals and the out-of-stream verdict are computed by the orchestrator
(``pike.evaluate.stats``), where candidate code cannot reach them.
"""

from __future__ import annotations

import random
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
    # Back-to-back (do_bench style: many calls, one sync): calls per batch sized to take about
    # batch_ms, as many batches as fit in throughput_s.
    batch_ms: float = 10.0
    throughput_s: float = 0.3

    def to_json(self) -> dict:
        return asdict(self)


def _median(xs: list[float]) -> float:
    """For the stopping rule only (the figures are the orchestrator's)."""
    s = sorted(xs)
    n = len(s)
    return (s[n // 2] + s[(n - 1) // 2]) / 2 if n else 0.0


def clone_outputs(out):
    if isinstance(out, torch.Tensor):
        return out.detach().clone()
    if isinstance(out, (tuple, list)):
        items = [clone_outputs(o) for o in (list.__iter__(out) if isinstance(out, list) else tuple.__iter__(out))]
        return items if isinstance(out, list) else tuple(items)
    if isinstance(out, dict):
        return {k: clone_outputs(v) for k, v in dict.items(out)}
    return out


class _Clock:
    """CPU: perf_counter. CUDA: events on the current stream plus the host clock. ``check(out)``
    runs on each output before anything touches it (a tensor subclass could do its work in clone)."""

    def __init__(self, device: torch.device, flush_l2: bool, check: Callable[[object], None] = lambda out: None):
        self.cuda = device.type == "cuda"
        self.check = check
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
            self.check(out)
            t2 = _perf_counter()
            copy = clone_outputs(out)
            t3 = _perf_counter()
            ms = (t1 - t0) * 1e3
            return copy, ms, ms, (t3 - t2) * 1e3
        if self.flush_buf is not None:
            self.flush_buf.zero_()
        start, end, copied = (torch.cuda.Event(enable_timing=True) for _ in range(3))
        torch.cuda.synchronize()
        t0 = _perf_counter()
        start.record()
        out = fn()
        end.record()
        self.check(out)
        copy = clone_outputs(out)  # on the current stream, no sync first
        copied.record()
        torch.cuda.synchronize()
        t1 = _perf_counter()
        return copy, start.elapsed_time(end), (t1 - t0) * 1e3, end.elapsed_time(copied)

    def batch(self, fn: Callable[[], object], calls: int) -> float:
        """Mean ms per call of ``calls`` calls back to back, one sync at the end (do_bench style: on a
        GPU each call between its own events after an L2 flush, with no sync, so the queue stays full)."""
        if not self.cuda:
            t0 = _perf_counter()
            for _ in range(calls):
                self.check(fn())
            return (_perf_counter() - t0) * 1e3 / calls
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(calls)]
        torch.cuda.synchronize()
        for start, end in events:
            if self.flush_buf is not None:
                self.flush_buf.zero_()
            start.record()
            out = fn()
            end.record()
            self.check(out)
        torch.cuda.synchronize()
        return sum(s.elapsed_time(e) for s, e in events) / calls


def _warm_up(clock: _Clock, call, set_ids: list[int], prepare, warmup_ms: float) -> None:
    """Warm-up by time: compiles, autotunes and lets the clocks ramp up."""
    t_end = _perf_counter() + warmup_ms / 1e3
    n = 0
    while n < 3 or _perf_counter() < t_end:
        sid = set_ids[n % len(set_ids)]
        prepare(sid)
        clock.run(lambda: call(sid))
        n += 1
        if n > 10000:
            break


def time_forward(
    call: Callable[[int], object],
    set_ids: list[int],
    device: torch.device,
    cfg: TimingConfig,
    rng: random.Random,
    prepare: Callable[[int], None] = lambda sid: None,
    check: Callable[[object], None] = lambda out: None,
) -> tuple[dict, list[tuple[int, int, object]]]:
    """Time ``call(set_id)`` rotating over ``set_ids``; ``prepare(set_id)`` (RNG re-seeding) runs
    before each run, outside the timed region; ``check(output)`` on each output before it is copied.

    Returns (raw, spot): the readings of every run in order (``event_ms``, ``host_ms``, ``copy_ms``)
    and (run index, set id, output copy) for a random sample of runs (reservoir sampling, since the
    run count is adaptive) and always the last run.
    """
    clock = _Clock(device, cfg.flush_l2, check)
    _warm_up(clock, call, set_ids, prepare, cfg.warmup_ms)
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
            med = _median(event)
            if prev_median is not None and abs(med - prev_median) <= cfg.stable_rel * prev_median:
                break
            prev_median = med
        if i >= cfg.min_runs and _perf_counter() - t_start > cfg.max_time_s:
            break
    if last is not None and all(s[0] != last[0] for s in spot):
        spot.append(last)
    raw = {"runs": len(event), "event_ms": event, "host_ms": host, "copy_ms": copy_ms}
    if clock.cuda:
        # Weights, inputs, activations and outputs; not the L2 flush buffer.
        flush = clock.flush_buf.numel() * 4 if clock.flush_buf is not None else 0
        raw["peak_mem_bytes"] = int(max(torch.cuda.max_memory_allocated(device) - flush, 0))
    return raw, spot


def batch_calls(latency_ms: float, cfg: TimingConfig) -> int:
    """Calls in one back-to-back batch: about ``batch_ms`` of work, 5 to 200."""
    return int(min(200, max(5, cfg.batch_ms / max(latency_ms, 1e-3))))


def back_to_back(
    call: Callable[[int], object], sid: int, device: torch.device, cfg: TimingConfig, calls: int,
    prepare: Callable[[int], None] = lambda sid: None, check: Callable[[object], None] = lambda out: None,
) -> list[float]:
    """Throughput: mean ms per call of each batch of ``calls`` calls back to back (at least 3 batches,
    then as many as fit in ``cfg.throughput_s``)."""
    clock = _Clock(device, cfg.flush_l2, check)
    out: list[float] = []
    t0 = _perf_counter()
    while len(out) < 3 or (_perf_counter() - t0 < cfg.throughput_s and len(out) < 100):
        prepare(sid)
        out.append(clock.batch(lambda: call(sid), calls))
    return out


def fresh_content_probe(
    call: Callable[[int], object],
    repeat_sid: int,
    fresh_sids: list[int],
    load: Callable[[int], int],
    device: torch.device,
    cfg: TimingConfig,
    prepare: Callable[[int], None] = lambda sid: None,
    check: Callable[[object], None] = lambda out: None,
) -> tuple[dict, list[tuple[int, object]]]:
    """Runs on inputs seen many times against runs on inputs never seen, A B A B ...: before each B
    run, ``load(sid)`` copies held-out input set ``sid`` into the probe's buffer (outside the timed
    region) and returns the buffer's id for ``call``. An honest forward takes as long on both; one
    that caches outputs by input content is fast only on A, and one that matches content loosely
    returns another input's output on B (the B outputs are kept, to be checked). Host time on both
    sides, so that work outside the current stream counts too.

    Returns ({"repeat_ms": [...], "fresh_ms": [...]}, [(sid, output copy) of each B run])."""
    clock = _Clock(device, cfg.flush_l2, check)
    a, b, outs = [], [], []
    for sid in fresh_sids:
        prepare(repeat_sid)
        a.append(clock.run(lambda: call(repeat_sid))[2])
        buf = load(sid)
        prepare(sid)
        copy, _, host, _ = clock.run(lambda: call(buf))
        b.append(host)
        outs.append((sid, copy))
    return {"repeat_ms": a, "fresh_ms": b}, outs


def interleaved(
    calls: dict[str, Callable[[int], object]],
    set_ids: list[int],
    device: torch.device,
    cfg: TimingConfig,
    prepare: Callable[[int], None] = lambda sid: None,
    max_time_s: float = 3.0,
    max_rounds: int = 500,
    enough: Callable[[dict[str, list[float]]], bool] = lambda rounds: False,
) -> dict[str, dict]:
    """Time several models in one process, one run of each in turn (A B C A B C ...), so that clock
    drift and a noisy neighbour hit them alike; the numbers reported for a run's final table. Goes
    on until ``enough(rounds so far)`` (checked every ``cfg.chunk`` rounds: the intervals are tight)
    or ``max_time_s``; then back-to-back batches of each, interleaved the same way.

    Returns per model its raw readings, one per round: ``event_ms``, ``host_ms``, ``copy_ms``, and
    ``batch_ms`` (mean ms per call of each back-to-back round)."""
    clock = _Clock(device, cfg.flush_l2)
    names = list(calls)
    for name in names:
        _warm_up(clock, calls[name], set_ids, prepare, cfg.warmup_ms)
    raw: dict[str, dict] = {n: {"event_ms": [], "host_ms": [], "copy_ms": [], "batch_ms": []} for n in names}
    t0 = _perf_counter()
    for r in range(max_rounds):
        sid = set_ids[r % len(set_ids)]
        order = names if r % 2 == 0 else names[::-1]  # A B C, then C B A: no fixed position
        for name in order:
            prepare(sid)
            _, ev, host, copy_ms = clock.run(lambda: calls[name](sid))
            raw[name]["event_ms"].append(ev)
            raw[name]["host_ms"].append(host)
            raw[name]["copy_ms"].append(copy_ms)
        if r + 1 >= cfg.min_runs and _perf_counter() - t0 > max_time_s:
            break
        if (r + 1) % cfg.chunk == 0 and enough({n: raw[n]["event_ms"] for n in names}):
            break
    sizes = {n: batch_calls(_median(raw[n]["event_ms"]), cfg) for n in names}
    t1 = _perf_counter()
    r = 0
    while r < 3 or (_perf_counter() - t1 < cfg.throughput_s * len(names) and r < 50):
        sid = set_ids[r % len(set_ids)]
        for name in (names if r % 2 == 0 else names[::-1]):
            prepare(sid)
            raw[name]["batch_ms"].append(clock.batch(lambda: calls[name](sid), sizes[name]))
        r += 1
    return raw
