"""The report's sources-of-variance section (analysis/variance.py) on a hand-made manifest."""

from __future__ import annotations

import json
from pathlib import Path

from analysis.study_io import load_study
from analysis.variance import sampled_rows, variance_section


def _study(tmp_path: Path, runs: dict[str, dict[str, float]]) -> Path:
    """A manifest whose Table 3 rows have the given ``{row key: {run key: AP}}``."""
    entries = []
    for key, aps in runs.items():
        metrics = {}
        for run, ap in aps.items():
            path = tmp_path / f"{key}-{run}.json"
            path.write_text(json.dumps({"AP": ap, "status": "completed"}))
            metrics[run] = str(path)
        entries.append({"key": key, "run": key, "seeds": [0, 1], "metrics": metrics})
    (tmp_path / "study.json").write_text(json.dumps({"scale": "mini", "tables": {"3": entries}, "figures": {}}))
    return tmp_path / "study.json"


def test_rows_on_several_pretrainings_split_their_spread(tmp_path):
    study = load_study(_study(tmp_path, {
        "loss=FL,gamma=2": {"0": 30.0, "1": 32.0, "p1-s0": 26.0, "p1-s1": 28.0},   # pretraining means 31 and 27
        "loss=CE": {"0": 40.0, "1": 41.0},                                         # one pretraining: not listed
    }))
    (row,) = sampled_rows(study)
    assert row[:2] == ("3", "loss=FL,gamma=2")
    text = variance_section(study)
    assert "| 3 | loss=FL,gamma=2 | s0 30.0, s1 32.0, p1-s0 26.0, p1-s1 28.0 | 29.00 | 2.58 | 1.41 | 2.83 |" in text
    assert "loss=CE" not in text


def test_a_study_on_one_pretraining_says_what_its_spreads_leave_out(tmp_path):
    study = load_study(_study(tmp_path, {"loss=CE": {"0": 40.0, "1": 41.0}}))
    assert sampled_rows(study) == []
    assert "spreads in this report are over run seeds only" in variance_section(study)
