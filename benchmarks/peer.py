"""The peer: torchvision's ``RetinaNet`` set up to compute exactly what ours computes, with the same weights.

What is made equal (and checked by ``tests/test_benchmarks.py``):

- backbone: the same ResNet body and FPN modules (``BackboneWithFPN`` over the same torchvision ResNet with the
  same norm layer, P6/P7 from C5), our weights copied in, the same frozen layers;
- head: torchvision's ``RetinaNetHead`` with its 4-conv stacks cut to our ``head_convs`` (torchvision hard-codes 4)
  and our weights copied in; output layout (y, x, anchor) is the same;
- anchors: torchvision's generator with our cell anchors (ours are scale-major and centred at cell centres,
  torchvision's are ratio-major, rounded and centred at cell corners), so both produce the same anchors;
- matching and loss: ours runs with ``matcher.low_quality='any'`` (torchvision's ``allow_low_quality_matches``),
  ``loss.normalizer='per_image'`` (torchvision averages each image's loss / max(1, fg)) and ``loss.box='l1'``
  (torchvision's default ``bbox_reg_loss_type``); gamma 2, alpha 0.25, thresholds 0.5 / 0.4 on both;
- inference: score 0.05, top 1000 per level, NMS 0.5, 100 detections on both;
- input: both get the same normalized, padded batch tensor. torchvision's ``GeneralizedRCNNTransform`` (resize,
  normalize, pad, and rescaling the boxes back) is replaced by :class:`PassThroughTransform`: our data layer does
  that work outside the model, so neither side pays for it inside the timed step.
"""

from __future__ import annotations

import torchvision
from torch import Tensor, nn
from torchvision.models.detection import RetinaNet as TorchvisionRetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchors
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNetHead as TorchvisionHead
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from retinanet.config import RunConfig
from retinanet.modeling.anchors import STRIDES
from retinanet.modeling.backbone import STAGE_CHANNELS, _norm_layer
from retinanet.modeling.detector import RetinaNet


def comparable_config(cfg: RunConfig) -> RunConfig:
    """``cfg`` with the loss/matching choices torchvision hard-codes (see module docstring); everything else kept."""
    cfg.matcher.low_quality = "any"
    cfg.loss.normalizer = "per_image"
    cfg.loss.box = "l1"
    cfg.loss.cls, cfg.loss.gamma, cfg.loss.alpha = "focal", 2.0, 0.25
    cfg.loss.sampling = "all"
    cfg.matcher.fg_iou, cfg.matcher.bg_iou = 0.5, 0.4
    return cfg


class PassThroughTransform(nn.Module):
    """Stands in for ``GeneralizedRCNNTransform``: the batch tensor is already normalized and padded."""

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None
                ) -> tuple[ImageList, list[dict[str, Tensor]] | None]:
        return ImageList(images, [tuple(images.shape[-2:])] * images.shape[0]), targets

    def postprocess(self, result: list[dict[str, Tensor]], image_shapes: list, original_image_sizes: list
                    ) -> list[dict[str, Tensor]]:
        return result  # boxes stay in input pixels, as ours


def _head_stack(stack: nn.Sequential, num_convs: int) -> nn.Sequential:
    return nn.Sequential(*list(stack)[:num_convs])


def build_peer(ours: RetinaNet, cfg: RunConfig) -> TorchvisionRetinaNet:
    """torchvision's RetinaNet with ``ours``' architecture and a copy of its weights (``cfg``: ours' config)."""
    m = cfg.model
    c3, c4, c5 = STAGE_CHANNELS[m.depth]
    # Stock torchvision modules (ResNet body under IntermediateLayerGetter, FeaturePyramidNetwork with P6/P7 from
    # C5), not copies of ours: any speed-up inside our backbone must show up as a difference.
    resnet = torchvision.models.get_model(f"resnet{m.depth}", weights=None, norm_layer=_norm_layer(m.norm))
    backbone = BackboneWithFPN(resnet, {"layer2": "0", "layer3": "1", "layer4": "2"}, [c3, c4, c5], m.fpn_channels,
                               extra_blocks=LastLevelP6P7(c5, m.fpn_channels))
    backbone.fpn.extra_blocks.use_P5 = False  # P6 from C5, as ours (torchvision decides by channel counts)

    num_anchors = ours.anchors.num_anchors
    head = TorchvisionHead(m.fpn_channels, num_anchors, m.num_classes)
    head.classification_head.conv = _head_stack(head.classification_head.conv, m.head_convs)
    head.regression_head.conv = _head_stack(head.regression_head.conv, m.head_convs)

    anchors = TorchvisionAnchors(sizes=((1.0,),) * len(STRIDES), aspect_ratios=((1.0,),) * len(STRIDES))
    anchors.cell_anchors = [cell + stride / 2 for cell, stride in zip(ours.anchors.cells, STRIDES, strict=True)]

    t = cfg.test
    peer = TorchvisionRetinaNet(backbone, m.num_classes, anchor_generator=anchors, head=head,
                                score_thresh=t.score_thresh, nms_thresh=t.nms_thresh,
                                detections_per_img=t.detections_per_image, topk_candidates=t.topk_per_level,
                                fg_iou_thresh=cfg.matcher.fg_iou, bg_iou_thresh=cfg.matcher.bg_iou)
    peer.transform = PassThroughTransform()
    missing, unexpected = peer.load_state_dict(peer_state_dict(ours, m.head_convs), strict=False)
    if unexpected or any(not k.startswith("backbone.body.fc.") for k in missing):
        raise RuntimeError(f"peer weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for p, q in zip(ours.parameters(), peer.parameters(), strict=True):
        q.requires_grad_(p.requires_grad)
    return peer


def peer_key(key: str, head_convs: int) -> str | None:
    """torchvision's name for our state_dict entry ``key`` (None for ``fg_ema``, which the peer does not have)."""
    if key == "fg_ema":
        return None
    if key.startswith("backbone."):
        return key
    sub, idx, leaf = key.split(".")[1:]  # head.{cls,box}_subnet.<i>.{weight,bias}
    tv = "classification_head" if sub == "cls_subnet" else "regression_head"
    layer = int(idx) // 2
    if layer < head_convs:
        return f"head.{tv}.conv.{layer}.0.{leaf}"
    last = "cls_logits" if sub == "cls_subnet" else "bbox_reg"
    return f"head.{tv}.{last}.{leaf}"


def peer_state_dict(ours: RetinaNet, head_convs: int) -> dict[str, Tensor]:
    """Our state_dict under torchvision's names (parameter order is the same on both sides)."""
    return {name: value for key, value in ours.state_dict().items()
            if (name := peer_key(key, head_convs)) is not None}


def peer_losses(peer: TorchvisionRetinaNet, images: Tensor, targets: list[dict[str, Tensor]]) -> Tensor:
    """torchvision's training loss (classification + box regression) for a batch."""
    losses = peer(images, targets)
    return losses["classification"] + losses["bbox_regression"]


def ours_losses(model: RetinaNet, images: Tensor, targets: list[dict[str, Tensor]]) -> Tensor:
    losses = model(images, targets)
    return losses["loss_cls"] + losses["loss_box"]
