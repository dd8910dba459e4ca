"""Table generation (analysis/tables.py) from fixture run outputs: exact means, stds, deltas, 1b winners,
diverged runs, and the CLI's errors for missing or malformed inputs."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest

from analysis import tables
from analysis.paper_values import load_paper_values
from analysis.study_io import load_study

PV = load_paper_values()


def _metrics(path: Path, ap: float | None, status: str = "completed") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    data = {c: (0.0 if ap is None else ap + i) for i, c in enumerate(cols)}
    data["APs"] = None  # no small objects: COCOeval's -1
    path.write_text(json.dumps({**data, "status": status, "num_images": 4}))
    return str(path)


def _timing(path: Path, ms: float) -> str:
    path.write_text(json.dumps({"status": "completed", "ms_per_image_median": ms, "device": {"name": "cpu X"}}))
    return str(path)


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    r = tmp_path / "runs"
    study = {
        "scale": "mini", "seeds": [0, 1],
        "tables": {
            "1a": [{"key": "alpha=0.75", "run": "ce75",
                    "metrics": {"0": _metrics(r / "ce75-s0.json", 10.0), "1": _metrics(r / "ce75-s1.json", 12.0)}},
                   {"key": "alpha=0.1", "run": "ce10",
                    "metrics": {"0": _metrics(r / "ce10-s0.json", None, "diverged"),
                                "1": _metrics(r / "ce10-s1.json", 1.0)}}],
            "1b": [{"key": "gamma=2", "candidates": [
                {"alpha": 0.25, "run": "a", "metrics": {"0": _metrics(r / "g2a25.json", 14.0)}},
                {"alpha": 0.5, "run": "b", "metrics": {"0": _metrics(r / "g2a50.json", 15.0)}}]}],
            "1e": [{"key": "depth=50,scale=400", "run": "e", "metrics": {"0": _metrics(r / "e.json", 8.0)},
                    "timing": {"0": _timing(r / "e-t.json", 12.5)}}],
            "5.1": [{"key": "init=zero", "run": "z", "metrics": {"0": _metrics(r / "z.json", None, "diverged")}}],
        },
    }
    path = tmp_path / "study.json"
    path.write_text(json.dumps(study))
    return path


def test_rows_mean_std_seeds_and_delta(study_file):
    rows = tables.build_table(PV.tables["1a"], load_study(study_file))
    by_key = {r.key: r for r in rows}
    assert [r.key for r in rows][:4] == ["alpha=0.1", "alpha=0.25", "alpha=0.5", "alpha=0.75"]  # paper order
    ap = by_key["alpha=0.75"].ours["AP"]
    assert ap.values == (10.0, 12.0) and ap.mean == 11.0 and ap.std == pytest.approx(math.sqrt(2))
    assert by_key["alpha=0.75"].ours["AP50"].mean == 12.0
    div = by_key["alpha=0.1"].ours["AP"]
    assert div.values == (0.0, 1.0) and div.diverged == (True, False)  # diverged counts as AP 0, marked
    assert "1/2 seeds diverged" in by_key["alpha=0.1"].note
    assert by_key["alpha=0.25"].ours == {} and "not run" in by_key["alpha=0.25"].note

    lines = list(csv.DictReader(io.StringIO(tables.to_csv(rows, PV.tables["1a"].columns, "mini"))))
    line = next(x for x in lines if x["key"] == "alpha=0.75" and x["column"] == "AP")
    assert (line["paper"], line["ours_mean"], line["delta"]) == ("31.100", "11.000", "-20.100")
    assert line["seeds"] == "s0 10.000, s1 12.000" and line["within_tolerance"] == "n/a"

    md = tables.to_markdown(PV.tables["1a"], rows, "mini")
    assert "| alpha=0.75 | 31.1 | 11.0 ± 1.4 | -20.1 |" in md
    assert "s0 0.0 (div), s1 1.0" in md
    assert "not comparable with COCO" in md


def test_paper_scale_judges_tolerance(study_file):
    rows = tables.build_table(PV.tables["1a"], load_study(study_file))
    lines = tables.csv_rows(rows, ["AP"], "paper")
    assert next(x for x in lines if x["key"] == "alpha=0.75")["within_tolerance"] == "False"
    rows51 = tables.build_table(PV.tables["5.1"], load_study(study_file))
    zero = next(x for x in tables.csv_rows(rows51, ["AP"], "paper") if x["key"] == "init=zero")
    assert zero["paper"] == "diverged" and zero["within_tolerance"] == "True"  # every seed diverged


def test_1b_reports_the_winning_alpha(study_file):
    rows = tables.build_table(PV.tables["1b"], load_study(study_file))
    g2 = [r for r in rows if r.key == "gamma=2"]
    assert [(r.alpha, r.winner) for r in g2] == [(0.5, True), (0.25, False)]
    assert "alpha won: 0.5 (paper: 0.25)" in g2[0].note
    md = tables.to_markdown(PV.tables["1b"], rows, "mini")
    assert "α=0.25: 14.0, α=0.5: 15.0" in md
    assert md.count("| gamma=2 |") == 1  # only the winner row in Markdown; both in the CSV
    assert sum(x["key"] == "gamma=2" for x in tables.csv_rows(rows, ["AP"], "mini")) == 2


def test_best_alpha_ties_take_the_smaller_alpha():
    from analysis.seeds import SeedValues

    v = SeedValues(("0",), (5.0,), (False,))
    assert tables.best_alpha({0.5: v, 0.25: v}) == 0.25
    assert tables.best_alpha({}) is None


def test_1e_has_time_and_size_buckets(study_file):
    rows = tables.build_table(PV.tables["1e"], load_study(study_file))
    r = next(r for r in rows if r.key == "depth=50,scale=400")
    assert r.ours["time"].values == (12.5,)
    assert math.isnan(r.ours["APs"].mean)  # null in metrics.json
    md = tables.to_markdown(PV.tables["1e"], rows, "mini")
    assert "| 64 ms | 12.5 | -51.5 |" in md


def test_table_2_lists_published_detectors(study_file):
    rows = tables.build_rows(PV.tables["2"], {})
    assert [r.key for r in rows][1:] == [p.key for p in PV.tables["2"].published]
    assert all("published" in r.note for r in rows[1:])


def test_cli_writes_all_outputs(study_file, tmp_path):
    out = tmp_path / "out"
    assert tables.main(["--study", str(study_file), "--out-dir", str(out), "--tables", "1a", "5.1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["table_1a.csv", "table_1a.md", "table_5.1.csv",
                                                     "table_5.1.md"]
    assert "diverges" in (out / "table_5.1.md").read_text()


@pytest.mark.parametrize(("damage", "message"), [
    (lambda p: p.unlink(), "metrics file not found"),
    (lambda p: p.write_text("{not json"), "malformed metrics file"),
    (lambda p: p.write_text(json.dumps({"AP": "high", "status": "completed"})), "field 'AP' must be a finite"),
    (lambda p: p.write_text(json.dumps({"AP": 0.31, "AP50": 500, "status": "completed"})), "field 'AP50'"),
    (lambda p: p.write_text(json.dumps({"AP": 1.0, "status": "running"})), "field 'status'"),
])
def test_cli_names_the_bad_file_and_writes_nothing(study_file, tmp_path, capsys, damage, message):
    bad = tmp_path / "runs" / "ce75-s1.json"
    damage(bad)
    out = tmp_path / "out"
    assert tables.main(["--study", str(study_file), "--out-dir", str(out), "--tables", "5.1", "1a"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(bad) in err and message in err
    assert not out.exists() or not any(out.iterdir())  # nothing that looks complete


def test_cli_rejects_a_malformed_manifest(tmp_path, capsys):
    path = tmp_path / "study.json"
    path.write_text(json.dumps({"scale": "mini", "tables": {"1a": [{"run": "x"}]}}))
    assert tables.main(["--study", str(path), "--out-dir", str(tmp_path / "o")]) == 2
    assert "tables.1a[0] needs a string 'key'" in capsys.readouterr().err
