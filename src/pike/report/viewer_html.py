"""The report page's run viewer: every candidate in a table that sorts and filters, each task's lineage
as a tree to browse, and a panel per candidate with its verdict, its diff against the candidate it was
made from and its code.

Panels are shown with CSS ``:target`` (a link to ``#c<run>-<id>`` opens one), so the page works
without its script; the script only sorts and filters the tables. It holds no data (it reads the
cells' ``data-v`` attributes) and every text is HTML-escaped, so a candidate's code cannot end the
script or inject markup.
"""

from __future__ import annotations

from html import escape

from pike.report.candidates import CandidateRow, TaskCandidates

CSS = """
.cands td, .cands th { white-space: nowrap; }
.cands td.msg { white-space: normal; text-align: left; max-width: 28em; }
.cands td.l, .cands th.l { text-align: left; }
.cands th { cursor: pointer; user-select: none; }
.cands th[data-dir="asc"]::after { content: " \\25B2"; } .cands th[data-dir="desc"]::after { content: " \\25BC"; }
.cands tr[hidden] { display: none; }
.st-ok { color: #116611; } .st-pending { color: #777; } .st-bad { color: #aa1111; }
.tree, .tree ul { list-style: none; padding-left: 1.2em; margin: 0.1em 0; }
.tree { padding-left: 0; font-size: 0.9em; }
.tree li { margin: 0.1em 0; }
.tree summary { cursor: pointer; }
.tree .leaf { padding-left: 1.05em; }
.best { font-weight: bold; }
.cand { display: none; border: 1px solid #bbb; padding: 0.4em 1em; margin: 0.8em 0; background: #fcfcfc; }
.cand:target { display: block; }
.cand pre { max-height: 40em; }
.filters { margin: 0.5em 0; font-size: 0.9em; } .filters label { margin-right: 0.8em; }
"""

SCRIPT = """
(function () {
  function cellValue(row, i) {
    var c = row.cells[i];
    var v = c.getAttribute("data-v");
    return v === null ? c.textContent : v;
  }
  document.querySelectorAll("table.cands").forEach(function (table) {
    var body = table.tBodies[0];
    var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
    heads.forEach(function (th, i) {
      th.addEventListener("click", function () {
        var dir = th.getAttribute("data-dir") === "asc" ? "desc" : "asc";
        heads.forEach(function (h) { h.removeAttribute("data-dir"); });
        th.setAttribute("data-dir", dir);
        var numeric = th.getAttribute("data-num") === "1";
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = cellValue(a, i), y = cellValue(b, i), r;
          if (numeric) {
            x = x === "" ? Infinity : parseFloat(x); y = y === "" ? Infinity : parseFloat(y);
            r = x === y ? 0 : (x < y ? -1 : 1);
          } else {
            r = x.localeCompare(y);
          }
          return dir === "asc" ? r : -r;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
    var box = document.getElementById(table.getAttribute("data-filters"));
    if (!box) return;
    var count = box.querySelector(".count");
    function apply() {
      var text = box.querySelector(".f-text").value.toLowerCase();
      var sel = {};
      box.querySelectorAll("select").forEach(function (s) { sel[s.getAttribute("data-col")] = s.value; });
      var n = 0;
      Array.prototype.forEach.call(body.rows, function (r) {
        var show = !text || r.textContent.toLowerCase().indexOf(text) >= 0;
        Object.keys(sel).forEach(function (k) { if (sel[k] && r.getAttribute("data-" + k) !== sel[k]) show = false; });
        r.hidden = !show;
        if (show) n++;
      });
      count.textContent = n + " of " + body.rows.length + " shown";
    }
    box.addEventListener("input", apply);
    box.addEventListener("change", apply);
    apply();
  });
  document.querySelectorAll("table.cands tbody tr").forEach(function (r) {
    r.addEventListener("click", function (ev) {
      if (ev.target.tagName !== "A") location.hash = r.getAttribute("data-target");
    });
  });
})();
"""

COLUMNS = [  # (heading, numeric, left-aligned)
    ("id", True, False), ("task", False, True), ("origin", False, True), ("from", True, False),
    ("status", False, True), ("ms", True, False), ("± IQR/2", True, False), ("vs eager", True, False),
    ("beside eager [95%]", True, False),
    ("tags", False, True), ("idea", False, True), ("message", False, True), ("at s", True, False),
]


def anchor(run: int, cid: int) -> str:
    return f"c{run}-{cid}"


def _status_class(status: str) -> str:
    return "st-ok" if status == "ok" else "st-pending" if status == "pending" else "st-bad"


def _num(v) -> str:
    return "" if v is None else repr(float(v))


def _row(run: int, c: CandidateRow, best: bool) -> str:
    cells = [
        (f'<a href="#{anchor(run, c.id)}">#{c.id}</a>' + (" ★" if best else ""), _num(c.id)),
        (escape(c.task), None), (escape(c.origin), None),
        ("task" if c.base is None else f'<a href="#{anchor(run, c.base)}">#{c.base}</a>', _num(c.base if c.base is not None else 0)),
        (f'<span class="{_status_class(c.status)}">{escape(c.status)}</span>', None),
        (f"{c.runtime_ms:.4f}" if c.runtime_ms is not None else "-", _num(c.runtime_ms)),
        (f"{c.iqr_ms / 2:.4f}" if c.iqr_ms is not None else "-", _num(c.iqr_ms)),
        (escape(c.speedup_text()), _num(c.speedup)),
        (escape(c.interval_text()), _num(c.interval[0] if c.interval else None)),
        (escape(", ".join(c.tags)), None), (escape(c.idea or ""), None), (escape(c.message), None),
        (f"{c.evaluated_s:.0f}" if c.evaluated_s is not None else "-", _num(c.evaluated_s)),
    ]
    tds = []
    for (html, v), (head, _, left) in zip(cells, COLUMNS):
        cls = ' class="msg"' if head == "message" else ' class="l"' if left else ""
        tds.append(f"<td{cls}" + (f' data-v="{v}"' if v is not None else "") + f">{html}</td>")
    return (f'<tr data-target="{anchor(run, c.id)}" data-task="{escape(c.task)}" data-status="{escape(c.status)}" '
            f'data-origin="{escape(c.origin)}">' + "".join(tds) + "</tr>")


def _select(col: str, label: str, values: list[str]) -> str:
    opts = "".join(f'<option value="{escape(v)}">{escape(v)}</option>' for v in values)
    return f'<label>{escape(label)} <select data-col="{col}"><option value="">all</option>{opts}</select></label>'


def candidates_table(run: int, tasks: list[TaskCandidates]) -> str:
    rows = [c for t in tasks for c in t.rows]
    if not rows:
        return "<p>No candidates.</p>"
    best = {t.best_id for t in tasks}
    box = f"filters-{run}"
    filters = [f'<label>contains <input class="f-text" type="search" size="20"></label>',
               _select("task", "task", [t.name for t in tasks]),
               _select("status", "status", sorted({c.status for c in rows})),
               _select("origin", "origin", sorted({c.origin for c in rows})), '<span class="count note"></span>']
    head = "".join(f'<th data-num="{1 if num else 0}"' + (' class="l"' if left else "") + f">{escape(h)}</th>"
                   for h, num, left in COLUMNS)
    return (f'<div class="filters" id="{box}">{" ".join(filters)}</div>'
            f'<table class="cands" id="cands-{run}" data-filters="{box}"><thead><tr>{head}</tr></thead><tbody>'
            + "".join(_row(run, c, c.id in best) for c in rows) + "</tbody></table>")


def _node_text(run: int, c: CandidateRow, best: bool) -> str:
    sp = f" {c.speedup:.2f}x" if c.speedup else ""
    idea = f" · {escape(c.idea)}" if c.idea else ""
    star = " ★ best" if best else ""
    return (f'<a href="#{anchor(run, c.id)}"{" class=best" if best else ""}>#{c.id} {escape(c.origin)}</a> '
            f'<span class="{_status_class(c.status)}">{escape(c.status)}{sp}</span>{idea}{star}')


def _subtree(run: int, c: CandidateRow, ids: dict[int, CandidateRow], best: int | None, on_path: set[int]) -> str:
    kids = [ids[k] for k in c.children if k in ids]
    text = _node_text(run, c, c.id == best)
    if not kids:
        return f'<li class="leaf">{text}</li>'
    inner = "".join(_subtree(run, k, ids, best, on_path) for k in kids)
    return f'<li><details{" open" if c.id in on_path else ""}><summary>{text}</summary><ul>{inner}</ul></details></li>'


def _path_to(best: int | None, ids: dict[int, CandidateRow]) -> set[int]:
    out, cur = set(), ids.get(best) if best is not None else None
    while cur is not None and cur.id not in out:
        out.add(cur.id)
        cur = ids.get(cur.base) if cur.base is not None else None
    return out


def lineage_tree(run: int, t: TaskCandidates) -> str:
    """The task's source at the root, each candidate under the one it was made from; the path to the
    best is open."""
    ids = t.by_id()
    on_path = _path_to(t.best_id, ids)
    inner = "".join(_subtree(run, c, ids, t.best_id, on_path) for c in t.roots())
    n = len(t.rows)
    return (f'<ul class="tree" data-task="{escape(t.name)}"><li><details open><summary><b>{escape(t.name)}</b>: the task '
            f'({n} candidate{"s" if n != 1 else ""})</summary><ul>{inner}</ul></details></li></ul>')


def panel(run: int, c: CandidateRow, pre, diff_pre) -> str:
    base = "the task's source" if c.base is None else f'<a href="#{anchor(run, c.base)}">#{c.base}</a>'
    kids = ", ".join(f'<a href="#{anchor(run, k)}">#{k}</a>' for k in c.children) or "none"
    facts = [f"{escape(c.origin)}" + (f" · idea: {escape(c.idea)}" if c.idea else ""),
             f"status <span class=\"{_status_class(c.status)}\">{escape(c.status)}</span>" + (f": {escape(c.message)}" if c.message else ""),
             f"time {escape(c.time_text())} ms · vs eager {escape(c.speedup_text())} (search)"
             + (f" · re-timed beside eager {escape(c.interval_text())}" if c.interval else "")
             + (f" · tags {escape(', '.join(c.tags))}" if c.tags else ""),
             f"made from {base}" + (" (fixes it)" if c.fix_of is not None else "") + f" · led to {kids}"
             + (f" · phase/branch {c.phase if c.phase is not None else '-'}/{c.branch if c.branch is not None else '-'}")]
    what = "the task's source" if c.base is None else f"#{c.base}"
    return (f'<section class="cand" id="{anchor(run, c.id)}"><h4>Candidate #{c.id} ({escape(c.task)})</h4>'
            + "".join(f"<p>{f}</p>" for f in facts)
            + f"<details open><summary>diff against {escape(what)}</summary>{diff_pre(c.diff) if c.diff else '<p>identical</p>'}</details>"
            + f"<details><summary>code</summary>{pre(c.code)}</details></section>")
