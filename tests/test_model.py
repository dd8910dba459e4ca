import math

import pytest
import torch
import torchvision
from numerics import assert_close_at_scale

from retinanet.config import ConfigError, RunConfig, from_dict
from retinanet.modeling.detector import build_model


def _small(**model):
    base = {"depth": 18, "fpn_channels": 32, "head_convs": 1, "pretrained": "none", "norm": "bn", "freeze_at": 0,
            "num_classes": 3}
    return from_dict({"model": {**base, **model}, "anchors": {"sizes": [16, 32, 64, 128, 256]}})


def _targets():
    return [
        {"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0], [70.0, 70.0, 120.0, 110.0]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]


def test_r50_parameter_count_matches_reference_layout():
    """detectron2 reports 37,915,572 parameters for RetinaNet R50-FPN, K=80, P6 from C5."""
    cfg = RunConfig()
    cfg.model.pretrained = "none"
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) == 37_915_572


def test_r50_forward_backward_on_cpu():
    cfg = RunConfig()
    cfg.model.pretrained = "none"
    model = build_model(cfg).train()
    out = model(torch.randn(2, 3, 128, 128), _targets())
    loss = out["loss_cls"] + out["loss_box"]
    loss.backward()
    assert torch.isfinite(loss)
    assert out["num_fg"].item() > 0
    grads = [p.grad for p in model.head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # Frozen stem + res2 (Detectron's freeze_at=2) receive no gradient.
    assert model.backbone.body.conv1.weight.grad is None and model.backbone.body.layer1[0].conv1.weight.grad is None
    assert model.backbone.body.layer2[0].conv1.weight.grad is not None


def test_prior_init_gives_pi_everywhere_and_initial_loss_matches():
    model = build_model(_small()).train()
    torch.testing.assert_close(model.head.cls_subnet[-1].bias, torch.full((27,), -math.log(99.0)))
    with torch.no_grad():
        logits, _, _, _ = model.dense(torch.randn(1, 3, 128, 128))
    # weights N(0, 0.01) on a small input: logits stay close to the prior bias.
    assert (torch.sigmoid(logits) - 0.01).abs().max() < 0.01
    zero = build_model(_small(cls_bias_init="zero"))
    assert torch.count_nonzero(zero.head.cls_subnet[-1].bias) == 0


def test_p6_is_computed_from_c5_even_when_widths_agree():
    model = build_model(_small(fpn_channels=512))
    extra = model.backbone.fpn.extra_blocks
    assert extra.use_P5 is False and extra.p6.in_channels == 512
    feats = model.backbone(torch.randn(1, 3, 128, 128))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]


def test_normalizers_on_a_batch():
    """detectron: sum / sum_i (fg_i + 1); per_image: mean_i sum_i / max(fg_i, 1); ema: sum / moving fg average."""
    torch.manual_seed(0)
    model = build_model(_small(norm="gn")).eval()  # GN: per-image losses do not depend on the batch
    images = torch.randn(2, 3, 128, 128)
    targets = _targets()
    single = [model.losses(images[i:i + 1], targets[i:i + 1]) for i in range(2)]
    fg0, fg1 = single[0]["num_fg"], single[1]["num_fg"]
    assert fg0 > 0 and fg1 == 0
    s_cls = [single[0]["loss_cls"] * (fg0 + 1), single[1]["loss_cls"] * (fg1 + 1)]
    s_box = single[0]["loss_box"] * (fg0 + 1)
    out = model.losses(images, targets)
    torch.testing.assert_close(out["loss_cls"], (s_cls[0] + s_cls[1]) / (fg0 + fg1 + 2))
    torch.testing.assert_close(out["loss_box"], s_box / (fg0 + fg1 + 2))
    model.loss_cfg.normalizer = "per_image"
    out = model.losses(images, targets)
    torch.testing.assert_close(out["loss_cls"], (s_cls[0] / fg0 + s_cls[1]) / 2)
    model.loss_cfg.normalizer = "ema"
    out = model.losses(images, targets)
    torch.testing.assert_close(out["loss_cls"], (s_cls[0] + s_cls[1]) / (0.9 * 100 + 0.1 * fg0))
    torch.testing.assert_close(model.fg_ema, 0.9 * 100 + 0.1 * fg0)


def test_ohem_trains_on_its_minibatch_only():
    cfg = _small()
    cfg.loss.gamma, cfg.loss.alpha, cfg.loss.sampling, cfg.loss.ohem_batch = 0.0, None, "ohem", 16
    model = build_model(cfg).train()
    grads = []

    def keep_logit_grads(_module, _inputs, out):
        out[0].register_hook(grads.append)

    model.head.register_forward_hook(keep_logit_grads)
    out = model(torch.randn(2, 3, 128, 128), _targets())
    out["loss_cls"].backward()
    touched = (grads[0].abs().sum(-1) > 0).sum(dim=1)
    assert touched.tolist() == [16, 16]


def test_local_pretrained_weights_load_and_missing_file_is_named(tmp_path):
    ref = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    model = build_model(_small(pretrained=str(path), norm="frozen_bn", freeze_at=2))
    torch.testing.assert_close(model.backbone.body.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)
    torch.testing.assert_close(model.backbone.body.bn1.running_mean, ref.bn1.running_mean)
    with pytest.raises(ConfigError, match="does not exist"):
        build_model(_small(pretrained=str(tmp_path / "missing.pth")))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ConfigError, match="cannot load weights"):
        build_model(_small(pretrained=str(path)))


def test_predict_and_anchor_outputs_shapes():
    model = build_model(_small()).eval()
    images = torch.randn(2, 3, 128, 128)
    dets = model.predict(images, [(128, 128), (100, 90)])
    assert len(dets) == 2 and all(len(d["scores"]) <= 100 for d in dets)
    out = model.anchor_outputs(images, _targets())
    r = 9 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1)
    assert out["logits"].shape == (2, r, 3) and out["labels"].shape == (2, r)
    assert set(out["labels"][0].unique().tolist()) <= {-2, -1, 0, 2}
    assert (out["labels"][1] == -1).all()


def test_channels_last_max_pool_is_bit_identical_to_nchw():
    from torch import nn

    from retinanet.modeling.backbone import ChannelsLastMaxPool2d

    x = torch.randn(2, 8, 33, 40)
    ref = nn.MaxPool2d(3, 2, 1)
    out = ChannelsLastMaxPool2d.like(ref)(x)
    assert torch.equal(out, ref(x)) and out.is_contiguous()


@pytest.mark.parametrize(("depth", "freeze_at"), [(18, 2), (50, 2), (18, 0)])
def test_folded_frozen_bn_backbone_equals_torchvision_resnet_in_float64(depth, freeze_at):
    """Frozen BN, folded into the convolutions or applied to their outputs (whichever is cheaper), computes
    torchvision's ResNet body exactly (float64: up to rounding), forward and backward, with stem + res2 frozen as in
    the paper (and with everything trainable: the trainable stem takes the fold, res5 the output affine); the folded
    weights of frozen layers are cached and the cache follows in-place weight updates."""
    from retinanet.config import ModelConfig
    from retinanet.modeling.backbone import _output_numel
    from retinanet.modeling.backbone import build_backbone as ResNetFPN  # the backbone of a ModelConfig

    torch.manual_seed(0)
    net = ResNetFPN(ModelConfig(depth=depth, pretrained="none", norm="frozen_bn", freeze_at=freeze_at,
                                fpn_channels=16))
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for name, buf in net.body.named_buffers():
            buf.copy_(torch.rand_like(buf) + 0.5 if name.endswith(("running_var", "weight")) else torch.randn_like(buf))
    net = net.double()
    ref_body = torchvision.models.get_model(f"resnet{depth}", weights=None,
                                            norm_layer=torchvision.ops.misc.FrozenBatchNorm2d).double()
    ref_body.load_state_dict(net.body.state_dict(), strict=False)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)

    def ours(b):
        from retinanet.modeling.backbone import _stage, conv_bn
        y = b.maxpool(torch.relu(conv_bn(b.conv1, b.bn1, x)))
        return _stage(b.layer4, _stage(b.layer3, _stage(b.layer2, _stage(b.layer1, y))))

    def ref(b):
        y = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        return b.layer4(b.layer3(b.layer2(b.layer1(y))))

    got, want = ours(net.body), ref(ref_body)
    assert_close_at_scale(got, want)
    got.square().sum().backward()
    want.square().sum().backward()
    for (name, p), q in zip(net.body.named_parameters(), ref_body.parameters(), strict=False):
        if p.requires_grad:
            assert_close_at_scale(p.grad, q.grad, msg=name)
    if freeze_at == 2:
        assert net.body.conv1._folded_cache is not None  # frozen stem: folded once
    else:  # both trainable paths ran: the stem's weights are smaller than its output, res5's larger
        assert not hasattr(net.body.conv1, "_folded_cache")
        assert net.body.conv1.weight.numel() < _output_numel(net.body.conv1, x) == net.body.conv1(x).numel()
        conv = net.body.layer4[-1].conv2
        assert conv.weight.numel() > _output_numel(conv, torch.empty(2, conv.in_channels, 2, 2))
    with torch.no_grad():
        net.body.conv1.weight.mul_(2.0)  # an in-place update must invalidate the cache
        ref_body.conv1.weight.mul_(2.0)
        assert_close_at_scale(ours(net.body), ref(ref_body))


def test_detectron_normalizer_counts_a_gts_best_anchor_sent_back_to_background():
    """Detectron's num_fg + 1 counts fg_inds before the IoU < 0.4 reset (_get_retinanet_blobs): GT 0's best anchor
    a0 (IoU 1/9) is in the normalizer, yet labeled background (a negative in the classification loss) and without
    box loss. GT 1 has a0's neighbour a1 (IoU 0.69) as a real foreground anchor; a2 touches nothing."""
    from retinanet.modeling import boxes as box_ops
    from retinanet.modeling.matching import BACKGROUND

    model = build_model(_small())
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0], [200.0, 200.0, 210.0, 210.0]])
    gt = torch.tensor([[0.0, 0.0, 30.0, 30.0], [100.0, 100.0, 112.0, 108.0]])
    targets = [{"boxes": gt, "labels": torch.tensor([1, 2])}]
    matched, _, _, demoted = model.assign_with_demoted(anchors, targets)
    assert matched.tolist() == [[BACKGROUND, 1, BACKGROUND]] and demoted.tolist() == [[True, False, False]]
    logits = torch.randn(1, 3, 3, generator=torch.Generator().manual_seed(0))
    deltas = torch.zeros(1, 3, 4)
    deltas[0, 0] = 5.0  # a large box error on the demoted anchor: it must not count
    out = model.losses_from_outputs(logits, deltas, anchors, targets)
    cls_targets = torch.zeros(1, 3, 3)
    cls_targets[0, 1, 2] = 1.0  # a1 is class 2; a0 and a2 are negatives for every class
    cls_sum = model.cls_loss(logits, cls_targets).sum()
    box_sum = model.box_loss(deltas[:, 1], box_ops.encode(anchors[1:2], gt[1:2])).sum()
    assert out["num_fg"] == 1 and box_sum > 0
    torch.testing.assert_close(out["loss_cls"], cls_sum / 3)  # 1 fg + 1 demoted + 1
    torch.testing.assert_close(out["loss_box"], box_sum / 3)
    model.loss_cfg.normalizer = "per_image"  # detectron2's count (after the reset): 1 fg
    out = model.losses_from_outputs(logits, deltas, anchors, targets)
    torch.testing.assert_close(out["loss_cls"], cls_sum / 1)
