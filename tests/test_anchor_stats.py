import json
import shutil

import pytest
import torch
from tiny_coco import tiny_config, write_coco
from torchvision.ops import box_iou

from retinanet.__main__ import main
from retinanet.config import ConfigError, RunConfig
from retinanet.data.dataset import build_dataset
from retinanet.modeling.anchors import build_anchor_generator as AnchorGenerator  # the generator of an AnchorConfig
from retinanet.modeling.anchors import feature_shapes
from retinanet.tools.anchor_stats import COCO_PUBLISHED, anchor_statistics


def test_counts_add_up_and_match_a_direct_computation(tmp_path):
    write_coco(tmp_path, num_images=3, seed=1)
    cfg = tiny_config(tmp_path)
    stats = anchor_statistics(cfg)
    assert stats["images"] == 3
    assert stats["foreground"] + stats["ignored"] + stats["background"] == stats["anchors"]
    # Direct count: with the 'none' policy an anchor is fg iff its best IoU >= 0.5.
    cfg.matcher.low_quality = "none"
    stats = anchor_statistics(cfg)
    anchors = AnchorGenerator(cfg.anchors)(feature_shapes(64, 64))
    dataset = build_dataset(cfg.data, train=False)
    fg = objects = missed = 0
    for i in range(len(dataset)):
        boxes = dataset[i][1]["boxes"]
        iou = box_iou(boxes, anchors)
        fg += int((iou.max(0).values >= 0.5).sum())
        objects += len(boxes)
        best_gt = iou.argmax(0)
        hit = torch.zeros(len(boxes), dtype=torch.bool)
        hit[best_gt[iou.max(0).values >= 0.5]] = True
        missed += int((~hit).sum())
    assert stats["anchors"] == 3 * anchors.shape[0]
    assert (stats["foreground"], stats["objects"], stats["objects_without_foreground"]) == (fg, objects, missed)
    assert stats["foreground_fraction"] == fg / stats["anchors"]


def test_positive_rates_per_anchor_and_per_output_mean_over_images_and_pooled(tmp_path):
    # Two image sizes: the per-image mean and the pooled rate differ; per output = per anchor / K.
    write_coco(tmp_path, sizes=[(64, 64), (64, 128), (128, 64)], seed=2)
    cfg = tiny_config(tmp_path, {"data": {"max_size": 128}})
    stats = anchor_statistics(cfg)
    fg, anchors = [], []
    for i in range(3):
        one = anchor_statistics(cfg, num_images=i + 1)  # the first i + 1 images
        fg.append(one["foreground"] - sum(fg))
        anchors.append(one["anchors"] - sum(anchors))
    assert anchors[0] < anchors[1] == anchors[2]
    rate = stats["positive_rate"]
    k = stats["num_classes"]
    assert k == 2
    mean = sum(f / a for f, a in zip(fg, anchors)) / 3
    assert rate["per_anchor"]["mean_over_images"] == pytest.approx(mean)
    assert rate["per_anchor"]["pooled"] == pytest.approx(sum(fg) / sum(anchors)) == stats["foreground_fraction"]
    assert rate["per_output"]["mean_over_images"] == pytest.approx(mean / k)
    assert rate["per_output"]["pooled"] == pytest.approx(sum(fg) / sum(anchors) / k)
    assert rate["per_anchor"]["mean_over_images"] != pytest.approx(rate["per_anchor"]["pooled"])


def test_reads_only_the_annotation_file(tmp_path):
    """COCO's annotations without its images: the same counts as with the images present."""
    write_coco(tmp_path, num_images=3, seed=4)
    cfg = tiny_config(tmp_path)
    with_images = anchor_statistics(cfg)
    alone = tmp_path / "alone.json"
    shutil.copy(tmp_path / "annotations" / "instances.json", alone)
    shutil.rmtree(tmp_path / "images")
    without = anchor_statistics(cfg, annotations=alone)
    assert without["annotation_file"] == str(alone)
    assert {k: v for k, v in without.items() if k != "annotation_file"} == \
        {k: v for k, v in with_images.items() if k != "annotation_file"}


def test_num_classes_must_match_the_file_and_images_must_be_positive(tmp_path):
    write_coco(tmp_path, num_images=2)
    with pytest.raises(ConfigError, match="model.num_classes: 80"):
        anchor_statistics(tiny_config(tmp_path, {"model": {"num_classes": 80}}))
    with pytest.raises(ConfigError, match="--images 0"):
        anchor_statistics(tiny_config(tmp_path), num_images=0)


def test_cli_defaults_to_the_paper_settings_and_prints_the_rates_beside_cocos(tmp_path, capsys):
    write_coco(tmp_path, num_images=2, seed=5)
    out = tmp_path / "stats.json"
    code = main(["anchor-stats", "--annotations", str(tmp_path / "annotations" / "instances.json"),
                 "--set", "model.num_classes=2", "model.depth=18", "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    stats = json.loads(captured.out)
    assert stats == json.loads(out.read_text())
    paper = RunConfig()
    assert (stats["min_size"], stats["max_size"]) == (paper.data.min_size, paper.data.max_size)
    # 64-px images at the paper's 600-px scale, anchors 32-512 on P3-P7, padded to 640 x 640.
    assert stats["anchors_per_image"] == AnchorGenerator(paper.anchors)(feature_shapes(640, 640)).shape[0]
    rate = stats["positive_rate"]["per_output"]["mean_over_images"]
    assert f"{rate:.3g} mean over images" in captured.err
    assert f"COCO with RetinaNet: ~{COCO_PUBLISHED.value:g} per output, published" in captured.err
    assert "arXiv:1909.04868" in COCO_PUBLISHED.source
