"""Evaluation, test-dev export, timing and Fig. 4 loss samples on a small trained run."""

from __future__ import annotations

import contextlib
import io
import json
import re
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tiny_coco import CATEGORY_IDS, tiny_config, write_coco

from retinanet.config import ConfigError, RunConfig, TestConfig
from retinanet.data.coco_json import load_coco_json
from retinanet.data.dataset import build_dataset, build_test_loader
from retinanet.engine import loss_samples
from retinanet.engine.evaluate import (
    METRICS,
    area_ranges,
    coco_metrics,
    evaluate_run,
    export_test_dev,
    inference_memory_format,
    load_run,
    prepare,
    server_file_name,
    to_coco,
)
from retinanet.engine.timing import measure, time_run
from retinanet.engine.train import train
from retinanet.rundir.snapshots import snapshot_iterations, snapshot_path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run trained for 40 steps on 4 images (enough to produce detections of every kind)."""
    root = tmp_path_factory.mktemp("eval")
    write_coco(root / "data", num_images=4, seed=2)
    cfg = tiny_config(root / "data", {"solver": {"iterations": 40, "warmup_iters": 10, "clip_grad_norm": 5.0,
                                                 "checkpoint_period": 1000, "log_period": 10}})
    assert train(cfg, root / "run")["status"] == "completed"
    return root / "run"


def test_metrics_equal_pycocotools_on_the_same_detections(trained_run, tmp_path):
    metrics = evaluate_run(trained_run, tmp_path)
    detections = json.loads((tmp_path / "detections.json").read_text())
    assert detections and metrics["num_detections"] == len(detections) and metrics["num_images"] == 4
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(trained_run.parent / "data" / "annotations" / "instances.json"))
        ev = COCOeval(gt, gt.loadRes(str(tmp_path / "detections.json")), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    for i, name in enumerate(METRICS):
        expected = None if ev.stats[i] < 0 else ev.stats[i] * 100
        assert metrics[name] == expected
    assert metrics["status"] == "completed"
    assert {d["category_id"] for d in detections} <= set(CATEGORY_IDS)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics


def test_detections_are_mapped_back_to_original_pixels_and_ids():
    output = {"boxes": torch.tensor([[10.0, 20.0, 50.0, 40.0], [-4.0, 0.0, 300.0, 10.0]]),
              "scores": torch.tensor([0.9, 0.5]), "labels": torch.tensor([1, 0])}
    target = {"image_id": 5, "scale": 2.0, "orig_size": (60, 100)}
    dets = to_coco(output, target, [3, 7])
    assert dets[0] == {"image_id": 5, "category_id": 7, "bbox": [5.0, 10.0, 20.0, 10.0], "score": 0.9}
    assert dets[1]["category_id"] == 3 and dets[1]["bbox"] == [0.0, 0.0, 100.0, 5.0]  # clipped to the image


def test_perfect_and_empty_detections(tmp_path):
    data = write_coco(tmp_path, num_images=3)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "annotations" / "instances.json"))
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in data["annotations"]]
    metrics = coco_metrics(gt, perfect)
    assert metrics["AP"] == metrics["AP50"] == metrics["APs"] == 100.0
    assert metrics["APl"] is None  # no large ground truth: COCOeval's -1 becomes null
    # No detections: a measured 0 wherever there is ground truth, null (not 0) where there is none, as above.
    empty = coco_metrics(gt, [])
    assert empty == {name: None if metrics[name] is None else 0.0 for name in METRICS}
    assert empty["AP"] == empty["APs"] == 0.0 and empty["APl"] is None


def test_no_ground_truth_has_no_ap_with_or_without_detections(tmp_path):
    """A split without a single (non-crowd) box has no defined AP: null, never a 0 that reads as measured."""
    data = write_coco(tmp_path, num_images=2)
    for a in data["annotations"]:
        a["iscrowd"] = 1  # crowd boxes are ignore regions, not ground truth
    path = tmp_path / "annotations" / "instances.json"
    path.write_text(json.dumps(data))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
    some = [{"image_id": 1, "category_id": CATEGORY_IDS[0], "bbox": [1.0, 1.0, 20.0, 20.0], "score": 0.9}]
    assert coco_metrics(gt, some) == dict.fromkeys(METRICS)
    assert coco_metrics(gt, []) == dict.fromkeys(METRICS)


def test_info_that_is_not_an_object_is_ignored(tmp_path):
    """Other tools' files may have ``"info": "..."``: COCO's area limits, no crash after inference."""
    data = write_coco(tmp_path, num_images=3)
    data["info"] = "converted by another tool"
    path = tmp_path / "annotations" / "instances.json"
    path.write_text(json.dumps(data))
    gt = load_coco_json(path)
    assert area_ranges(gt) is None
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in data["annotations"]]
    assert coco_metrics(gt, perfect)["AP"] == 100.0


def test_dataset_area_limits_replace_cocos(tmp_path):
    """A dataset that states its own small/medium/large limits (the embedded one) is bucketed by them."""
    data = write_coco(tmp_path, num_images=3)
    areas = sorted(a["area"] for a in data["annotations"])
    limits = [areas[0] + 1.0, areas[-1] - 1.0]  # smallest object is small, largest large, the rest medium
    data["info"] = {"area_thresholds": limits}
    path = tmp_path / "annotations" / "instances.json"
    path.write_text(json.dumps(data))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in data["annotations"]]
    metrics = coco_metrics(gt, perfect)
    assert [metrics[m] for m in ("APs", "APm", "APl")] == pytest.approx([100.0] * 3)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(perfect), "bbox")
        ev.params.areaRng = [[0, 1e10], [0, limits[0]], limits, [limits[1], 1e10]]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert [metrics[m] for m in METRICS] == [s * 100 for s in ev.stats[:6]]


def test_inference_layout_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    auto = RunConfig()
    assert inference_memory_format(auto, cpu) == torch.channels_last
    assert inference_memory_format(auto, cuda) == torch.contiguous_format
    assert inference_memory_format(RunConfig(channels_last=True), cuda) == torch.channels_last
    for choice, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
        assert inference_memory_format(RunConfig(test=TestConfig(memory_format=choice)), cpu) == fmt
        assert inference_memory_format(RunConfig(test=TestConfig(memory_format=choice)), cuda) == fmt


def test_channels_last_inference_matches_nchw(trained_run):
    cfg, model, device = load_run(trained_run)
    assert model.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    images, _, sizes = next(iter(build_test_loader(cfg, build_dataset(cfg.data, train=False), 2)))
    x = prepare(images, cfg, device)
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    with torch.no_grad():
        ours = model.predict(x, sizes)
        model.to(memory_format=torch.contiguous_format)
        nchw = model.predict(images.contiguous(), sizes)
    assert sum(len(o["scores"]) for o in ours) > 0
    for a, b in zip(ours, nchw, strict=True):
        assert torch.equal(a["labels"], b["labels"])
        torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-4, atol=1e-3)


def test_unfinished_run_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"result.json: missing; the run has not finished"):
        evaluate_run(tmp_path, tmp_path / "eval")
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_test_dev_file_name_follows_the_evaluation_server():
    assert server_file_name("test-dev2017", "r101-800-fl-g2-a0.25-jit-1.5x-s0") == \
        "detections_test-dev2017_r101-800-fl-g2-a0.25-jit-1.5x-s0_results.json"
    with pytest.raises(ValueError, match="--alg: 'my_retinanet' must be letters, digits"):
        server_file_name("test-dev2017", "my_retinanet")  # '_' separates the name's fields


def test_test_dev_export_has_the_server_format(trained_run, tmp_path):
    data = json.loads((trained_run.parent / "data" / "annotations" / "instances.json").read_text())
    info = {"images": data["images"][:2], "categories": data["categories"]}  # no annotations, like test-dev
    (tmp_path / "image_info_test-dev2017.json").write_text(json.dumps(info))
    path = export_test_dev(trained_run, tmp_path, trained_run.parent / "data" / "images",
                           tmp_path / "image_info_test-dev2017.json")
    # the server's [type]_[testset]_[alg]_results.json; alg defaults to the run folder's name
    assert path.name == f"detections_test-dev2017_{trained_run.name}_results.json"
    assert re.fullmatch(r"detections_test-dev2017_[A-Za-z0-9.-]+_results\.json", path.name)
    dets = json.loads(path.read_text())
    assert dets and {d["image_id"] for d in dets} <= {1, 2}
    assert all(set(d) == {"image_id", "category_id", "bbox", "score"} and len(d["bbox"]) == 4 for d in dets)


def test_measure_excludes_warmup_and_synchronizes():
    calls, syncs, now = [], [], [0.0]

    def fn(i):
        calls.append(i)
        now[0] += 1.0 + i  # call i takes 1 + i seconds

    times = measure(fn, warmup=3, repeats=5, synchronize=lambda: syncs.append(1), clock=lambda: now[0])
    assert calls == [0, 1, 2, 0, 1, 2, 3, 4] and times == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert len(syncs) == 1 + 2 * 5


def test_time_run_record(trained_run, tmp_path):
    record = time_run(trained_run, tmp_path / "timing.json", warmup=1, repeats=3, num_images=2)
    assert json.loads((tmp_path / "timing.json").read_text()) == record
    assert record["ms_per_image_median"] == statistics.median(record["ms_per_image"]) > 0
    assert record["batch_size"] == 1 and record["repeats"] == 3 and record["device"]["type"] == "cpu"
    assert record["device"]["name"]


def test_split_samples_by_anchor_class_pairs():
    logits = torch.arange(12.0).reshape(4, 3)       # R = 4 anchors, K = 3 classes
    labels = torch.tensor([1, -1, -2, 0])           # fg class 1, bg, ignored, fg class 0
    pos, cls, neg = loss_samples.split_samples(logits, labels)
    assert pos.tolist() == [1.0, 9.0] and cls.tolist() == [1, 0]
    assert sorted(neg.tolist()) == [0.0, 2.0, 3.0, 4.0, 5.0, 10.0, 11.0]


def test_loss_samples_file(trained_run, tmp_path):
    out = tmp_path / "samples.npz"
    counts = loss_samples.collect(trained_run, out, num_images=2, max_negatives=100, seed=3)
    data = np.load(out)
    assert data["pos_logits"].shape == (counts["num_pos"],) and data["neg_logits"].shape == (counts["num_neg_kept"],)
    assert counts["num_neg_kept"] == 100 < counts["num_neg_total"] and counts["num_images"] == 2
    assert int(data["seed"]) == 3 and int(data["num_neg_total"]) == counts["num_neg_total"]
    # positives: every fg anchor's logit at its class, straight from the model
    cfg, model, device = load_run(trained_run)
    expected = []
    for i, (images, targets, _) in enumerate(build_test_loader(cfg, build_dataset(cfg.data, train=False), 1)):
        if i == 2:
            break
        outputs = model.anchor_outputs(images, targets)
        fg = outputs["labels"][0] >= 0
        expected.append(outputs["logits"][0][fg, outputs["labels"][0][fg]])
    assert np.array_equal(data["pos_logits"], torch.cat(expected).numpy())
    again = tmp_path / "again.npz"
    loss_samples.collect(trained_run, again, num_images=2, max_negatives=100, seed=3)
    assert np.array_equal(np.load(again)["neg_logits"], data["neg_logits"])  # fixed-seed subsample


def test_snapshots_are_kept_and_evaluated_by_iteration(tmp_path):
    """solver.snapshot_period keeps the weights every N iterations (the last is model_final.pt); evaluate
    --iteration scores one of them, and a run that diverged at or before it scores 0."""
    write_coco(tmp_path / "data", num_images=4, seed=2)
    cfg = tiny_config(tmp_path / "data", {"solver": {"iterations": 5, "snapshot_period": 2, "warmup_iters": 1,
                                                     "checkpoint_period": 1000}})
    assert snapshot_iterations(cfg.solver) == [2, 4]
    run = tmp_path / "run"
    assert train(cfg, run)["status"] == "completed"
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["model_0000002.pt", "model_0000004.pt"]
    early = load_run(run, weights=snapshot_path(run, 2))[1].state_dict()
    final = load_run(run)[1].state_dict()
    assert any(not torch.equal(early[k], final[k]) for k in final)
    metrics = evaluate_run(run, tmp_path / "it2", iteration=2)
    assert metrics["iteration"] == 2 and metrics["status"] == "completed" and 0 <= metrics["AP"] <= 100
    assert evaluate_run(run, tmp_path / "it5", iteration=5)["AP"] == evaluate_run(run, tmp_path / "final")["AP"]
    with pytest.raises(ConfigError, match=r"--iteration 3: .* keeps no weights of that iteration"):
        evaluate_run(run, tmp_path / "it3", iteration=3)
    result = json.loads((run / "result.json").read_text())
    (run / "result.json").write_text(json.dumps({**result, "status": "diverged", "iteration": 4}))
    assert evaluate_run(run, tmp_path / "d2", iteration=2)["status"] == "completed"  # before the divergence
    late = evaluate_run(run, tmp_path / "d4", iteration=4)
    assert late["status"] == "diverged" and late["AP"] == 0.0
