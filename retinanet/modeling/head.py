"""Classification and box regression subnets (paper section 4, Fig. 3 (c), (d); section 4.1 'Initialization').

Each subnet is ``head_convs`` x (3x3 conv, C channels, ReLU) followed by a 3x3 conv to ``K * A`` (classification)
or ``4 * A`` (box) outputs; the two subnets share no parameters with each other but are shared across pyramid levels.
All convs are initialized N(0, 0.01) with bias 0, except the final classification bias ``-log((1 - pi) / pi)``, so
that every anchor starts with foreground confidence pi (0.01): this prior stops the flood of background anchors from
destabilizing the first iterations. ``cls_bias_init='zero'`` gives the plain init that diverges under CE (section 5.1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from retinanet.config import ModelConfig


def _subnet(channels: int, num_convs: int, out_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
    layers.append(nn.Conv2d(channels, out_channels, 3, padding=1))
    for m in layers:
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


def _flatten(x: Tensor, per_anchor: int) -> Tensor:
    """``[N, A * D, H, W]`` -> ``[N, H * W * A, D]`` (anchor order (y, x, a), as in
    :mod:`retinanet.modeling.anchors`)."""
    n, _, h, w = x.shape
    return x.view(n, -1, per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, per_anchor)


class RetinaNetHead(nn.Module):
    """Both subnets, applied to every pyramid level.

    Args (keyword-only):
        in_channels: C, the FPN's width (256 in the paper).
        num_anchors: A, anchors per location.
        num_classes: K.
        num_convs: 3x3 conv + ReLU layers before each subnet's output conv (4 in the paper).
        prior_prob: pi, the foreground confidence every anchor starts with (.01).
        bias_init: ``prior`` (the classification bias -log((1 - pi) / pi)) or ``zero``.
    """

    def __init__(self, *, in_channels: int, num_anchors: int, num_classes: int, num_convs: int = 4,
                 prior_prob: float = 0.01, bias_init: str = "prior") -> None:
        super().__init__()
        self.num_classes = num_classes
        self.cls_subnet = _subnet(in_channels, num_convs, num_classes * num_anchors)
        self.box_subnet = _subnet(in_channels, num_convs, 4 * num_anchors)
        if bias_init == "prior":
            nn.init.constant_(self.cls_subnet[-1].bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Returns class logits ``[N, R, K]`` and box deltas ``[N, R, 4]``, levels P3..P7 concatenated."""
        logits = torch.cat([_flatten(self.cls_subnet(f), self.num_classes) for f in features], dim=1)
        deltas = torch.cat([_flatten(self.box_subnet(f), 4) for f in features], dim=1)
        return logits, deltas


def build_head(cfg: ModelConfig, num_anchors: int) -> RetinaNetHead:
    """The head of a model config (``fpn_channels``, ``num_classes``, ``head_convs``, ``prior_prob``,
    ``cls_bias_init``) for ``num_anchors`` anchors per location."""
    return RetinaNetHead(in_channels=cfg.fpn_channels, num_anchors=num_anchors, num_classes=cfg.num_classes,
                         num_convs=cfg.head_convs, prior_prob=cfg.prior_prob, bias_init=cfg.cls_bias_init)
