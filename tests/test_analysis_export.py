"""The export of a study to results/<scale>/study (analysis/export.py), Figure 4's summary (analysis/fig4_summary.py)
and the study the notebooks open (analysis/notebook_study.py), on the fake study (no training)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from analysis import export
from analysis.claims import evaluate_claims, load_evidence
from analysis.errors import AnalysisInputError
from analysis.fake_study import write_fake_study
from analysis.fig4_summary import load_summary, summarize, summary_json
from analysis.notebook_study import default_manifest, open_study
from analysis.paper_values import load_paper_values
from analysis.study_io import LossSamples, load_study
from analysis.tables import TABLE_IDS, build_table, to_markdown

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """(the fake study's manifest, its export's manifest)."""
    root = tmp_path_factory.mktemp("export")
    manifest = write_fake_study(root / "work", seeds=(0, 1), scale="smoke")
    path, _, _ = export.export_study(manifest, root / "results" / "smoke" / "study")
    return manifest, path


def _strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def test_export_holds_the_runs_small_files_and_no_samples(exported):
    manifest, path = exported
    folder = path.parent
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert "study.json" in files and "fig4_cdf.json" in files
    kept = {"metrics.json", "timing.json", "result.json", "provenance.json", "log.jsonl"}
    assert {Path(f).name for f in files if f.startswith("runs/")} == kept
    assert not [f for f in files if f.endswith((".npz", ".pt", ".pth"))]
    data = json.loads(path.read_text())
    assert data["export"] == {"source": manifest.as_posix(), "files": len(files)}
    assert "samples" not in data["figures"]["fig4"] and data["figures"]["fig4"]["summary"] == "fig4_cdf.json"
    paths = [s for s in _strings(data) if s.endswith((".json", ".jsonl"))]
    source = data["export"]["source"]
    assert paths and all(not s.startswith("/") and (folder / s).is_file() for s in paths if s != source)
    for rid, run in data["runs"].items():  # each run folder with its training log
        assert run["dir"] == f"runs/{rid}" and (folder / run["dir"] / "log.jsonl").stat().st_size > 0
    sizes = [(folder / f).stat().st_size for f in files]
    assert max(sizes) < 100_000 and sum(sizes) < 400_000, (max(sizes), sum(sizes))  # 124 fake runs: ~290 KB


def test_the_export_gives_the_same_tables_claims_and_verdicts(exported):
    manifest, path = exported
    original, copy = load_study(manifest), load_study(path)
    assert copy.exported and not original.exported
    paper = load_paper_values()
    for tid in TABLE_IDS:
        assert to_markdown(paper.tables[tid], build_table(paper.tables[tid], copy), "smoke") == \
            to_markdown(paper.tables[tid], build_table(paper.tables[tid], original), "smoke"), tid
    ours = [(c.id, c.ours, c.verdict, c.tests) for c in evaluate_claims(load_evidence(original))]
    assert [(c.id, c.ours, c.verdict, c.tests) for c in evaluate_claims(load_evidence(copy))] == ours
    assert "negatives" in dict((c[0], c[1]) for c in ours)["C8"]  # C8 computed, from the summary in the export


def test_fig4_summary_keeps_c8_exact_and_the_curves_to_five_decimals(tmp_path):
    rng = np.random.default_rng(1)
    samples = LossSamples(pos=rng.normal(0.5, 1.0, 2000), neg=rng.normal(-5.0, 1.5, 30000),
                          meta={"num_images": 7, "num_neg_total": 90000})
    (tmp_path / "s.json").write_text(json.dumps(summary_json(summarize(samples))))
    summary = load_summary(tmp_path / "s.json")
    assert summary.half_loss_fractions() == samples.half_loss_fractions()
    assert summary.hardest_shares() == samples.hardest_shares()
    assert summary.describe() == samples.describe() == \
        "2,000 positive and 30,000 negative samples (a uniform subsample of 90,000) from 7 images"
    exact, kept = samples.cdf_curves(), summary.cdf_curves()
    np.testing.assert_array_equal(kept["x"], exact["x"])
    for s in ("pos", "neg"):
        for gamma, curve in exact[s].items():
            np.testing.assert_allclose(kept[s][gamma], curve, atol=5e-6)


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.update(format=2), "format"),
    (lambda d: d.update(gammas=[0, 1]), "export the study again"),
    (lambda d: d.update(num_pos=0), "num_pos"),
    (lambda d: d["neg"]["cdf"][1].pop(), "neg.cdf[1]"),
    (lambda d: d["pos"].update(hardest_share=[0.5, "x", 0.5, 0.5]), "pos.hardest_share"),
])
def test_a_bad_summary_names_the_file_and_field(exported, tmp_path, edit, field):
    data = json.loads((exported[1].parent / "fig4_cdf.json").read_text())
    edit(data)
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(AnalysisInputError, match=rf"bad\.json: .*{re.escape(field)}"):
        load_summary(tmp_path / "bad.json")


def _break(work: Path, what: str) -> str:
    """Damage one input of the fake study at ``work``; return the file the error must name."""
    run = work / "runs" / "fake-3-loss=FL,gamma=2-s0"
    if what == "metrics":
        (run / "metrics.json").write_text("{not json")
        return "metrics.json"
    if what == "provenance":
        (run / "provenance.json").unlink()
        return "provenance.json"
    if what == "log":
        (run / "log.jsonl").write_text("")
        return "log.jsonl"
    if what == "samples":
        (work / "fig4_samples.npz").unlink()
        return "fig4_samples.npz"
    raise ValueError(what)


@pytest.mark.parametrize("what", ["metrics", "provenance", "log", "samples"])
def test_bad_input_stops_the_export_naming_the_file_and_keeps_the_previous_export(tmp_path, what):
    manifest = write_fake_study(tmp_path / "work", seeds=(0,), scale="smoke")
    out = tmp_path / "results" / "study"
    path, _, _ = export.export_study(manifest, out)
    before = path.read_text()
    name = _break(tmp_path / "work", what)
    assert export.main(["--study", str(manifest), "--out", str(out)]) == 2
    with pytest.raises(AnalysisInputError, match=name):
        export.export_study(manifest, out)
    assert path.read_text() == before  # the previous export, whole
    assert sorted(p.name for p in out.parent.iterdir()) == ["study"]  # no temporary folder left behind


def test_a_new_export_replaces_the_previous_one_whole(tmp_path):
    manifest = write_fake_study(tmp_path / "work", seeds=(0,), scale="smoke")
    out = tmp_path / "results" / "study"
    export.export_study(manifest, out)
    (out / "stale.json").write_text("{}")
    export.export_study(manifest, out)
    assert not (out / "stale.json").exists() and sorted(p.name for p in out.parent.iterdir()) == ["study"]


def test_export_refuses_files_outside_the_study_folder_and_an_export(tmp_path):
    manifest = write_fake_study(tmp_path / "work", seeds=(0,), scale="smoke")
    data = json.loads(manifest.read_text())
    outside = tmp_path / "elsewhere" / "metrics.json"
    outside.parent.mkdir()
    shutil.copy(data["tables"]["3"][0]["metrics"]["0"], outside)
    data["tables"]["3"][0]["metrics"]["0"] = str(outside)
    manifest.write_text(json.dumps(data))
    with pytest.raises(AnalysisInputError, match=r"tables\.3\[0\]\.metrics\.0 = .* outside the study's folder"):
        export.export_study(manifest, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    fresh = write_fake_study(tmp_path / "work2", seeds=(0,), scale="smoke")
    path, _, _ = export.export_study(fresh, tmp_path / "out")
    with pytest.raises(AnalysisInputError, match="already an exported study"):
        export.export_study(path, tmp_path / "out2")


def test_the_notebooks_open_the_default_export_or_the_named_study(exported, tmp_path):
    manifest, path = exported
    assert default_manifest() == Path("results/mini/study/study.json")
    assert default_manifest(ROOT) == ROOT / "results/mini/study/study.json"
    shutil.copytree(ROOT / "config", tmp_path / "config")  # a checkout without an export: says how to get one
    with pytest.raises(AnalysisInputError, match=r"results/mini/study/study\.json: no exported study yet.*FOCAL_STUDY"):
        open_study({}, root=tmp_path)
    study, results = open_study({"FOCAL_STUDY": str(path)})
    assert study.exported and results == path.parent.parent
    study, results = open_study({"FOCAL_STUDY": str(manifest), "FOCAL_RESULTS": "elsewhere"})
    assert not study.exported and results == Path("elsewhere")
    assert open_study({"FOCAL_STUDY": str(manifest)})[1] == Path("results/smoke")
