"""The report page in a real headless browser (Debian's chromium): it loads from disk with no
network, raises no error, draws every chart, sorts its matrix, and a screenshot of it is
not blank. Skipped, with the reason, where chromium is not installed; CI installs it
(.ci/run), and under CI a missing chromium is a failure, not a skip."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_fixtures import QUIET, statuses

from gpubench.baseline.offline import judge_runs
from gpubench.baseline.rules import GateRules
from gpubench.baseline.sources import load_histories
from gpubench.report.document import ReportData
from gpubench.report.projection import ProjectionInputs
from gpubench.report.write import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("CI must run the browser test: .ci/run installs chromium with apt")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed here (apt-get install -y chromium)"
)

# Injected into a copy of the page: records every error and console.error before the page's
# own script runs, then, once loaded, opens every <details>, measures every chart, sorts the
# matrix by tokens/s, and writes what it found into the DOM, which --dump-dom prints.
PROBE_HEAD = """<script>
window.__errors = [];
addEventListener("error", function (e) { __errors.push("error: " + e.message); }, true);
addEventListener("unhandledrejection", function (e) { __errors.push("rejection: " + e.reason); });
var __consoleError = console.error;
console.error = function () { __errors.push("console: " + Array.from(arguments).join(" ")); };
</script>"""
PROBE_END = """<script>
addEventListener("load", function () {
  document.querySelectorAll("details").forEach(function (d) { d.open = true; });
  var charts = Array.from(document.querySelectorAll("figure.chart")).map(function (f) {
    var svg = f.querySelector("svg");
    var box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    return {name: f.dataset.chart, width: box.width, height: box.height,
            marks: svg ? svg.querySelectorAll("path, use, rect, polyline").length : 0};
  });
  var table = document.querySelector("#matrix table");
  var heads = Array.from(table.tHead.rows[0].cells);
  var col = heads.findIndex(function (th) { return th.textContent === "tokens/s"; });
  heads[col].click();
  var sorted = Array.from(table.tBodies[0].rows).map(function (tr) {
    return tr.cells[col].dataset.sort;
  });
  var probe = document.createElement("pre");
  probe.id = "gpubench-probe";
  probe.textContent = JSON.stringify({errors: __errors, charts: charts, sorted: sorted});
  document.body.appendChild(probe);
});
</script>"""


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # no network: a page that needs it breaks
            f"--user-data-dir={tmp / 'profile'}",
            "--virtual-time-budget=10000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every status, three profiles, a baseline comparison and projections: every section."""
    tmp = tmp_path_factory.mktemp("browser")
    histories = load_histories(QUIET[2])
    results = statuses()
    new = load_histories(QUIET[3])
    verdicts = judge_runs(histories, new, GateRules(confirm=0))
    data = ReportData(
        results=[*results, *(r for runs in new.values() for r in runs)],
        verdicts=verdicts,
        histories=histories,
        projection=ProjectionInputs(train_tokens=1e9, max_hours=72),
    )
    html = tmp / "report.html"
    write_report(data, html)
    return html


def test_the_page_needs_nothing_from_the_network(page: Path) -> None:
    text = page.read_text()
    assert not re.search(r"<(link|img|iframe|object|embed)\b", text)
    assert not re.search(r"\bsrc\s*=", text) and "@import" not in text
    # the only references are to the page itself: anchors, and the SVGs' clip paths
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', text))
    assert all(u.startswith("#") for u in re.findall(r"url\(([^)]*)\)", text))


def test_in_chromium_no_error_every_chart_drawn_and_the_matrix_sorts(
    page: Path, tmp_path: Path
) -> None:
    text = page.read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(
        text.replace("<head>", "<head>" + PROBE_HEAD, 1).replace("</body>", PROBE_END + "</body>")
    )
    done = chromium(tmp_path, "--dump-dom", probed.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    match = re.search(r'<pre id="gpubench-probe">(.*?)</pre>', done.stdout, re.S)
    assert match, done.stdout[-2000:] + done.stderr[-2000:]
    probe = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["errors"] == []
    charts = probe["charts"]
    assert len(charts) == text.count('<figure class="chart"') > 3
    blank = [c for c in charts if c["width"] < 50 or c["height"] < 30 or c["marks"] < 3]
    assert not blank
    values = [float(v) if v else float("-inf") for v in probe["sorted"]]
    assert values == sorted(values) and len(set(values)) > 2


def test_a_screenshot_of_the_page_is_not_blank(page: Path, tmp_path: Path) -> None:
    from PIL import Image, ImageStat

    shot = tmp_path / "shot.png"
    done = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 1600)
    dark = sum(image.histogram()[:200]) / (1280 * 1600)
    assert dark > 0.01  # text, tables and badges drawn, not a white page
    assert ImageStat.Stat(image).stddev[0] > 10
