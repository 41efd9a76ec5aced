"""The HTML report in a real headless browser (Chromium): the page loads without a script error, the
candidate tables and lineage trees render, sorting and filtering work, and a link opens a candidate's
panel. Skipped where no Chromium is installed (``apt-get install chromium``, or set PIKE_CHROMIUM to
a Chrome/Chromium binary).

The page is loaded from a copy with two scripts added: one at the top of <head> that records every
error event, one at the end of <body> that exercises the page and writes what it saw into a <pre>;
``--dump-dom`` prints the document after the load event, from which the test reads that <pre>.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess

import pytest

from pike.report import to_html
from pike.report.build import load_report
from test_report import make_run


def chromium() -> str | None:
    for name in (os.environ.get("PIKE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


# 5 s per test with a warm disk cache, 15-20 s for Chromium's first start on two busy cores
pytestmark = pytest.mark.skipif(chromium() is None, reason="no Chromium installed (apt-get install chromium)")

RECORD = """<script>window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); });</script>"""

PROBE = """<script>(function () {
  var out = {};
  try {
    out.trees = Array.prototype.map.call(document.querySelectorAll("ul.tree"), function (t) { return t.getAttribute("data-task"); });
    out.treeLinks = document.querySelectorAll("ul.tree a[href^='#c0-']").length;
    var table = document.getElementById("cands-0");
    var rows = function () { return Array.prototype.slice.call(table.tBodies[0].rows); };
    out.rows = rows().length;
    var idHead = table.tHead.rows[0].cells[0];
    idHead.click(); idHead.click();
    out.idsAfterSort = rows().map(function (r) { return parseInt(r.cells[0].getAttribute("data-v"), 10); });
    var box = document.getElementById(table.getAttribute("data-filters"));
    var sel = box.querySelector("select[data-col='status']");
    sel.value = "ok";
    sel.dispatchEvent(new Event("change", { bubbles: true }));
    out.shownAfterFilter = rows().filter(function (r) { return !r.hidden; }).map(function (r) { return r.getAttribute("data-status"); });
    out.count = box.querySelector(".count").textContent;
    var first = rows()[0].getAttribute("data-target");
    out.panelBefore = getComputedStyle(document.getElementById(first)).display;
    location.hash = first;
    out.panelAfter = getComputedStyle(document.getElementById(first)).display;
    out.exchangeRows = document.querySelectorAll("#exchanges .ex").length;
    var links = Array.prototype.slice.call(document.querySelectorAll("#exchanges a[href^='#c0-']"));
    out.exchangeLinks = links.length;
    out.exchangeLinksResolved = links.filter(function (a) { return document.getElementById(a.hash.slice(1)); }).length;
  } catch (e) {
    window.__errors.push("probe: " + e);
  }
  out.errors = window.__errors;
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();</script>"""


def load_in_browser(page: str, tmp_path) -> tuple[dict, str]:
    probed = page.replace("<head>", "<head>" + RECORD, 1).replace("</body>", PROBE + "</body>", 1)
    path = tmp_path / "probed.html"
    path.write_text(probed)
    p = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
                        "--virtual-time-budget=3000", "--dump-dom", path.as_uri()],
                       capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="probe">(.*?)</pre>', p.stdout, re.S)
    assert m, f"the page did not finish loading (rc {p.returncode}): {p.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1))), p.stderr


def test_report_page_in_chromium(tmp_path):
    run_dir = tmp_path / "run"
    ids = make_run(run_dir)
    page = to_html.render(load_report([run_dir]))
    out, log = load_in_browser(page, tmp_path)
    assert out["errors"] == [], out["errors"]
    assert "Uncaught" not in log, log[-2000:]
    assert out["trees"] == ["fast", "broken", "offline", "slow"]
    every = sorted(i for task in ids.values() for i in task)
    assert out["treeLinks"] == len(every) and out["rows"] == len(every)
    assert out["idsAfterSort"] == every[::-1]  # two clicks on "id": descending
    assert out["shownAfterFilter"] and set(out["shownAfterFilter"]) == {"ok"}
    assert out["count"] == f"{len(out['shownAfterFilter'])} of {len(every)} shown"
    assert out["panelBefore"] == "none" and out["panelAfter"] == "block"
    assert out["exchangeRows"] == 12  # make_run's exchanges, the IBA included
    assert out["exchangeLinks"] == 11 and out["exchangeLinksResolved"] == 11  # each exchange's candidate has a panel


def test_probe_sees_a_script_error(tmp_path):
    """The check can fail: a page whose script throws is reported."""
    run_dir = tmp_path / "run"
    make_run(run_dir)
    page = to_html.render(load_report([run_dir])).replace("</body>", "<script>undefinedFunction();</script></body>", 1)
    out, _ = load_in_browser(page, tmp_path)
    assert any("undefinedFunction" in e for e in out["errors"])
