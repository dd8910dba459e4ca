"""`snakemake --report` opened in a real browser (issue 20): headless Chromium shows the report's figures.

The report is built from the smoke scale's analytic figures (1, 5, 6: the workflow's own rules, seconds, no training;
the whole smoke DAG's report is checked for its content in test_workflow.py). The report is one page whose content a
script draws (React); a copy of it gets a script that does what a reader's clicks do (Results > Figures, then the
eye of fig1), and Chromium takes a screenshot and dumps the DOM it rendered.

Needs Chromium (Debian's `chromium`): `bash run.sh test` installs it as root through .ci/setup-chromium.sh. Without
it the test skips, except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("fig1", "fig5", "fig6")
SHOWN = "fig1"
WINDOW = (1400, 1000)
NAVBAR_PX = 330
"""The report's navigation bar on the left of the screenshot; the figure is drawn right of it."""
NAVIGATE = """<script>
window.addEventListener("load", function () {
  setTimeout(function () { app.showCategory("Figures"); }, 100);
  setTimeout(function () {
    var path = Object.keys(results).filter(function (p) { return p.endsWith("/%s.png"); })[0];
    app.setView({content: "img", contentPath: results[path].data_uri, resultPath: path});
  }, 400);
});
</script>"""
"""What clicking Results > Figures and the figure's eye button does (snakemake's report: app.js, category.js,
result_view_button.js)."""

pytestmark = [pytest.mark.chromium, pytest.mark.slow]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    message = "Chromium is not installed (as root: bash .ci/setup-chromium.sh, or bash run.sh test)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _snakemake(workdir: Path, *args: str) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--nolock", *args,
           "--config", "scale=smoke"]
    res = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]


def _browse(chromium: str, page: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on a local page, its scripts given 5 s (virtual time) before the snapshot."""
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=5000", *args, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_the_html_report_shows_its_figures_in_headless_chromium(tmp_path: Path):
    from PIL import Image

    chromium = _chromium()
    targets = [f"results/smoke/figures/{fig}.png" for fig in FIGURES]
    _snakemake(tmp_path, "--cores", "2", *targets)
    _snakemake(tmp_path, "--report", "report.html", *targets)
    html = (tmp_path / "report.html").read_text()
    end = html.rindex("</body>")
    page = tmp_path / "report-figure.html"
    page.write_text(html[:end] + NAVIGATE % SHOWN + html[end:])

    shot = tmp_path / "figure.png"
    res = _browse(chromium, page, f"--screenshot={shot}")
    assert shot.is_file(), res.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == WINDOW
    figure = image.crop((NAVBAR_PX, 0, *WINDOW))
    colours = figure.getcolors(1 << 24)
    ink = sum(n for n, colour in colours if colour != (255, 255, 255)) / (figure.width * figure.height)
    # A blank or unrendered page has a handful of colours; the report's landing page (its rule graph) ~600 and 2%
    # ink; Figure 1 as the report shows it ~3,000 and 18%.
    assert len(colours) > 1000 and ink > 0.05, (len(colours), ink)

    dom = _browse(chromium, page, "--dump-dom").stdout
    rendered = re.sub(r"<script\b.*?</script>", "", dom, flags=re.S)  # what the scripts drew, not their data
    assert re.search(rf'<img src="data:image/png;[^"]*filename={SHOWN}\.png;base64,', rendered)
    for fig in FIGURES:  # the Figures category lists each one
        assert re.search(rf">\s*{fig}\s*<", rendered), fig
