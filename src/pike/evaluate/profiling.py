"""Where a forward's time goes, for the agents' prompts: a profile whose rows add up to the time
measured around the profiled forwards.

A plain operator table misleads: a C++ extension called from Python is no dispatcher op, so it
never shows, and a model whose time is mostly in its custom op looks as if that op cost nothing.
Here every forward runs inside a ``record_function`` marker with PyTorch's Python tracer on: each
operator's self time, each extension function's self time (the tracer sees the call), the
interpreter's own work, and what is left of the measured time as "unattributed" — so the rows
always sum to the total. On a GPU the rows are the kernels (custom CUDA and Triton ones included,
CUPTI sees every launch) and the remainder is time the GPU ran no kernel.

``profile_forward`` runs in the evaluation child; ``format_profile`` turns its plain result into
the text a prompt shows.
"""

from __future__ import annotations

import re
import time

MARKER = "PIKE forward"  # the record_function around each profiled forward
_EXTENSION_CALL = re.compile(r"^<built-in method (\w+) of pybind11")
HOST = "Python and other host work (interpreter, module calls)"
UNATTRIBUTED_CPU = "unattributed (time inside the forward that the profiler did not see)"
UNATTRIBUTED_GPU = "no kernel running (launch gaps, host work, synchronisation)"


def profile_forward(model, inputs, device, iters: int = 5) -> dict:
    """Profile ``iters`` forwards (after the caller's warm-up). Returns ``{"device", "iters",
    "wall_ms", "rows": [[what, kind, calls, ms], ...], "tracer"}`` with times summed over the
    forwards; ``kind`` is op, extension, host or kernel."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    tracer = not cuda  # the Python tracer names extension calls; a GPU's kernels are seen anyway
    try:
        prof, wall = _run(profile(activities=acts, with_stack=tracer), record_function, model, inputs, iters, cuda)
        events = list(prof.events())
    except Exception:  # noqa: BLE001 - the tracer failed (a torch without it, an undecodable frame name)
        if not tracer:
            raise
        tracer = False
        prof, wall = _run(profile(activities=acts), record_function, model, inputs, iters, cuda)
        events = list(prof.events())
    rows = _kernel_rows(events) if cuda else _cpu_rows(events)
    return {"device": "cuda" if cuda else "cpu", "iters": iters, "wall_ms": wall, "rows": rows, "tracer": tracer}


def _run(prof, record_function, model, inputs, iters: int, cuda: bool):
    import torch

    with prof:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            with record_function(MARKER):
                model(*inputs)
        if cuda:
            torch.cuda.synchronize()
        wall = (time.perf_counter() - t0) * 1e3
    return prof, wall


def _cpu_rows(events) -> list[list]:
    """Self time of everything inside the markers, on the marker's thread: dispatcher operators by
    name, extension functions by name, the rest (Python frames, builtins, the marker itself) as host."""
    rows: dict[tuple[str, str], list] = {}
    for marker in (e for e in events if e.name == MARKER):
        stack = [marker]
        while stack:
            e = stack.pop()
            stack.extend(e.cpu_children)
            what, kind = _classify(e.name) if e is not marker else (HOST, "host")
            if kind == "unattributed":
                continue
            row = rows.setdefault((what, kind), [what, kind, 0, 0.0])
            row[2] += 1
            row[3] += e.self_cpu_time_total / 1e3
    return list(rows.values())


def _classify(name: str) -> tuple[str, str]:
    m = _EXTENSION_CALL.match(name)
    if m and not m.group(1).startswith("_"):  # torch's own bindings are private (_record_function_enter...)
        return f"{m.group(1)} (C++ extension function)", "extension"
    if "::" in name and not name.startswith("<") and ".py(" not in name:
        return name, "op"
    return HOST, "host"


def _kernel_rows(events) -> list[list]:
    """Device time of each kernel (and copy or fill) by name."""
    from torch.autograd import DeviceType

    rows: dict[str, list] = {}
    for e in events:
        if e.device_type == DeviceType.CUDA:
            row = rows.setdefault(e.name, [e.name, "kernel", 0, 0.0])
            row[2] += 1
            row[3] += e.time_range.elapsed_us() / 1e3
    return list(rows.values())


def format_profile(p: dict, top: int = 10, name_width: int = 70, min_share: float = 0.005) -> str:
    """The profile as a table per forward: the ``top`` rows by time (those of at least ``min_share``),
    the others summed in one row, then host work and the unattributed remainder, so that the shares
    add up to 100%."""
    n = max(int(p.get("iters") or 1), 1)
    total = p["wall_ms"] / n
    rows = sorted(([w, k, c / n, ms / n] for w, k, c, ms in p["rows"] if k != "host"), key=lambda r: -r[3])
    host = sum(ms for _, k, _, ms in p["rows"] if k == "host") / n
    keep = [r for r in rows[:top] if total > 0 and r[3] / total >= min_share]
    shown, rest = keep, rows[len(keep):]
    cuda = p.get("device") == "cuda"
    lines = [f"{total:.4g} ms per forward while profiled ({n} forwards; the profiler slows each down, so read the shares)",
             f"{'share':>6}  {'ms/fwd':>9}  {'calls/fwd':>9}  {'kernel' if cuda else 'operator or function'}"]

    def line(what: str, ms: float, calls: float | None = None) -> str:
        share = ms / total if total > 0 else 0.0
        calls_text = f"{calls:.3g}" if calls is not None else ""
        return f"{share:6.1%}  {ms:9.4g}  {calls_text:>9}  {what[:name_width]}"

    lines += [line(w, ms, c) for w, _, c, ms in shown]
    if rest:
        lines.append(line(f"({len(rest)} other {'kernels' if cuda else 'operators'})", sum(r[3] for r in rest),
                          sum(r[2] for r in rest)))
    if host > 0:
        lines.append(line(HOST, host))
    attributed = sum(r[3] for r in rows) + host
    lines.append(line(UNATTRIBUTED_GPU if cuda else UNATTRIBUTED_CPU, max(total - attributed, 0.0)))
    lines.append(line("total", max(total, attributed)))
    if not cuda and not p.get("tracer"):
        lines.append("(without PyTorch's Python tracer: C++ extension calls are inside the unattributed time)")
    return "\n".join(lines)
