"""Backbone pretraining on crops of the embedded data: crop sampling, the schedule, the saved weights' format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from retinanet.config import ConfigError, ModelConfig
from retinanet.data.coco_json import DataError
from retinanet.tools import pretrain
from retinanet.tools.pretrain import PretrainConfig, load_split, sample_crops


@pytest.fixture(scope="module")
def source(synthetic_coco: Path) -> pretrain.CropSource:
    return load_split(synthetic_coco, "train", "annotations/instances_train.json")


def test_load_split_reads_every_box_with_contiguous_labels(source: pretrain.CropSource) -> None:
    assert source.images.shape[0] == 6 and source.images.shape[1:] == (3, 64, 64)
    assert len(source.boxes) == len(source.labels) == len(source.box_image) > 0
    assert source.num_classes == 6
    assert 0 <= int(source.labels.min()) and int(source.labels.max()) < 6
    assert bool((source.boxes[:, 2:] > source.boxes[:, :2]).all())


def test_crops_half_objects_half_background_and_background_avoids_objects(source: pretrain.CropSource) -> None:
    cfg = PretrainConfig(crop=16, batch_size=10)
    g = torch.Generator().manual_seed(0)
    crops, labels = sample_crops(source, cfg, g)
    assert crops.shape == (10, 3, 16, 16) and torch.isfinite(crops).all()
    assert int((labels == source.num_classes).sum()) == 5
    assert bool((labels[:5] < source.num_classes).all())
    rois = pretrain._background_rois(source, cfg, 50, torch.Generator().manual_seed(1))
    for roi in rois:
        img, box = int(roi[0]), roi[1:]
        assert 0 <= float(box[0]) and float(box[2]) <= 64 and float(box[2] - box[0]) >= 8 - 1e-5
        own = source.boxes[source.box_image == img]
        lt = torch.maximum(box[:2], own[:, :2])
        rb = torch.minimum(box[2:], own[:, 2:])
        inter = torch.cat([(rb - lt).clamp(min=0).prod(dim=1), torch.zeros(1)])
        area = (box[2] - box[0]) * (box[3] - box[1])
        assert float(inter.max() / area) <= cfg.background_max_overlap + 1e-6


def test_object_crops_show_the_object_and_background_crops_show_background() -> None:
    # One 64-px image, value 1 inside a square object [16, 16, 48, 48], 0 elsewhere. With context 1 and no jitter an
    # object crop lies inside the object; a background crop overlaps it by at most 30 % of its area.
    image = torch.zeros(1, 3, 64, 64)
    image[:, :, 16:48, 16:48] = 1.0
    src = pretrain.CropSource(image, torch.tensor([[16.0, 16.0, 48.0, 48.0]]), torch.tensor([0]), torch.tensor([2]),
                              torch.tensor([[64, 64]]), num_classes=3)
    cfg = PretrainConfig(crop=16, batch_size=64, context=(1.0, 1.0), jitter=0.0)
    crops, labels = sample_crops(src, cfg, torch.Generator().manual_seed(3))
    assert labels[:32].tolist() == [2] * 32 and labels[32:].tolist() == [3] * 32
    assert torch.allclose(crops[:32], torch.ones_like(crops[:32]))
    assert float(crops[32:].mean(dim=(1, 2, 3)).max()) <= cfg.background_max_overlap + 0.05


def test_schedule_warms_up_then_decays_to_zero() -> None:
    cfg = PretrainConfig(iterations=100, warmup_iters=10, base_lr=0.3)
    assert pretrain._lr(cfg, 0) == pytest.approx(0.1)
    assert pretrain._lr(cfg, 10) == pytest.approx(0.3)
    assert pretrain._lr(cfg, 55) == pytest.approx(0.15)
    assert pretrain._lr(cfg, 100) == pytest.approx(0.0, abs=1e-12)
    lrs = [pretrain._lr(cfg, i) for i in range(10, 101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_pretrained_file_loads_into_the_detector_backbone(source: pretrain.CropSource, tmp_path: Path) -> None:
    from retinanet.modeling.backbone import build_backbone as ResNetFPN  # the backbone of a ModelConfig

    out = tmp_path / "resnet18-pretrain.pth"
    summary = pretrain.pretrain(PretrainConfig(iterations=3, batch_size=8, crop=16, warmup_iters=1), source, source,
                                out, log_period=1)
    assert len(summary["curve"]) == 3 and 0.0 <= summary["val_accuracy"] <= 1.0
    assert Path(str(out) + ".json").is_file()
    state = torch.load(out, weights_only=True)
    assert state["fc.weight"].shape == (source.num_classes + 1, 512)
    net = ResNetFPN(ModelConfig(depth=18, num_classes=6, pretrained=str(out), norm="frozen_bn", freeze_at=2,
                                fpn_channels=16))
    body = net.body.state_dict()
    for key in ("conv1.weight", "layer4.1.conv2.weight"):
        assert torch.equal(body[key], state[key])
    # Frozen BN takes the pretrained running statistics, as the paper's detector takes ImageNet's.
    assert isinstance(net.body.bn1, FrozenBatchNorm2d)
    assert torch.equal(body["bn1.running_mean"], state["bn1.running_mean"])
    assert not torch.equal(state["bn1.running_mean"], torch.zeros_like(state["bn1.running_mean"]))


def test_bad_settings_and_inputs_are_named(synthetic_coco: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pretrain: crop"):
        PretrainConfig(crop=4).validate()
    with pytest.raises(DataError, match="instances_missing.json"):
        load_split(synthetic_coco, "train", "annotations/instances_missing.json")
