"""The analysis notebooks on a fresh clone (issue 20): a `git clone` of this repository's HEAD, the notebooks executed
there by analysis/notebooks.py against committed-style results (an exported study under results/<scale>/study), with
no work/ folder and no training."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.export import export_study
from analysis.fake_study import write_fake_study

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = Path("results/mini/study/study.json")
"""The export the notebooks open by default (analysis/notebook_study.py; tested there)."""


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A clone of the repository's HEAD (what is committed, not the working tree)."""
    try:
        head = _git("rev-parse", "HEAD", cwd=ROOT)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    dest = tmp_path_factory.mktemp("clone") / "repo"
    _git("clone", "--quiet", "--no-checkout", str(ROOT), str(dest), cwd=ROOT)
    _git("checkout", "--quiet", "--detach", head, cwd=dest)
    return dest


def _run_notebooks(clone: Path, out: Path, *study: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOCAL_")}
    env["PYTHONPATH"] = str(clone)  # the clone's analysis/ and retinanet/, not this checkout's
    return subprocess.run([sys.executable, "-m", "analysis.notebooks", *study, "--out-dir", str(out)], cwd=clone,
                          env=env, capture_output=True, text=True, timeout=600)


def _outputs(path: Path) -> tuple[str, int, list]:
    """A notebook's outputs: their text, the number of figures (image/png) and the errors."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") + "".join(str(v) for k, v in o.get("data", {}).items() if k != "image/png")
                   for o in outputs)
    return text, sum("image/png" in o.get("data", {}) for o in outputs), [o for o in outputs if o.output_type ==
                                                                         "error"]


def _check(out: Path) -> None:
    text, figures, errors = _outputs(out / "explore.ipynb")
    assert not errors and figures == 6, (figures, errors)  # figures 1, 5, 6, 4, 7, 2
    assert "verdict" in text and "<table" in text  # the claims with their verdicts
    for table in ("1a", "1b", "1c", "1d", "1e", "2", "3", "5.1"):
        assert f"Table {table}" in text, table
    text, figures, errors = _outputs(out / "training_curves.ipynb")
    assert not errors and figures >= 2 and "runs with a training log" in text and "final_loss" in text


@pytest.mark.slow
def test_notebooks_run_on_a_fresh_clone_against_an_exported_study(clone, tmp_path):
    """A smoke-like fake study exported into the clone's results/smoke/study; its figures are not there, so the
    notebooks draw them from the export (Figure 4 from its CDF summary)."""
    work = write_fake_study(tmp_path / "work", seeds=(0, 1), scale="smoke")  # outside the clone: no work/ there
    export_study(work, clone / "results" / "smoke" / "study")
    res = _run_notebooks(clone, tmp_path / "out", "--study", "results/smoke/study/study.json")
    assert res.returncode == 0, res.stderr[-3000:]
    _check(tmp_path / "out")
    assert not (clone / "work").exists()
    assert _git("status", "--porcelain", cwd=clone).splitlines() == ["?? results/smoke/"]  # nothing else written


@pytest.mark.slow
def test_notebooks_run_on_a_fresh_clone_against_the_committed_results(clone, tmp_path):
    """The default: results/mini/study as committed, with its figures."""
    if not (clone / COMMITTED).is_file():
        pytest.skip(f"{COMMITTED} is not committed yet: the next mini study run exports it")
    res = _run_notebooks(clone, tmp_path / "out")
    assert res.returncode == 0, res.stderr[-3000:]
    _check(tmp_path / "out")


@pytest.mark.slow
def test_without_a_committed_export_the_notebooks_stop_saying_how_to_get_one(clone, tmp_path):
    if (clone / COMMITTED).is_file():
        pytest.skip(f"{COMMITTED} is committed")
    res = _run_notebooks(clone, tmp_path / "out", "analysis/explore.ipynb")
    assert res.returncode == 2
    assert f"cell 1 failed against the default study: AnalysisInputError: {COMMITTED}: no exported study yet" \
        in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "out").exists()
