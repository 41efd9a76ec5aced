"""The evaluation pipeline's contracts: typed jobs, one order of stages, job directories that hold
only what a candidate may see, a reference cache that is checked when read, bounded reading of what
a candidate hands over."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from pike.evaluate import checksums, jobs, outputs, pipeline
from pike.evaluate.evaluator import EvalConfig, Evaluator
from pike.evaluate.timing import TimingConfig
from pike.task import load_task

HERE = Path(__file__).parent
FAST = TimingConfig(warmup_ms=5, max_time_s=0.1)


@pytest.fixture(scope="module")
def ln_task():
    return load_task(HERE / "tasks" / "ln_mlp.py", size="small")


def cand(name: str) -> str:
    return (HERE / "candidates" / name).read_text()


def test_every_job_kind_round_trips_through_its_json(tmp_path):
    part = jobs.Part(code="c.py", data="main", facts={"call_seed": 7}, trials=[0, 3], random_trials=[1])
    timing = jobs.TimingPlan(config=TimingConfig().to_json(), sets=[4], refill=[5], seed=9, probe=[[6, 7], [8, 9]])
    every = [
        jobs.ProbeJob(device="cpu", bandwidth=True),
        jobs.ReferenceJob(device="cpu", task="t.py", module_name="m", out_dir="entry", init_seed=1, input_seed=2, call_seed=3,
                          pool=9, min_pool=3, pool_bytes=10, random_count=2, init_on="device"),
        jobs.BuildJob(code="b.py", module_name="m"),
        jobs.CandidateJob(device="cpu", module_name="m", init_seed=1, main=part, alt=jobs.Part("a.py", "alt", {}, [0]), timing=timing,
                          gpu_gate=True, ipc=True),
        jobs.CandidateJob(device="cpu", module_name="m", init_seed=1, main=part),
        jobs.RetimeJob(device="cpu", module_name="m", init_seed=1, data="data", facts={}, entries=[jobs.RetimeEntry("eager", "e.py")],
                       sets=[0, 1], config={}, max_time_s=1.0),
        jobs.ProfileJob(device="cpu", module_name="m", code="s.py", data="data", facts={}, init_seed=1),
    ]
    assert len({type(j) for j in every}) == len(jobs.JOBS)
    for job in every:
        (tmp_path / "job.json").write_text(json.dumps(job.to_json()))
        assert jobs.load(tmp_path) == job


class Recording(pipeline.Local):
    """Local placement that notes the order in which the pipeline asks for its stages."""

    def __init__(self, ev):
        super().__init__(ev)
        self.calls = []

    async def references(self, task):
        self.calls.append("references")
        return await super().references(task)

    async def build(self, prep):
        self.calls.append("build")
        return await super().build(prep)

    async def on_device(self, work, priority):
        self.calls.append("on_device")
        return await super().on_device(work, priority)


@pytest.fixture(scope="module")
def ev(tmp_path_factory):
    cfg = EvalConfig(cache_dir=tmp_path_factory.mktemp("cache"), timeout_s=60, timing=FAST, keep_jobs=True)
    with Evaluator(cfg) as e:
        yield e


@pytest.mark.slow
def test_one_order_of_stages(ev, ln_task):
    place = Recording(ev)
    r = pipeline.run_now(pipeline.evaluate(place, ln_task, cand("ln_fused.py")))
    assert r.ok and place.calls == ["references", "build", "on_device"], (r.message, place.calls)
    place.calls.clear()
    r = pipeline.run_now(pipeline.evaluate(place, ln_task, cand("ln_patch_allclose.py")))
    assert r.status == "rejected" and r.stage == "static" and place.calls == []  # nothing past the static check


@pytest.mark.slow
def test_a_candidates_job_directory_holds_only_what_it_may_see(ev, ln_task):
    before = set(ev.workdir.rglob("job.json"))
    assert ev.evaluate(ln_task, cand("ln_fused.py")).ok
    [d] = [p.parent for p in ev.workdir.rglob("job.json") if p not in before and jobs.load(p.parent).kind == "candidate"]
    files = sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())
    job = jobs.load(d)
    plan_sets = sorted(set(job.main.trials) | set(job.main.random_trials) | set(job.timing.sets) | set(job.timing.refill)
                       | {i for group in job.timing.probe or [] for i in group})
    assert {f for f in files if f.startswith("main/inputs/")} == {f"main/inputs/{i}.pt" for i in plan_sets}
    assert {"main/init_inputs.pt", "main/random_sd.pt", "alt/init_inputs.pt", "job.json"} <= set(files)
    # No outputs of the reference anywhere, and nothing in the job points out of its directory.
    ref, _ = ev.references(ln_task)
    answers = {checksums.file_sha256(ref.dir / f) for f in ref.files if f.startswith("answers/")}
    assert not answers & {checksums.file_sha256(d / f) for f in files}
    doc = json.loads((d / "job.json").read_text())
    # The task's import paths (as Python would have them for the task file) are the only paths named
    imports = doc.pop("imports")["sys_path"]
    assert not any(p.startswith((str(ev.cache), str(ev.workdir))) for p in imports)
    text = json.dumps(doc)
    assert str(ev.cache) not in text and str(ev.workdir) not in text and str(Path.home()) not in text
    assert not any(isinstance(v, str) and v.startswith("/") for v in _strings(doc))


def _strings(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    else:
        yield obj


@pytest.mark.slow
def test_a_reference_changed_on_disk_is_found_and_computed_again(tmp_path, ln_task):
    cfg = EvalConfig(cache_dir=tmp_path / "cache", timeout_s=60, timing=FAST)
    with Evaluator(cfg) as e:
        ref, _ = e.references(ln_task)
    # Overwritten in place with zeros, its times set back: the change time still moves.
    for f in (ref.dir / "answers" / "outputs").iterdir():
        st = f.stat()
        torch.save(torch.zeros_like(torch.load(f)), f)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    with Evaluator(cfg) as e:
        r = e.evaluate(ln_task, cand("ln_fused.py"))
        assert r.ok, r.message
        assert any("does not match its checksum" in p for p in e.refs.problems), e.refs.problems
    # The manifest rewritten to match the new files: its signature no longer does.
    manifest = json.loads((ref.dir / "manifest.json").read_text())
    torch.save(torch.zeros(16, 48), ref.dir / "answers" / "outputs" / "0.pt")
    manifest["files"]["answers/outputs/0.pt"] = checksums.file_sha256(ref.dir / "answers" / "outputs" / "0.pt")
    (ref.dir / "manifest.json").write_text(json.dumps(manifest))
    with Evaluator(cfg) as e:
        assert e.evaluate(ln_task, cand("ln_fused.py")).ok
        assert any("signature" in p for p in e.refs.problems), e.refs.problems


def test_checksums_are_checked_on_every_read_of_a_changed_file(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"reference")
    sha = checksums.file_sha256(f)
    assert checksums.read_verified(f, sha) == b"reference"
    checksums.copy_verified(f, tmp_path / "copy" / "x.bin", sha)
    assert (tmp_path / "copy" / "x.bin").read_bytes() == b"reference"
    st = f.stat()
    f.write_bytes(b"poisoned!")  # same size, times set back
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(checksums.Tampered):
        checksums.read_verified(f, sha)
    with pytest.raises(checksums.Tampered):
        checksums.copy_verified(f, tmp_path / "copy" / "y.bin", sha)
    files = {"x.bin": sha}
    assert checksums.signed(files, checksums.sign(files)) and not checksums.signed({"x.bin": "0" * 64}, checksums.sign(files))


def test_outputs_are_read_within_bounds(tmp_path):
    bounds = outputs.Bounds(tensor_bytes=16 * 48 * 4, leaves=1) * 5
    ok = {"seeded": {i: torch.randn(16, 48) for i in range(5)}}
    torch.save(ok, tmp_path / "ok.pt")
    assert torch.equal(outputs.load_child_file(tmp_path / "ok.pt", bounds)["seeded"][3], ok["seeded"][3])
    # A Python list of numbers beside the tensors: refused before it is unpickled.
    torch.save({"seeded": {i: (torch.randn(16, 48), [float(j) for j in range(2000)]) for i in range(5)}}, tmp_path / "list.pt")
    with pytest.raises(outputs.UnsafeOutputs, match="Python values"):
        outputs.load_child_file(tmp_path / "list.pt", bounds)
    # Bigger than the outputs can take: refused unread.
    torch.save({"seeded": {i: torch.randn(160, 48) for i in range(5)}}, tmp_path / "big.pt")
    with pytest.raises(outputs.UnsafeOutputs, match="not read"):
        outputs.load_child_file(tmp_path / "big.pt", bounds)
    # Nested past any output's depth.
    deep = torch.randn(2)
    for _ in range(outputs.MAX_DEPTH + 2):
        deep = [deep]
    torch.save(deep, tmp_path / "deep.pt")
    with pytest.raises(outputs.UnsafeOutputs, match="nested"):
        outputs.load_child_file(tmp_path / "deep.pt", bounds)
    (tmp_path / "deep.json").write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(outputs.UnsafeOutputs):
        outputs.load_description(tmp_path / "deep.json", bounds)
    (tmp_path / "junk.pt").write_bytes(b"not an archive")
    with pytest.raises(outputs.UnsafeOutputs, match="torch.save"):
        outputs.load_child_file(tmp_path / "junk.pt", bounds)
