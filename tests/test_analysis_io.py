"""Reading run outputs (analysis/study_io.py): loss-sample layouts, timing, wall time, logs, path resolution."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from analysis.errors import AnalysisInputError
from analysis.keys import format_number, parse_key
from analysis.paper_values import PAPER_VALUES, load_paper_values
from analysis.study_io import (
    Study,
    load_loss_samples,
    read_log,
    read_metrics,
    read_timing,
    read_wall_time,
)


def test_loss_samples_from_anchor_logits_and_labels(tmp_path):
    # 3 anchors x K=2 classes: anchor 0 is fg class 1, anchor 1 background, anchor 2 ignored.
    logits = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    np.savez(tmp_path / "s.npz", logits=logits, labels=np.array([1, -1, -2]))
    s = load_loss_samples(tmp_path / "s.npz")
    np.testing.assert_array_equal(s.pos, [2.0])
    np.testing.assert_array_equal(np.sort(s.neg), [1.0, 3.0, 4.0])  # the other class of the fg anchor + both bg


def test_loss_samples_from_pos_and_neg_logits_with_counts(tmp_path):
    np.savez(tmp_path / "s.npz", pos_logits=np.float32([1, 2]), neg_logits=np.float32([-1, -2, -3]),
             num_images=np.asarray(5), num_neg_total=np.asarray(3000))
    s = load_loss_samples(tmp_path / "s.npz")
    assert (s.pos.size, s.neg.size, s.meta["num_images"]) == (2, 3, 5)
    assert s.describe() == "2 positive and 3 negative samples (a uniform subsample of 3,000) from 5 images"


@pytest.mark.parametrize("arrays", [{"x": np.zeros(3)}, {"pos_logits": np.zeros(0), "neg_logits": np.zeros(2)},
                                    {"pos_logits": np.array([np.inf]), "neg_logits": np.zeros(2)}])
def test_bad_loss_samples_name_the_file(tmp_path, arrays):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(AnalysisInputError, match="bad.npz"):
        load_loss_samples(tmp_path / "bad.npz")


def test_metrics_null_size_bucket_and_diverged(tmp_path):
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"AP": 10, "AP50": 20, "AP75": 5, "APs": None, "APm": 1, "APl": 2, "status": "completed"}))
    m = read_metrics(p)
    assert m["AP"] == 10.0 and math.isnan(m["APs"])
    p.write_text(json.dumps({"AP": 55.0, "status": "diverged"}))
    assert read_metrics(p)["AP"] == 0.0  # a diverged run is AP 0 whatever the file says
    p.write_text(json.dumps({"AP": None, "status": "completed"}))
    with pytest.raises(AnalysisInputError, match="field 'AP'"):
        read_metrics(p)


def test_files_that_are_not_utf8_are_named(tmp_path):
    metrics, log, tsv = tmp_path / "metrics.json", tmp_path / "log.jsonl", tmp_path / "train.tsv"
    metrics.write_bytes(b'{"AP": 1, "run": "caf\xe9"}')
    log.write_bytes(b'{"iteration": 1}\n{"note": "\xe9"}\n')
    tsv.write_bytes(b"s\th:m:s\n12.5\t0:00:12 \xe9\n")
    for read, path, what in ((read_metrics, metrics, "metrics file"), (read_log, log, "training log"),
                             (read_wall_time, tsv, "benchmark file")):
        with pytest.raises(AnalysisInputError, match=rf"^{re.escape(str(path))}: {what} is not UTF-8 \(byte 0xe9"):
            read(path)


def test_paper_values_file_not_utf8_is_named(tmp_path):
    path = tmp_path / "paper_values.yaml"
    path.write_bytes(PAPER_VALUES.read_bytes().replace(b"tables:", b"# \xe9\ntables:", 1))
    with pytest.raises(AnalysisInputError, match=rf"^{re.escape(str(path))}: paper values file is not UTF-8"):
        load_paper_values(path)


def test_timing_and_wall_time(tmp_path):
    t = tmp_path / "t.json"
    t.write_text(json.dumps({"status": "completed", "ms_per_image_median": 12.5, "device": {"name": "Xeon"}}))
    assert read_timing(t) == (12.5, "Xeon")
    t.write_text(json.dumps({"status": "diverged", "ms_per_image_median": None}))
    assert math.isnan(read_timing(t)[0])
    t.write_text(json.dumps({"status": "completed", "ms_per_image_median": -1}))
    with pytest.raises(AnalysisInputError, match="ms_per_image_median"):
        read_timing(t)
    b = tmp_path / "bench.tsv"
    b.write_text("s\th:m:s\tmax_rss\n12.25\t0:00:12\t5\n")
    assert read_wall_time(b) == 12.25
    r = tmp_path / "result.json"
    r.write_text(json.dumps({"status": "completed", "wall_s": 99.5}))
    assert read_wall_time(r) == 99.5
    b.write_text("x\ty\n1\t2\n")
    with pytest.raises(AnalysisInputError, match="'s' column"):
        read_wall_time(b)


def test_log_lines(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text('{"iteration": 1, "loss": 2.0}\n\n{"iteration": 2, "loss": 1.5}\n')
    assert [r["iteration"] for r in read_log(p)] == [1, 2]
    p.write_text('{"iteration": 1}\nnot json\n')
    with pytest.raises(AnalysisInputError, match="line 2"):
        read_log(p)


def test_relative_paths_resolve_against_cwd_then_the_manifest(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.json").write_text("{}")
    study = Study(path=tmp_path / "sub" / "study.json", data={"scale": "x"})
    monkeypatch.chdir(tmp_path)
    assert study.resolve("sub/m.json") == Path("sub/m.json")  # exists relative to the cwd: kept as is
    assert study.resolve("m.json") == tmp_path / "sub" / "m.json"  # not in the cwd: the manifest's folder


def test_keys():
    assert parse_key("method=OHEM 1:3,batch=128,nms=0.5") == {"method": "OHEM 1:3", "batch": "128", "nms": "0.5"}
    assert [format_number(x) for x in (2.0, 0.25, 0.1, 0, 0.999)] == ["2", "0.25", "0.1", "0", "0.999"]
    with pytest.raises(ValueError, match="malformed row key"):
        parse_key("gamma2")
