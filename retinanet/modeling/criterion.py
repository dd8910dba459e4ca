"""The training loss of a batch (paper section 4.1, 'Focal Loss'; Table 1d for OHEM), as DETR's ``SetCriterion``:
match every anchor to the ground truth, build the classification and box targets, count the normalizer once, and
apply both losses to the head outputs.

The classification loss covers every anchor that is not ignored (``sampling='all'``), or the OHEM minibatch of each
image (``'ohem'``); the box loss covers the foreground anchors. Both are divided by one normalizer
(:meth:`RetinaNetCriterion.normalization`): ``detectron``, the paper's code, is the sum over the batch's images of
(fg anchors + 1), where fg counts the low-quality anchors sent back to background, as Detectron's ``fg_inds`` did
(docs/detector.md); ``per_image`` and ``ema`` are detectron2's. OHEM averages its classification loss over its
minibatch instead.

Shapes: N images, R anchors per image (all levels), K classes, M ground-truth boxes per image (padded to the batch
maximum).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torchvision.ops import box_iou

from retinanet.config import RunConfig
from retinanet.modeling import boxes as box_ops
from retinanet.modeling.losses import build_box_loss, build_classification_loss
from retinanet.modeling.matching import IGNORE, match_with_demoted
from retinanet.modeling.ohem import ohem_mask

Targets = list[dict[str, Tensor]]
ElementwiseLoss = Callable[[Tensor, Tensor], Tensor]


class DenseOutputs(NamedTuple):
    """What the detector computes for a batch: its head outputs and their anchors."""

    logits: Tensor
    """``[N, R, K]`` classification logits."""
    deltas: Tensor
    """``[N, R, 4]`` box deltas (:func:`retinanet.modeling.boxes.encode`'s parameterization)."""
    anchors: Tensor
    """``[R, 4]`` the anchors, xyxy, shared by the batch's images (one padded size)."""
    level_sizes: list[int]
    """Anchors on each level P3..P7, in the order of R."""


class Matches(NamedTuple):
    """Each anchor's ground truth, ``[N, R]`` unless said otherwise (:meth:`RetinaNetCriterion.match`)."""

    matched: Tensor
    """The matched GT's index, or BACKGROUND / IGNORE (:mod:`retinanet.modeling.matching`)."""
    boxes: Tensor
    """``[N, R, 4]`` the matched GT's box (meaningful where ``matched >= 0``)."""
    classes: Tensor
    """The matched GT's class (meaningful where ``matched >= 0``)."""
    demoted: Tensor
    """bool: the anchors the ``detectron`` low-quality rule made foreground and sent back to background."""

    def labels(self) -> Tensor:
        """``[N, R]``: a foreground anchor's class, else BACKGROUND (-1) or IGNORE (-2)."""
        return torch.where(self.matched >= 0, self.classes, self.matched)


class RetinaNetCriterion:
    """Matching, targets, normalizer and both losses of a batch.

    Args (keyword-only):
        cls_loss: elementwise classification loss ``(logits, targets) -> [..]`` (FL, CE, FL*;
            :func:`retinanet.modeling.losses.build_classification_loss`).
        box_loss: elementwise box loss ``(deltas, target_deltas) -> [..]`` (smooth L1, L1).
        fg_iou, bg_iou, low_quality: the matcher's thresholds and low-quality policy (``matcher.*``).
        normalizer: ``detectron``, ``per_image`` or ``ema`` (``loss.normalizer``).
        ema_momentum: momentum of the ``ema`` normalizer's moving fg count.
        sampling: ``all`` or ``ohem`` (``loss.sampling``).
        ohem_batch, ohem_nms, ohem_pos_fraction: OHEM's minibatch per image, NMS threshold and largest share of
            positives (:func:`retinanet.modeling.ohem.ohem_mask`).

    The settings are plain attributes of the same names (``LossConfig``'s), read at every call.
    """

    def __init__(self, *, cls_loss: ElementwiseLoss, box_loss: ElementwiseLoss, fg_iou: float, bg_iou: float,
                 low_quality: str, normalizer: str, ema_momentum: float, sampling: str, ohem_batch: int,
                 ohem_nms: float, ohem_pos_fraction: float | None) -> None:
        self.cls_loss, self.box_loss = cls_loss, box_loss
        self.fg_iou, self.bg_iou, self.low_quality = fg_iou, bg_iou, low_quality
        self.normalizer, self.ema_momentum = normalizer, ema_momentum
        self.sampling, self.ohem_batch, self.ohem_nms, self.ohem_pos_fraction = (
            sampling, ohem_batch, ohem_nms, ohem_pos_fraction)

    def __call__(self, outputs: DenseOutputs, targets: Targets, *, fg_ema: Tensor) -> dict[str, Tensor]:
        """The losses of ``outputs`` against ``targets`` (per image ``boxes [M, 4]``, ``labels [M]``).

        ``fg_ema``: the ``ema`` normalizer's moving fg count, a scalar tensor updated in place (the model's buffer,
        so that checkpoints keep it with the weights).

        Returns:
            ``loss_cls``, ``loss_box`` (scalars; their sum is the training loss) and ``num_fg`` (fg anchors).
        """
        matches = self.match(outputs.anchors, targets)
        fg = matches.matched >= 0
        cls_per_anchor = self.classification_losses(outputs.logits, matches, fg)
        box_per_anchor = self.box_losses(outputs.deltas, outputs.anchors, matches, fg)
        fg_per_image = fg.sum(dim=1).float()  # [N]
        normalize = self.normalization(fg_per_image, matches.demoted, fg_ema)
        loss_box = normalize(box_per_anchor)
        if self.sampling == "ohem":
            selected = self.ohem(cls_per_anchor.detach(), outputs.anchors, matches)
            # OHEM averages the loss over its minibatch (Fast R-CNN / OHEM convention), not over fg anchors.
            loss_cls = (cls_per_anchor * selected).sum() / selected.sum().clamp(min=1)
        else:
            loss_cls = normalize(cls_per_anchor)
        return {"loss_cls": loss_cls, "loss_box": loss_box, "num_fg": fg_per_image.sum()}

    def match(self, anchors: Tensor, targets: Targets) -> Matches:
        """Match every anchor of every image at once (:func:`retinanet.modeling.matching.match_with_demoted` on the
        IoU of the targets, packed into ``[N, M]``, with the anchors)."""
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
        matched, demoted = match_with_demoted(iou, valid, fg_iou=self.fg_iou, bg_iou=self.bg_iou,
                                              low_quality=self.low_quality)
        idx = matched.clamp(min=0)
        if m == 0:  # no GT in the whole batch: every anchor is background
            return Matches(matched, anchors.new_zeros(n, anchors.shape[0], 4), idx, demoted)
        anchor_boxes = gt_boxes.gather(1, idx.unsqueeze(-1).expand(-1, -1, 4))
        return Matches(matched, anchor_boxes, gt_labels.gather(1, idx), demoted)

    def classification_losses(self, logits: Tensor, matches: Matches, fg: Tensor) -> Tensor:
        """``[N, R]``: each anchor's classification loss summed over the K classes against its one-hot target (all
        zeros for background), 0 for ignored anchors; computed in float32."""
        cls_targets = torch.zeros_like(logits, dtype=torch.float32)
        cls_targets.scatter_(2, matches.classes.unsqueeze(-1), fg.unsqueeze(-1).float())
        return self.cls_loss(logits.float(), cls_targets).sum(-1) * (matches.matched != IGNORE)

    def box_losses(self, deltas: Tensor, anchors: Tensor, matches: Matches, fg: Tensor) -> Tensor:
        """``[N, R]``: each foreground anchor's box loss summed over the 4 deltas, 0 elsewhere; in float32."""
        box_targets = box_ops.encode(anchors.expand_as(matches.boxes), matches.boxes)
        return self.box_loss(deltas.float(), box_targets).sum(-1) * fg

    def normalization(self, fg_per_image: Tensor, demoted: Tensor, fg_ema: Tensor) -> Callable[[Tensor], Tensor]:
        """How an ``[N, R]`` per-anchor loss becomes the batch's loss, counted once for both losses:

        - ``detectron``: its sum over the batch / sum over the images of (fg + demoted + 1). Detectron
          (``_get_retinanet_blobs``) counts ``fg_inds`` before it sends a GT's best anchors with IoU < bg_iou back to
          background: its ``num_fg + 1`` includes them, though they are labeled background and take no box loss.
        - ``per_image``: the mean over the images of its sum over the image / max(fg, 1).
        - ``ema``: its sum / the moving average of the batch's fg count (``fg_ema``, updated here, once per batch).
        """
        if self.normalizer == "detectron":
            count = (fg_per_image + demoted.sum(dim=1) + 1).sum()
            return lambda per_anchor: per_anchor.sum() / count
        if self.normalizer == "per_image":
            per_image = fg_per_image.clamp(min=1)
            return lambda per_anchor: (per_anchor.sum(1) / per_image).mean()
        if self.normalizer == "ema":
            with torch.no_grad():
                m = self.ema_momentum
                fg_ema.mul_(m).add_((1 - m) * fg_per_image.sum().clamp(min=1))
            return lambda per_anchor: per_anchor.sum() / fg_ema
        raise ValueError(f"loss.normalizer: unknown normalizer {self.normalizer!r}")

    def ohem(self, per_anchor: Tensor, anchors: Tensor, matches: Matches) -> Tensor:
        """``[N, R]`` float mask of each image's OHEM minibatch (NMS over anchor boxes scored by loss, top B)."""
        labels = matches.labels()
        masks = [
            ohem_mask(per_anchor[i], anchors, labels[i], batch=self.ohem_batch, nms_thresh=self.ohem_nms,
                      pos_fraction=self.ohem_pos_fraction)
            for i in range(per_anchor.shape[0])  # NMS is per image
        ]
        return torch.stack(masks).float()


def build_criterion(cfg: RunConfig) -> RetinaNetCriterion:
    """The criterion of a run config (``loss.*`` and ``matcher.*``)."""
    loss, matcher = cfg.loss, cfg.matcher
    return RetinaNetCriterion(
        cls_loss=build_classification_loss(loss), box_loss=build_box_loss(loss), fg_iou=matcher.fg_iou,
        bg_iou=matcher.bg_iou, low_quality=matcher.low_quality, normalizer=loss.normalizer,
        ema_momentum=loss.ema_momentum, sampling=loss.sampling, ohem_batch=loss.ohem_batch, ohem_nms=loss.ohem_nms,
        ohem_pos_fraction=loss.ohem_pos_fraction)
