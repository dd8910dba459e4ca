"""RetinaNet (paper section 4): backbone -> dense heads -> (anchors, matching, losses) or post-processing.

The model composes small collaborators built from the run config by :func:`build_model`; only that function reads
the config. Shapes: N images, R anchors per image (all levels), K classes, M ground-truth boxes per image (padded to
the batch maximum).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence
from torchvision.ops import box_iou

from retinanet.config import LossConfig, MatcherConfig, RunConfig, TestConfig
from retinanet.modeling import boxes as box_ops
from retinanet.modeling.anchors import AnchorGenerator
from retinanet.modeling.backbone import ResNetFPN
from retinanet.modeling.head import RetinaNetHead
from retinanet.modeling.losses import build_box_loss, build_classification_loss
from retinanet.modeling.matching import BACKGROUND, IGNORE, match_with_demoted
from retinanet.modeling.ohem import ohem_mask
from retinanet.modeling.postprocess import postprocess

Targets = list[dict[str, Tensor]]
ElementwiseLoss = Callable[[Tensor, Tensor], Tensor]


class RetinaNet(nn.Module):
    """The one-stage detector of Fig. 3.

    Args (keyword-only):
        backbone: images ``[N, 3, H, W]`` -> P3..P7 features.
        head: features -> logits ``[N, R, K]``, deltas ``[N, R, 4]``.
        anchors: the anchor generator.
        cls_loss: elementwise classification loss ``(logits, targets) -> [..]`` (FL, CE, FL*).
        box_loss: elementwise box loss ``(deltas, target_deltas) -> [..]`` (smooth L1, L1).
        matcher: IoU thresholds and the low-quality policy.
        loss: normalization and sampling settings.
        test: inference settings.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: RetinaNetHead,
        anchors: AnchorGenerator,
        cls_loss: ElementwiseLoss,
        box_loss: ElementwiseLoss,
        matcher: MatcherConfig,
        loss: LossConfig,
        test: TestConfig,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.anchors = anchors
        self.cls_loss = cls_loss
        self.box_loss = box_loss
        self.matcher = matcher
        self.loss_cfg = loss
        self.test_cfg = test
        # detectron2's moving average of the foreground count (loss.normalizer == "ema"); 100 as in detectron2.
        self.register_buffer("fg_ema", torch.tensor(100.0), persistent=True)

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def dense(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, list[int]]:
        """Head outputs and their anchors: logits ``[N, R, K]``, deltas ``[N, R, 4]``, anchors ``[R, 4]``, and the
        number of anchors on each level."""
        features = self.backbone(images)
        logits, deltas = self.head(features)
        shapes = [tuple(f.shape[-2:]) for f in features]
        return logits, deltas, self.anchors(shapes, images.device), self.anchors.level_sizes(shapes)

    def assign(self, anchors: Tensor, targets: Targets) -> tuple[Tensor, Tensor, Tensor]:
        """Match every anchor of every image at once.

        Returns:
            matched ``[N, R]`` (GT index, or BACKGROUND / IGNORE), the matched GT box ``[N, R, 4]`` and class
            ``[N, R]`` of each anchor (meaningful where matched >= 0).
        """
        return self.assign_with_demoted(anchors, targets)[:3]

    def assign_with_demoted(self, anchors: Tensor, targets: Targets) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`assign`, and the ``[N, R]`` bool mask of the anchors the ``detectron`` low-quality rule made
        foreground and sent back to background (:func:`retinanet.modeling.matching.match_with_demoted`)."""
        n = len(targets)
        m = max((len(t["boxes"]) for t in targets), default=0)
        if m == 0:
            gt_boxes = anchors.new_zeros(n, 0, 4)
            gt_labels = torch.zeros(n, 0, dtype=torch.long, device=anchors.device)
            valid = torch.zeros(n, 0, dtype=torch.bool, device=anchors.device)
        else:  # pack the targets into [N, M] (no per-image slice assignments)
            gt_boxes = pad_sequence([t["boxes"].to(anchors) for t in targets], batch_first=True)
            gt_labels = pad_sequence([t["labels"].long() for t in targets], batch_first=True).to(anchors.device)
            # built on the device (no host-to-device copy, which would wait for the queued work on a GPU)
            valid = pad_sequence([torch.ones(len(t["boxes"]), dtype=torch.bool, device=anchors.device)
                                  for t in targets], batch_first=True)
        iou = box_iou(gt_boxes.reshape(-1, 4), anchors).reshape(n, m, anchors.shape[0])
        matched, demoted = match_with_demoted(iou, valid, fg_iou=self.matcher.fg_iou, bg_iou=self.matcher.bg_iou,
                                              low_quality=self.matcher.low_quality)
        idx = matched.clamp(min=0)
        if m == 0:  # no GT in the whole batch: every anchor is background
            return matched, anchors.new_zeros(n, anchors.shape[0], 4), idx, demoted
        anchor_boxes = gt_boxes.gather(1, idx.unsqueeze(-1).expand(-1, -1, 4))
        anchor_labels = gt_labels.gather(1, idx)
        return matched, anchor_boxes, anchor_labels, demoted

    def forward(self, images: Tensor, targets: Targets | None = None) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Training: the loss dict of :meth:`losses`. Evaluation: :meth:`predict` over the full padded size."""
        if self.training:
            if targets is None:
                raise ValueError("RetinaNet.forward: targets are required in training mode")
            return self.losses(images, targets)
        return self.predict(images, [tuple(images.shape[-2:])] * images.shape[0])

    def losses(self, images: Tensor, targets: Targets) -> dict[str, Tensor]:
        """Classification and box losses of a batch, normalized (section 4.1, 'Focal Loss').

        The classification loss covers every anchor that is not ignored (``loss.sampling='all'``), or the OHEM
        minibatch of each image (``'ohem'``, Table 1d). Both losses are divided by the normalizer of
        ``loss.normalizer`` (``detectron``: the sum over the batch's images of fg anchors + 1, where fg counts the
        low-quality anchors sent back to background, as Detectron's ``fg_inds`` did).

        Returns:
            ``loss_cls``, ``loss_box`` (scalars; their sum is the training loss) and ``num_fg`` (fg anchors).
        """
        logits, deltas, anchors, _ = self.dense(images)
        return self.losses_from_outputs(logits, deltas, anchors, targets)

    def losses_from_outputs(self, logits: Tensor, deltas: Tensor, anchors: Tensor, targets: Targets
                            ) -> dict[str, Tensor]:
        """:meth:`losses` given the head outputs ``logits [N, R, K]``, ``deltas [N, R, 4]`` and ``anchors [R, 4]``
        (matching, targets and both losses, all images at once)."""
        matched, gt_boxes, gt_labels, demoted = self.assign_with_demoted(anchors, targets)
        fg = matched >= 0
        cls_targets = torch.zeros_like(logits, dtype=torch.float32)
        cls_targets.scatter_(2, gt_labels.unsqueeze(-1), fg.unsqueeze(-1).float())
        cls_per_anchor = self.cls_loss(logits.float(), cls_targets).sum(-1) * (matched != IGNORE)  # [N, R]
        box_targets = box_ops.encode(anchors.expand_as(gt_boxes), gt_boxes)
        box_per_anchor = self.box_loss(deltas.float(), box_targets).sum(-1) * fg  # [N, R]

        fg_per_image = fg.sum(dim=1).float()  # [N]
        norm = self.loss_cfg.normalizer
        # Detectron (_get_retinanet_blobs) counts fg_inds before it sends a GT's best anchors with IoU < bg_iou back
        # to background: its num_fg + 1 includes them, though they are labeled background and take no box loss.
        detectron_norm = (fg_per_image + demoted.sum(dim=1) + 1).sum()
        if norm == "detectron":
            loss_box = box_per_anchor.sum() / detectron_norm
        elif norm == "per_image":
            loss_box = (box_per_anchor.sum(1) / fg_per_image.clamp(min=1)).mean()
        elif norm == "ema":
            with torch.no_grad():
                m = self.loss_cfg.ema_momentum
                self.fg_ema.mul_(m).add_((1 - m) * fg_per_image.sum().clamp(min=1))
            loss_box = box_per_anchor.sum() / self.fg_ema
        else:
            raise ValueError(f"loss.normalizer: unknown normalizer {norm!r}")

        if self.loss_cfg.sampling == "ohem":
            selected = self._ohem(cls_per_anchor.detach(), anchors, matched, gt_labels)
            # OHEM averages the loss over its minibatch (Fast R-CNN / OHEM convention), not over fg anchors.
            loss_cls = (cls_per_anchor * selected).sum() / selected.sum().clamp(min=1)
        elif norm == "detectron":
            loss_cls = cls_per_anchor.sum() / detectron_norm
        elif norm == "per_image":
            loss_cls = (cls_per_anchor.sum(1) / fg_per_image.clamp(min=1)).mean()
        else:
            loss_cls = cls_per_anchor.sum() / self.fg_ema
        return {"loss_cls": loss_cls, "loss_box": loss_box, "num_fg": fg_per_image.sum()}

    def _ohem(self, per_anchor: Tensor, anchors: Tensor, matched: Tensor, gt_labels: Tensor) -> Tensor:
        """``[N, R]`` float mask of each image's OHEM minibatch (NMS over anchor boxes scored by loss, top B)."""
        labels = torch.where(matched >= 0, gt_labels, matched)
        masks = [
            ohem_mask(per_anchor[i], anchors, labels[i], batch=self.loss_cfg.ohem_batch,
                      nms_thresh=self.loss_cfg.ohem_nms, pos_fraction=self.loss_cfg.ohem_pos_fraction)
            for i in range(per_anchor.shape[0])  # NMS is per image
        ]
        return torch.stack(masks).float()

    @torch.no_grad()
    def predict(self, images: Tensor, image_sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        """Detections per image (see :func:`retinanet.modeling.postprocess.postprocess`), boxes in input pixels."""
        logits, deltas, anchors, level_sizes = self.dense(images)
        return postprocess(logits, deltas, anchors, level_sizes, image_sizes, self.test_cfg)

    @torch.no_grad()
    def anchor_outputs(self, images: Tensor, targets: Targets) -> dict[str, Tensor]:
        """Per-anchor logits and assignment, for the loss distributions of Fig. 4.

        Returns:
            ``logits [N, R, K]`` (float32) and ``labels [N, R]``: the GT class (>= 0) for fg anchors,
            BACKGROUND (-1) or IGNORE (-2).
        """
        logits, _, anchors, _ = self.dense(images)
        matched, _, gt_labels = self.assign(anchors, targets)
        return {"logits": logits.float(), "labels": torch.where(matched >= 0, gt_labels, matched)}


def build_model(cfg: RunConfig) -> RetinaNet:
    """RetinaNet for a run config (the only place that reads the model, anchor, matcher and loss configs)."""
    anchors = AnchorGenerator(cfg.anchors)
    return RetinaNet(
        backbone=ResNetFPN(cfg.model),
        head=RetinaNetHead(cfg.model, anchors.num_anchors),
        anchors=anchors,
        cls_loss=build_classification_loss(cfg.loss),
        box_loss=build_box_loss(cfg.loss),
        matcher=cfg.matcher,
        loss=cfg.loss,
        test=cfg.test,
    )


__all__ = ["BACKGROUND", "IGNORE", "RetinaNet", "build_model"]
