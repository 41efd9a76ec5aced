"""`pike show` and the report's list of exchanges, over a store built with the Store API: what the
model was sent, what it replied, the code taken from it and the verdict; filters, errors, escaping."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from pike.cli import app
from pike.evaluate.result import EvalResult, Timing
from pike.store import Store

SRC = str(Path(__file__).resolve().parent.parent / "src")
BREAKOUT = "</script><script>alert(1)</script>"
CODE = "class ModelNew(nn.Module):\n    def forward(self, x):\n        return torch.relu(x).mul(2)  # {tag}\n"


def _exchange(store: Store, tid: int, role: str, prompt: str, reply: str, *, phase=0, branch=None, reask_of=None,
              tokens=(100, 50), usd=0.01) -> int:
    ex = store.start_exchange(role, "test/model", [{"role": "system", "content": "You are a tester."},
                                                    {"role": "user", "content": prompt}], reserved_usd=1.0,
                              meta={"task_id": tid, "phase": phase, "branch": branch, "reask_of": reask_of})
    store.finish_exchange(ex, SimpleNamespace(text=reply, input_tokens=tokens[0], output_tokens=tokens[1], cost_usd=usd,
                                              latency_s=1.5), None, 1)
    return ex


def _candidate(store: Store, tid: int, ex: int, tag: str, result: EvalResult, **kw) -> int:
    sid = store.add_solution(tid, CODE.format(tag=tag), kw.pop("origin", "coa"), **kw)
    store.link_exchange(ex, sid)
    store.record_evaluation(sid, result)
    return sid


def make_run(d: Path) -> dict:
    """Two tasks. alpha: a brainstorm, a COA whose reply held no code and its re-ask (a candidate that
    fails), an EFA fix (correct, 4x). beta: one COA (correct, 2x) whose reply tries to break out of
    the page's script."""
    store = Store(d / "run.db")
    ids = {}
    a = store.add_task("alpha", "/t/alpha.py", None, "ref", "alpha")
    b = store.add_task("beta", "/t/beta.py", None, "ref", "beta")
    ids["iba"] = _exchange(store, a, "iba", "Brainstorm ideas for <em>alpha</em>", "1. fuse\n2. [bold]tile[/bold]")
    ids["prose"] = _exchange(store, a, "coa", "Optimise alpha", "I would fuse the ops, but here is no code.", branch=0)
    store.mark_unusable(ids["prose"], "no code block in the reply")
    ids["reask"] = _exchange(store, a, "coa", "Optimise alpha (reply with one ```python block)",
                             "```python\n" + CODE.format(tag="bad") + "```", branch=0, reask_of=ids["prose"])
    ids["bad"] = _candidate(store, a, ids["reask"], "bad", EvalResult("mismatch", message="max abs error 0.5 > 1e-4", eager_ms=8.0),
                            phase=0, branch=0)
    ids["fix"] = _exchange(store, a, "efa", "Fix this candidate: max abs error 0.5", "```python\nfixed\n```", phase=0, branch=0,
                           tokens=(300, 120), usd=0.03)
    ids["fixed"] = _candidate(store, a, ids["fix"], "fixed", EvalResult("ok", message="correct", eager_ms=8.0,
                              timing=Timing(median_ms=2.0, iqr_ms=0.1, runs=10)), origin="efa", fix_of=ids["bad"], attempt=1)
    ids["beta"] = _exchange(store, b, "coa", "Optimise beta <model>", "Here: " + BREAKOUT + "\n```python\nx\n```", branch=1)
    ids["beta_sol"] = _candidate(store, b, ids["beta"], "beta", EvalResult("ok", message="correct", eager_ms=6.0,
                                 timing=Timing(median_ms=3.0, iqr_ms=0.1, runs=10)))
    store.close()
    return ids


@pytest.fixture
def run(tmp_path):
    d = tmp_path / "run"
    return d, make_run(d)


def pike(*args: str):
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output


def exchange_rows(out: str) -> list[str]:
    """The rows of the exchanges table (the overview prints the candidates' tables before it)."""
    return [line for line in out[out.index("exchanges of "):].splitlines() if line.startswith("│")]


def test_table_lists_every_exchange(run):
    d, ids = run
    rc, out = pike("show", str(d))
    assert rc == 0, out
    lines = {int(line.split()[1]): line for line in exchange_rows(out)}
    assert sorted(lines) == sorted(ids[k] for k in ("iba", "prose", "reask", "fix", "beta"))
    assert "no code: no code block in the reply" in lines[ids["prose"]] and f"re-asked in #{ids['reask']}" in lines[ids["prose"]]
    assert f"re-ask of #{ids['prose']}" in lines[ids["reask"]] and f"#{ids['bad']} mismatch" in lines[ids["reask"]]
    fix = lines[ids["fix"]]
    assert f"#{ids['fixed']} ok" in fix and "4.00x" in fix and "300/120" in fix and "0.0300" in fix and f"fixes #{ids['bad']}" in fix
    assert "beta" in lines[ids["beta"]] and "2.00x" in lines[ids["beta"]]
    assert "5 of 5 exchanges; tokens 700 in / 320 out; $0.0700" in out


def test_filters(run):
    d, ids = run
    shown = lambda out: sorted(int(l.split()[1]) for l in exchange_rows(out))  # noqa: E731
    rc, out = pike("show", str(d), "--task", "beta")
    assert rc == 0 and shown(out) == [ids["beta"]]
    rc, out = pike("show", str(d), "--role", "efa,iba")
    assert rc == 0 and shown(out) == [ids["iba"], ids["fix"]]
    rc, out = pike("show", str(d), "--role", "coa", "--role", "EFA", "--task", "alpha")
    assert rc == 0 and shown(out) == [ids["prose"], ids["reask"], ids["fix"]]
    assert "3 of 5 exchanges" in out


def test_one_exchange_in_full(run):
    d, ids = run
    rc, out = pike("show", str(d), "--exchange", str(ids["reask"]))
    assert rc == 0, out
    assert "prompt: system" in out and "You are a tester." in out and "Optimise alpha (reply with one ```python block)" in out
    assert f"code: candidate #{ids['bad']} (coa)" in out and "torch.relu(x).mul(2)  # bad" in out
    assert "mismatch: max abs error 0.5 > 1e-4" in out and f"re-ask of #{ids['prose']}" in out
    rc, out = pike("show", str(d), "--exchange", str(ids["fix"]))
    assert "ok: correct · runtime 2.000 ms · 4.00x vs eager" in out and "tokens 300 in / 120 out" in out
    rc, out = pike("show", str(d), "--exchange", str(ids["iba"]))  # text that looks like markup stays as written
    assert rc == 0 and "Brainstorm ideas for <em>alpha</em>" in out and "2. [bold]tile[/bold]" in out


def test_unusable_reply_says_why(run):
    d, ids = run
    rc, out = pike("show", str(d), "--exchange", str(ids["prose"]))
    assert rc == 0, out
    assert "I would fuse the ops, but here is no code." in out
    assert out.count("no code: no code block in the reply") == 2  # the header's note and the code section
    assert "verdict" not in out


def test_json(run):
    d, ids = run
    rc, out = pike("show", str(d), "--json", "--task", "alpha", "--role", "coa")
    assert rc == 0, out
    doc = json.loads(out)
    assert [e["id"] for e in doc] == [ids["prose"], ids["reask"]]
    prose, reask = doc
    assert prose["unusable"] == "no code block in the reply" and prose["candidate"] is None and prose["reasked_by"] == ids["reask"]
    assert reask["candidate"]["status"] == "mismatch" and "# bad" in reask["candidate"]["code"]
    assert reask["prompt"][1] == {"role": "user", "content": "Optimise alpha (reply with one ```python block)"}
    rc, out = pike("show", str(d), "--json", "--exchange", str(ids["beta"]))
    one = json.loads(out)
    assert one["task"] == "beta" and BREAKOUT in one["response"] and one["candidate"]["speedup"] == pytest.approx(2.0)
    assert one["input_tokens"] == 100 and one["cost_usd"] == pytest.approx(0.01) and one["latency_s"] == pytest.approx(1.5)


def test_errors_are_one_line(run, tmp_path):
    d, ids = run
    cases = [
        ([str(tmp_path / "nowhere")], "no such directory"),
        ([str(tmp_path)], "not a run directory (no run.db)"),
        ([str(d), "--task", "gamma"], "no task gamma in"),
        ([str(d), "--exchange", "99"], f"no exchange 99 in {d} (ids {ids['iba']}-{ids['beta']})"),
        ([str(d), "--role", "coa,planner"], "unknown role planner: choose from coa, efa, iba"),
        ([str(d), "--exchange", str(ids["beta"]), "--task", "alpha"], f"exchange {ids['beta']} is not among those --task/--role select"),
    ]
    for args, msg in cases:
        rc, out = pike("show", *args)
        assert rc == 2, (args, out)
        assert msg in out and out.startswith("error:") and "Traceback" not in out, (args, out)
    rc, out = pike("show", str(d), "--task", "gamma")
    assert "its tasks: alpha, beta" in out
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "run.db").write_text("not a database")
    rc, out = pike("show", str(tmp_path / "junk"))
    assert rc == 2 and "cannot read the run's store" in out and "Traceback" not in out
    rc, out = pike("--debug", "show", str(tmp_path / "junk"))
    assert rc == 2 and "Traceback" in out


def test_reading_writes_nothing(run):
    d, ids = run
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir()}
    for args in ([], ["--exchange", str(ids["fix"])], ["--json"]):
        assert pike("show", str(d), *args)[0] == 0
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir()} == before


def test_live_run_is_readable(tmp_path):
    """While a search holds the store open (its WAL file exists), a new exchange is seen at once."""
    d = tmp_path / "live"
    ids = make_run(d)
    store = Store(d / "run.db")
    try:
        new = _exchange(store, store.task_id("beta"), "coa", "Optimise beta again", "thinking", branch=2)
        assert (d / "run.db-wal").exists()
        rc, out = pike("show", str(d), "--json")
        assert rc == 0 and [e["id"] for e in json.loads(out)][-2:] == [ids["beta"], new]
    finally:
        store.close()


def test_command_line_process(run):
    """The installed entry point, as a user runs it."""
    d, ids = run
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-m", "pike", "show", str(d), "--role", "efa"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "1 of 5 exchanges" in p.stdout and f"fixes #{ids['bad']}" in p.stdout
    p = subprocess.run([sys.executable, "-m", "pike", "show", str(d), "--role", "x"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == ["error: unknown role x: choose from coa, efa, iba"]


class _Page(HTMLParser):
    """The page as a browser parses it: scripts' contents, exchange rows, text inside <pre>."""

    def __init__(self):
        super().__init__()
        self.scripts: list[str] = []
        self.rows: list[dict] = []
        self.pres: list[str] = []
        self.ids: set[str] = set()
        self.options: dict[str, list[str]] = {}
        self.roles: list[str] = []
        self._in: str | None = None
        self._select: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "script":
            self._in, _ = "script", self.scripts.append("")
        elif tag == "pre":
            self._in, _ = "pre", self.pres.append("")
        elif tag == "details" and "ex" in a.get("class", "").split():
            self.rows.append(a)
        elif tag == "select":
            self._select = a.get("id") or "col:" + a["data-col"]  # the candidates table's filters: data-col
            self.options[self._select] = []
        elif tag == "option" and self._select:
            self.options[self._select].append(a["value"])
        elif tag == "input" and "ex-role" in a.get("class", ""):
            self.roles.append(a["value"])

    def handle_endtag(self, tag):
        if tag in ("script", "pre"):
            self._in = None
        elif tag == "select":
            self._select = None

    def handle_data(self, data):
        if self._in == "script":
            self.scripts[-1] += data
        elif self._in == "pre":
            self.pres[-1] += data


def test_html_lists_every_exchange_escaped(run, tmp_path):
    d, ids = run
    html = tmp_path / "report.html"
    rc, out = pike("report", str(d), "--html", str(html))
    assert rc == 0, out
    text = html.read_text()
    page = _Page()
    page.feed(text)
    rows = {r["data-task"] + "/" + r["data-role"] for r in page.rows}
    assert len(page.rows) == 5 and rows == {"alpha/iba", "alpha/coa", "alpha/efa", "beta/coa"}
    assert {"exchanges", "ex-run", "ex-task", "ex-count"} <= page.ids
    assert page.options["ex-task"] == ["", "alpha", "beta"] and sorted(page.roles) == ["coa", "efa", "iba"]
    # two inline scripts, ours (exchanges, candidate tables): the reply's </script><script> stays text inside a <pre>
    assert len(page.scripts) == 2 and not any("alert" in s for s in page.scripts) and "rows.forEach" in page.scripts[0]
    assert page.options["col:task"] == ["", "alpha", "beta"]
    assert any(BREAKOUT in p for p in page.pres)
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert any("Brainstorm ideas for <em>alpha</em>" in p for p in page.pres) and "<em>alpha</em>" not in text
    assert any("I would fuse the ops, but here is no code." in p for p in page.pres)
    assert "no code: no code block in the reply" in text and "mismatch: max abs error 0.5 &gt; 1e-4" in text
    assert any("torch.relu(x).mul(2)  # fixed" in p for p in page.pres) and "ok: correct · runtime 2.000 ms · 4.00x vs eager" in text
    assert "<script src" not in text and "<link" not in text


def test_run_overview_candidates_and_tree(run):
    """`pike show RUN`: every candidate with its status, figures and base; the lineage tree puts the
    fix under the candidate it repairs; then the exchanges."""
    d, ids = run
    rc, out = pike("show", str(d))
    assert rc == 0, out
    assert "alpha: 2 candidates" in out and "beta: 1 candidate (" in out
    assert f"#{ids['bad']}" in out and "mismatch" in out and "max abs error 0.5 > 1e-4" in out
    assert "4.00x" in out and "2.00x" in out  # 8/2 and 6/3, search timing
    tree = out[out.index("alpha: the task"):]
    lines = tree.splitlines()
    bad = next(i for i, line in enumerate(lines) if f"#{ids['bad']} coa" in line)
    fixed = next(i for i, line in enumerate(lines) if f"#{ids['fixed']} efa" in line)
    assert fixed == bad + 1 and lines[fixed].index("#") > lines[bad].index("#")  # one level deeper
    assert "5 of 5 exchanges" in out
    rc, out = pike("show", str(d), "--task", "beta")
    assert rc == 0 and "beta: 1 candidate (" in out and "alpha: 2 candidates (" not in out


def test_one_candidate_in_full(run):
    d, ids = run
    rc, out = pike("show", str(d), "--candidate", str(ids["fixed"]))
    assert rc == 0, out
    assert f"made from #{ids['bad']} (it fixes it)" in out
    assert f"--- #{ids['bad']} (coa)" in out and "-        return torch.relu(x).mul(2)  # bad" in out
    assert "+        return torch.relu(x).mul(2)  # fixed" in out
    rc, out = pike("show", str(d), "--candidate", str(ids["beta_sol"]), "--json")
    got = json.loads(out)
    assert rc == 0 and got["base"] is None and got["speedup"] == 2.0 and "--- beta (task source)" in got["diff"]
    rc, out = pike("show", str(d), "--candidate", "999")
    assert rc == 2 and "no candidate 999" in out
