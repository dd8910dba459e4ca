"""The paper's backbone: Detectron's MSRA ResNet-50 from a Caffe2 pickle (a fake R-50.pkl these tests write), its
stride placement, a forward against a hand-written Caffe2-style computation, its BGR 0-255 input, and the refusals.

The fake file is built by tests/msra_weights.py from Detectron's ResNet-50 layout (``ResNet.py``: stem, then
res2..res5 of 3, 4, 6, 3 bottlenecks of widths 64/256 .. 512/2048), independently of the converter's name table.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from msra_weights import msra_blobs, stages
from numerics import assert_close_at_scale
from tiny_coco import COLORS, write_coco

from retinanet.__main__ import main as cli
from retinanet.config import BACKBONE_INPUT, ConfigError, ModelConfig, from_dict
from retinanet.data.dataset import build_dataset, normalize
from retinanet.modeling.backbone import _block, conv_bn
from retinanet.modeling.backbone import build_backbone as ResNetFPN  # the backbone of a ModelConfig
from retinanet.tools.caffe2_weights import BN_EPS, Caffe2WeightsError, convert, read_blobs
from workflow.scripts import fetch_weights

STAGES = stages(50)  # res<i>, blocks, mid, out


def _r50_blobs(seed: int = 0) -> dict[str, np.ndarray]:
    """Every blob of Detectron's R-50.pkl with its shape, random values (tests/msra_weights.py, shared with the
    paper rehearsal)."""
    return msra_blobs(50, seed)


@pytest.fixture(scope="module")
def r50(tmp_path_factory) -> tuple[dict[str, np.ndarray], Path, Path]:
    """The fake blobs, their R-50.pkl (pickled as the published file: protocol 2, under ``blobs``) and the
    converted file (through the CLI)."""
    root = tmp_path_factory.mktemp("msra")
    blobs = _r50_blobs()
    pkl = root / "R-50.pkl"
    pkl.write_bytes(pickle.dumps({"blobs": blobs}, protocol=2))
    out = root / "resnet50-msra.pth"
    assert cli(["convert-weights", "--from", str(pkl), "--out", str(out)]) == 0
    return blobs, pkl, out


def _key(t: np.ndarray | torch.Tensor) -> bytes:
    return np.ascontiguousarray(np.asarray(t, dtype=np.float32)).tobytes()


def test_conversion_maps_every_blob_once_and_drops_the_classifier(r50):
    blobs, pkl, _ = r50
    state = convert(read_blobs(pkl))
    by_value = {_key(v): k for k, v in blobs.items() if k not in ("conv1_b", "fc1000_w", "fc1000_b")}
    params = {k: v for k, v in state.items() if not k.endswith(("running_mean", "running_var"))}
    found = [by_value[_key(v)] for v in params.values()]
    assert sorted(found) == sorted(by_value.values())  # every kept blob is some parameter, each exactly once
    # the mapping itself, by meaning: stem, the strided 1x1 of res3_0 and the shortcut's affine of res2_0
    for c2, tv in [("conv1_w", "conv1.weight"), ("res_conv1_bn_s", "bn1.weight"),
                   ("res3_0_branch2a_w", "layer2.0.conv1.weight"), ("res4_5_branch2b_bn_b", "layer3.5.bn2.bias"),
                   ("res2_0_branch1_bn_s", "layer1.0.downsample.1.weight"),
                   ("res5_2_branch2c_w", "layer4.2.conv3.weight")]:
        assert torch.equal(state[tv], torch.from_numpy(blobs[c2])), (c2, tv)
    want = {k for k in torchvision.models.resnet50().state_dict()
            if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    assert set(state) == want
    assert all(torch.equal(state[k], torch.zeros_like(state[k])) for k in state if k.endswith("running_mean"))
    assert all(torch.equal(state[k], torch.full_like(state[k], 1 - BN_EPS)) for k in state if k.endswith("running_var"))


def test_caffe2_style_strides_the_first_1x1_conv(r50):
    _, _, out = r50
    net = ResNetFPN(ModelConfig(depth=50, backbone_style="caffe2", pretrained=str(out)))
    body = net.body
    assert body.layer1[0].conv1.stride == (1, 1) and body.layer1[0].conv2.stride == (1, 1)  # res2: after the pool
    for layer in (body.layer2, body.layer3, body.layer4):
        first = layer[0]
        assert first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1) and first.downsample[0].stride == (2, 2)
        assert all(b.conv1.stride == b.conv2.stride == (1, 1) for b in layer[1:])
    tv = ResNetFPN(ModelConfig(depth=50, pretrained="none", norm="bn", freeze_at=0)).body
    assert tv.layer2[0].conv1.stride == (1, 1) and tv.layer2[0].conv2.stride == (2, 2)  # torchvision: "v1.5"


def _caffe2_bottleneck(x: torch.Tensor, b: dict[str, torch.Tensor], name: str, stride: int) -> torch.Tensor:
    """Detectron's ``bottleneck_transformation`` with STRIDE_1X1 and AffineChannel, written with F only."""
    def conv_affine(x, branch, stride=1, pad=0):
        y = F.conv2d(x, b[f"{name}_{branch}_w"], stride=stride, padding=pad)
        return y * b[f"{name}_{branch}_bn_s"].view(1, -1, 1, 1) + b[f"{name}_{branch}_bn_b"].view(1, -1, 1, 1)

    y = F.relu(conv_affine(x, "branch2a", stride=stride))
    y = F.relu(conv_affine(y, "branch2b", pad=1))
    y = conv_affine(y, "branch2c")
    return F.relu(y + conv_affine(x, "branch1", stride=stride))


def test_forward_with_converted_weights_equals_a_caffe2_style_computation(r50):
    """Stem (conv1 7x7/2, affine, ReLU, max pool 3x3/2), res2_0 and res3_0 (the stride in its 1x1) of our backbone
    against the same layers computed from the pickle's blobs with torch.nn.functional."""
    blobs, _, out = r50
    b = {k: torch.from_numpy(v) for k, v in blobs.items()}
    net = ResNetFPN(ModelConfig(depth=50, backbone_style="caffe2", pretrained=str(out))).eval()
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1)) * 50.0  # BGR 0-255 minus the mean
    with torch.no_grad():
        stem = net.body.maxpool(torch.relu(conv_bn(net.body.conv1, net.body.bn1, x)))
        res2 = _block(net.body.layer1[0], stem)
        res3 = _block(net.body.layer2[0], res2)
        ref_stem = F.max_pool2d(F.relu(F.conv2d(x, b["conv1_w"], stride=2, padding=3)
                                       * b["res_conv1_bn_s"].view(1, -1, 1, 1) + b["res_conv1_bn_b"].view(1, -1, 1, 1)),
                                3, stride=2, padding=1)
        ref_res2 = _caffe2_bottleneck(ref_stem, b, "res2_0", stride=1)
        ref_res3 = _caffe2_bottleneck(ref_res2, b, "res3_0", stride=2)
        assert_close_at_scale(stem, ref_stem, msg="stem")
        assert_close_at_scale(res2, ref_res2, msg="res2_0")
        assert_close_at_scale(res3, ref_res3, msg="res3_0")
        # the stride placement is what the comparison tests: the same weights strided torchvision's way differ
        tv = ResNetFPN(ModelConfig(depth=50, pretrained="none", norm="frozen_bn", freeze_at=0))
        tv.body.load_state_dict(net.body.state_dict())
        tv_res3 = _block(tv.body.layer2[0], res2)
        assert (tv_res3 - ref_res3).abs().max() > 0.1 * ref_res3.abs().max()


def test_caffe2_input_is_bgr_0_255_minus_detectrons_mean(tmp_path):
    data = write_coco(tmp_path, sizes=[(40, 60)])
    cfg = from_dict({"model": {"depth": 18, "backbone_style": "caffe2", "pretrained": "none", "norm": "bn",
                               "freeze_at": 0},
                     "data": {"root": str(tmp_path), "val_images": "images",
                              "val_annotations": "annotations/instances.json", "min_size": 80, "max_size": 200,
                              **BACKBONE_INPUT["caffe2"]}})
    assert cfg.data.pixel_mean == [102.9801, 115.9465, 122.7717] and cfg.data.pixel_std == [1.0, 1.0, 1.0]
    image, _ = build_dataset(cfg.data, train=False)[0]
    x, y, w, h = data["annotations"][0]["bbox"]
    cx, cy = int((x + w / 2) * 2), int((y + h / 2) * 2)  # 40 x 60 -> 80 x 120
    r, g, bl = COLORS[data["annotations"][0]["category_id"]]
    want = torch.tensor([bl - 102.9801, g - 115.9465, r - 122.7717])
    torch.testing.assert_close(image[:, cy, cx], want, atol=1e-3, rtol=0)
    # the function itself, on one pixel
    px = torch.tensor([10.0, 20.0, 30.0]).view(3, 1, 1) / 255.0
    out = normalize(px, [1.0, 2.0, 3.0], [1.0, 1.0, 1.0], "bgr255")
    torch.testing.assert_close(out.flatten(), torch.tensor([29.0, 18.0, 7.0]))


@pytest.mark.parametrize(("override", "field"), [
    ({"model": {"backbone_style": "caffe2", "pretrained": "w.pth"}}, "data.input_format"),
    ({"model": {"backbone_style": "caffe2"}, "data": BACKBONE_INPUT["caffe2"]}, "model.pretrained"),
    ({"model": {"backbone_style": "caffe2", "pretrained": "w.pth"},
      "data": {"input_format": "bgr255", "pixel_std": [1.0, 1.0, 1.0]}}, "data.pixel_mean"),
    ({"data": {"input_format": "bgr255", **{k: v for k, v in BACKBONE_INPUT["caffe2"].items()
                                            if k != "input_format"}}}, "data.input_format"),
    ({"data": {"pixel_mean": [0.5, 0.5]}}, "data.pixel_mean"),
])
def test_style_and_input_must_agree(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        from_dict(override)


def test_weights_style_is_checked_against_the_model(r50, tmp_path):
    _, _, out = r50
    with pytest.raises(ConfigError, match="holds caffe2-style weights"):
        ResNetFPN(ModelConfig(depth=50, pretrained=str(out)))
    plain = tmp_path / "tv.pth"
    torch.save(torchvision.models.resnet50().state_dict(), plain)
    with pytest.raises(ConfigError, match="declares no style"):
        ResNetFPN(ModelConfig(depth=50, backbone_style="caffe2", pretrained=str(plain)))


def test_missing_unexpected_and_misshapen_blobs_are_refused_by_name(tmp_path):
    blobs = _r50_blobs()
    wrong = dict(blobs)
    del wrong["res4_3_branch2b_w"]
    wrong["res6_0_branch2a_w"] = np.zeros(1, np.float32)
    with pytest.raises(Caffe2WeightsError, match=r"1 blobs missing \['res4_3_branch2b_w'\].*"
                                                 r"1 unexpected \['res6_0_branch2a_w'\]"):
        convert(wrong, 50)
    wrong = dict(blobs, res3_1_branch2b_bn_s=np.ones(64, np.float32))
    with pytest.raises(Caffe2WeightsError, match=r"res3_1_branch2b_bn_s has shape \(64,\).*layer2.1.bn2.weight"):
        convert(wrong)
    with pytest.raises(Caffe2WeightsError, match="0 res4 blocks"):
        convert({k: v for k, v in blobs.items() if not k.startswith("res4_")})
    # momentum blobs (solver state) are dropped, a detection file's "blobs" wrapper is unwrapped
    momentum = dict(blobs, res2_0_branch2a_w_momentum=np.zeros(1, np.float32))
    assert len(convert(momentum, 50)) == len(convert(blobs, 50))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"blobs": {"conv1_w": Evil()}}, protocol=2))
    with pytest.raises(Caffe2WeightsError, match=r"R-50\.pkl: cannot read Caffe2 weights.*refusing global"):
        read_blobs(path)
    assert not marker.exists()


def test_fetch_weights_msra_converts_a_local_pickle_and_refuses_a_bad_one(r50, tmp_path):
    _, pkl, _ = r50
    out = tmp_path / "cache" / "resnet50-msra.pth"
    assert fetch_weights.main(["--source", "msra", "--url", pkl.as_uri(), "--out", str(out)]) == 0
    saved = torch.load(out, weights_only=True)
    assert saved["backbone_style"] == "caffe2" and saved["source"] == "R-50.pkl" and len(saved["sha256"]) == 64
    bad = tmp_path / "R-101.pkl"
    bad.write_bytes(pickle.dumps({"conv1_w": np.zeros((64, 3, 7, 7), np.float32)}, protocol=2))
    out101 = tmp_path / "cache" / "resnet101-msra.pth"
    assert fetch_weights.main(["--source", "msra", "--url", bad.as_uri(), "--out", str(out101)]) == 2
    assert not out101.exists() and not [p for p in out101.parent.iterdir() if p.name.startswith(".")]
