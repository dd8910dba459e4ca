"""The calibration table: job times by rule and model, the default FL run's AP over seeds, seed spreads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis import calibration
from analysis.errors import AnalysisInputError


def _workdir(root: Path) -> Path:
    """A finished 3-run study: FL over seeds 0-2 (AP 10, 12, 14; ResNet-18, 128 px), one ResNet-34 run and Table 2's
    long-schedule run (AP 31, 4x the iterations); each run's ``result.json`` counts 4 s less than its train job's
    benchmark (the process start-up)."""
    w = root / "work" / "mini"
    runs, fl_metrics = {}, {}
    for rid, depth, ap, train_s in (("fl-s0", 18, 10.0, 80.0), ("fl-s1", 18, 12.0, 90.0), ("fl-s2", 18, 14.0, 100.0),
                                    ("deep-s0", 34, 9.0, 150.0), ("long-s0", 18, 31.0, 400.0)):
        cfg = w / "configs" / f"{rid}.yaml"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        iterations = 2000 if rid.startswith("long") else 500
        cfg.write_text(f"model: {{depth: {depth}}}\ndata: {{min_size: 128}}\nsolver: {{iterations: {iterations}}}\n")
        metrics = w / "eval" / rid / "metrics.json"
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text(json.dumps({"AP": ap, "status": "completed"}))
        result = w / "runs" / rid / "result.json"
        result.parent.mkdir(parents=True)
        result.write_text(json.dumps({"status": "completed", "wall_s": train_s - 4.0, "attempts": 1}))
        runs[rid] = {"config": str(cfg), "metrics": str(metrics), "result": str(result)}
        if rid.startswith("fl"):
            fl_metrics[rid[-1]] = str(metrics)
        for rule, secs in (("train", train_s), ("evaluate", 10.0)):
            tsv = w / "benchmarks" / rule / f"{rid}.tsv"
            tsv.parent.mkdir(parents=True, exist_ok=True)
            tsv.write_text(f"s\th:m:s\n{secs}\t0:00:00\n")
    (w / "benchmarks" / "make_dataset.tsv").write_text("s\th:m:s\n30.0\t0:00:30\n")
    (w / "weights").mkdir()
    (w / "weights" / "resnet18-pretrain.pth.json").write_text(json.dumps(
        {"config": {"iterations": 500}, "val_accuracy": 0.79, "wall_s": 250.0}))
    study = {"scale": "mini", "runs": runs, "tables": {"3": [{"key": "loss=FL,gamma=2", "metrics": fl_metrics},
                                                            {"key": "loss=CE", "metrics": {"0": fl_metrics["0"]}}],
                                                      "2": [{"key": "RetinaNet-50-800", "schedule": 4.0,
                                                             "metrics": {"0": runs["long-s0"]["metrics"]}}]}}
    (w / "study.json").write_text(json.dumps(study))
    return w


def test_table_reports_times_ap_and_seed_spread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _workdir(tmp_path)
    monkeypatch.chdir(tmp_path)
    stats = tmp_path / "anchors.json"
    stats.write_text(json.dumps(_anchor_stats(17.3, 3069.0, 6)))
    text = calibration.table(w, stats)
    rows = dict(line.strip("|").split(" | ", 1) for line in text.splitlines()[2:])
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    assert rows["train job wall time, R18 128 px, 500 it"] == "90 s [80-100] (n=3)"
    assert rows["train job wall time, R34 128 px, 500 it"] == "150 s [150-150] (n=1)"
    assert rows["evaluate job wall time, R18 128 px, 500 it"] == "10 s [10-10] (n=3)"
    assert rows["train job wall time, R18 128 px, 2000 it"] == "400 s [400-400] (n=1)"
    assert rows["sum of job wall times: train + evaluate; all other jobs"] == "0.24 h; 0.5 min (1 jobs)"
    assert rows["pretraining resnet18-pretrain (500 steps)"] == "held-out accuracy 79.0 %, 250 s"
    assert rows["AP of the default FL run (gamma 2, alpha .25), mean ± std"] == \
        "12.00 ± 2.00 (s0 10.00, s1 12.00, s2 14.00)"
    assert rows["AP of Table 2's RetinaNet-50-800 (FL gamma 2, alpha .25, 4x schedule, scale jitter)"] == \
        "31.00 (s0 31.00)"
    assert rows["seed std of AP, Table 3 loss=FL,gamma=2"].startswith("2.00 (mean 12.00")
    assert not any("loss=CE" in k for k in rows)  # one seed: no spread to report
    assert rows["foreground : all anchors per image"].startswith("17.3 : 3069 (0.56 %)")
    # 17.3 / (3069 x 6) = 9.4e-04 per output: 94x the published COCO rate, unless COCO's is measured.
    rate = "positive rate per classification output, fg / (anchors x K), mean over images"
    assert rows[rate] == "9.4e-04 (pooled 9.4e-04), 94x COCO's ~1.0e-05 (COCO's published)"
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps(_anchor_stats(163.0, 120087.0, 80)))
    line = next(r for r in calibration.table(w, stats, coco).splitlines() if r.startswith(f"| {rate} |"))
    assert line.endswith("| 9.4e-04 (pooled 9.4e-04), 55.4x COCO's 1.7e-05 (COCO's measured with anchor-stats) |")


def test_a_resumed_run_counts_all_its_attempts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Snakemake's benchmark of a resumed run holds only its last job (here 90 s); result.json's wall_s sums the
    attempts (60 + 90 s): the table counts the sum, in the median and in the total."""
    w = _workdir(tmp_path)
    monkeypatch.chdir(tmp_path)
    (w / "runs" / "fl-s1" / "result.json").write_text(json.dumps({"status": "completed", "wall_s": 150.0,
                                                                   "attempts": 2}))
    rows = dict(line.strip("|").split(" | ", 1) for line in calibration.table(w).splitlines()[2:])
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    assert rows["train job wall time, R18 128 px, 500 it"] == "100 s [80-150] (n=3)"
    # 80 + 150 + 100 + 150 + 400 train, 5 x 10 evaluate = 930 s
    assert rows["sum of job wall times: train + evaluate; all other jobs"] == "0.26 h; 0.5 min (1 jobs)"
    (w / "runs" / "fl-s1" / "result.json").unlink()
    with pytest.raises(AnalysisInputError, match=r"fl-s1/result.json"):
        calibration.table(w)


def test_anchor_statistics_without_the_positive_rate_are_refused(tmp_path: Path, monkeypatch) -> None:
    w = _workdir(tmp_path)
    monkeypatch.chdir(tmp_path)
    old = tmp_path / "old.json"
    old.write_text(json.dumps({k: v for k, v in _anchor_stats(17.3, 3069.0, 6).items() if k != "positive_rate"}))
    with pytest.raises(AnalysisInputError, match=r"old.json: anchor statistics without the positive rate per output"):
        calibration.table(w, old)


def _anchor_stats(fg: float, anchors: float, k: int) -> dict:
    """An ``anchor-stats --out`` file of images of one size (mean over images = pooled)."""
    rate = {"mean_over_images": fg / anchors, "pooled": fg / anchors, "images": 300}
    return {"foreground_per_image": fg, "anchors_per_image": anchors, "foreground_fraction": fg / anchors,
            "objects_without_foreground_fraction": 0.067, "images": 300, "annotation_file": "instances_train.json",
            "split": "train", "num_classes": k,
            "positive_rate": {"per_anchor": rate, "per_output": {**rate, "mean_over_images": fg / anchors / k,
                                                                 "pooled": fg / anchors / k}}}


def test_missing_benchmark_record_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = _workdir(tmp_path)
    monkeypatch.chdir(tmp_path)
    (w / "benchmarks" / "train" / "fl-s1.tsv").unlink()
    with pytest.raises(AnalysisInputError, match=r"train/fl-s1.tsv: benchmark record of train job fl-s1"):
        calibration.table(w)
    assert calibration.main(["--workdir", str(w)]) == 2
