"""The report page's list of LLM exchanges: one row per exchange, expandable (``<details>``) to its
prompt, reply, code and verdict, filtered by run, task and role with a small inline script. Every
text is HTML-escaped and the script holds no data (it reads the rows' ``data-`` attributes), so a
reply cannot end the script or inject markup."""

from __future__ import annotations

from html import escape

from pike.report.data import RunData
from pike.report.exchanges import Exchange, load
from pike.report.viewer_html import anchor

CSS = """
.ex { border-bottom: 1px solid #e4e4e4; }
.ex[hidden] { display: none; }
.ex summary, .exhead { display: grid; grid-template-columns: 3.5em 9em 3em 5em 4.5em 9em 5em 8em 5em 5em 1fr;
  gap: 0 8px; font-size: 0.85em; padding: 2px 4px; cursor: pointer; }
.exhead { font-weight: bold; background: #f2f2f2; cursor: default; }
.ex summary span { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.ex .body { padding: 0 1em 0.6em; }
.ex .body pre { max-height: 30em; white-space: pre-wrap; }
.exfilter { margin: 0.5em 0; font-size: 0.9em; }
.exfilter label { margin-right: 0.8em; }
.warn { color: #aa6600; }
"""

HEAD = ["id", "task", "role", "phase/branch", "status", "candidate", "speedup", "tokens in/out", "cost $", "latency s", "note"]

SCRIPT = """
(function () {
  var sec = document.getElementById("exchanges");
  var rows = Array.prototype.slice.call(sec.querySelectorAll(".ex"));
  var count = document.getElementById("ex-count");
  function apply() {
    var run = document.getElementById("ex-run").value, task = document.getElementById("ex-task").value;
    var roles = Array.prototype.slice.call(sec.querySelectorAll(".ex-role:checked")).map(function (c) { return c.value; });
    var n = 0;
    rows.forEach(function (r) {
      var show = (!run || r.dataset.run === run) && (!task || r.dataset.task === task) && roles.indexOf(r.dataset.role) >= 0;
      r.hidden = !show;
      if (show) n++;
    });
    count.textContent = n + " of " + rows.length + " shown";
  }
  sec.addEventListener("change", apply);
  apply();
})();
"""


def _pre(label: str, text: str | None) -> str:
    return f"<h5>{escape(label)}</h5><pre>{escape(text) if text else '(empty)'}</pre>"


def _verdict(e: Exchange, run: int) -> str:
    c = e.candidate
    if c is None:
        return f'<p class="warn">no code: {escape(e.unusable)}</p>' if e.unusable else "<p>No candidate from this exchange.</p>"
    link = f'<p><a href="#{anchor(run, c.id)}">candidate #{c.id}: its place in the lineage and its diff</a></p>'
    return _pre(f"code: candidate #{c.id} ({c.origin})", c.code) + f"<h5>verdict</h5><p>{escape(c.verdict())}</p>" + link


def _row(run: str, e: Exchange, index: int) -> str:
    """``run``: the run's label (for the filter); ``index``: its place in the report (for links)."""
    cells = [f"#{e.id}", e.task or "-", e.role, e.where(), e.status, e.verdict(), e.speedup(),
             f"{e.input_tokens}/{e.output_tokens}", f"{e.cost_usd:.4f}",
             f"{e.latency_s:.1f}" if e.latency_s is not None else "", e.note()]
    summary = "".join(f'<span title="{escape(c)}">{escape(c)}</span>' for c in cells)
    meta = (f"model {e.model} · tokens {e.input_tokens} in / {e.output_tokens} out · ${e.cost_usd:.4f} · "
            f"attempts {e.attempts if e.attempts is not None else '-'}")
    body = [f"<p class=\"note\">{escape(meta)}</p>"]
    body += [_pre(f"prompt: {m.get('role', '?')}", str(m.get("content", ""))) for m in e.prompt]
    body += [_pre("reply", e.response), _verdict(e, index)]
    return (f'<details class="ex" data-run="{escape(run)}" data-task="{escape(e.task or "")}" data-role="{escape(e.role)}">'
            f"<summary>{summary}</summary><div class=\"body\">{''.join(body)}</div></details>")


def _select(id_: str, label: str, values: list[str]) -> str:
    opts = "".join(f'<option value="{escape(v)}">{escape(v)}</option>' for v in values)
    return f'<label>{escape(label)} <select id="{id_}"><option value="">all</option>{opts}</select></label>'


def section(runs: list[RunData]) -> str:
    """The page's "LLM exchanges" section ('' where no run asked an LLM anything)."""
    loaded = [(r.label or r.name, load(r.path)) for r in runs]
    if not any(ex for _, (_, ex) in loaded):
        return ""
    tasks = sorted({e.task for _, (_, ex) in loaded for e in ex if e.task})
    roles = sorted({e.role for _, (_, ex) in loaded for e in ex})
    run_select = _select("ex-run", "run", [label for label, _ in loaded])
    controls = [run_select if len(loaded) > 1 else '<input type="hidden" id="ex-run" value="">',
                _select("ex-task", "task", tasks)]
    controls += [f'<label><input type="checkbox" class="ex-role" value="{escape(r)}" checked> {escape(r)}</label>' for r in roles]
    p = ['<section id="exchanges"><h2>LLM exchanges</h2>',
         '<p class="note">Every exchange with the model: what it was sent, what it replied, the code taken from the reply '
         "and that candidate's verdict (search timing). Click a row to open it.</p>",
         f'<div class="exfilter">{" ".join(controls)} <span id="ex-count" class="note"></span></div>',
         '<div class="exhead">' + "".join(f"<span>{escape(h)}</span>" for h in HEAD) + "</div>"]
    p += [_row(label, e, i) for i, (label, (_, ex)) in enumerate(loaded) for e in ex]
    p += ["</section>", f"<script>{SCRIPT}</script>"]
    return "\n".join(p)
