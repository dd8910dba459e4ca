"""Anchor to ground-truth assignment (paper section 4, 'Anchors').

An anchor is foreground when its best IoU with a ground-truth box is >= ``fg_iou`` (0.5), background when it is
< ``bg_iou`` (0.4), and ignored in between. Low-quality matches (a GT whose best anchor is below ``fg_iou``):

- ``detectron`` (the paper's code, ``retinanet.py: _get_retinanet_blobs``): every anchor that ties for a GT's best
  IoU becomes foreground, then any anchor whose IoU is < ``bg_iou`` is set back to background. So a GT's best
  anchor in [0.4, 0.5) is foreground, below 0.4 it stays background.
- ``any`` (detectron2, torchvision): those best anchors are foreground whatever their IoU (if > 0).
- ``none``: thresholds only.

A low-quality anchor is matched to its own best GT (the argmax over GTs), as in all three codebases.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Label of an anchor matched to no GT box (background).
BACKGROUND = -1
#: Label of an anchor excluded from the classification loss.
IGNORE = -2


def match(iou: Tensor, valid: Tensor | None = None, *, fg_iou: float, bg_iou: float, low_quality: str) -> Tensor:
    """Match anchors to GT boxes for a batch of images at once.

    Args:
        iou: ``[N, M, R]`` IoU of M (padded) GT boxes with R anchors per image, or ``[M, R]`` for one image.
        valid: ``[N, M]`` (or ``[M]``) bool, False for padding GT slots; None means all valid.
        fg_iou, bg_iou: the thresholds (0.5, 0.4 in the paper).
        low_quality: ``detectron``, ``any`` or ``none`` (see module docstring).

    Returns:
        ``[N, R]`` (or ``[R]``) int64: the matched GT index (>= 0), :data:`BACKGROUND` or :data:`IGNORE`; every
        anchor is background when there is no GT (M = 0), and the result is empty when there are no anchors
        (R = 0).
    """
    single = iou.dim() == 2
    if single:
        iou = iou.unsqueeze(0)
        valid = None if valid is None else valid.unsqueeze(0)
    n, m, r = iou.shape
    if valid is None:
        valid = torch.ones(n, m, dtype=torch.bool, device=iou.device)
    if m == 0 or r == 0:  # no GT: all background; no anchors: [N, 0] (no GT has a best anchor to take)
        out = torch.full((n, r), BACKGROUND, dtype=torch.long, device=iou.device)
        return out[0] if single else out
    # Padding slots get IoU -1 so they never win a max.
    iou = torch.where(valid.unsqueeze(-1), iou, torch.full_like(iou, -1.0))
    best_iou, best_gt = iou.max(dim=1)  # [N, R]
    labels = torch.full_like(best_gt, IGNORE)
    fg = best_iou >= fg_iou
    if low_quality != "none":
        gt_best = iou.max(dim=2, keepdim=True).values  # [N, M, 1]
        is_best = (iou == gt_best) & (gt_best > 0) & valid.unsqueeze(-1)
        fg = fg | is_best.any(dim=1)
    if low_quality == "any":
        labels = torch.where(best_iou < bg_iou, torch.full_like(labels, BACKGROUND), labels)
        labels = torch.where(fg, best_gt, labels)
    elif low_quality in ("detectron", "none"):
        labels = torch.where(fg, best_gt, labels)
        labels = torch.where(best_iou < bg_iou, torch.full_like(labels, BACKGROUND), labels)
    else:
        raise ValueError(f"matcher.low_quality: unknown policy {low_quality!r}")
    return labels[0] if single else labels
