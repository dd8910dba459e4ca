"""Anchor to ground-truth assignment (paper section 4, 'Anchors').

An anchor is foreground when its best IoU with a ground-truth box is >= ``fg_iou`` (0.5), background when it is
< ``bg_iou`` (0.4), and ignored in between. Low-quality matches (a GT whose best anchor is below ``fg_iou``):

- ``detectron`` (the paper's code, ``retinanet.py: _get_retinanet_blobs``): every anchor that ties for a GT's best
  IoU becomes foreground, then any anchor whose IoU is < ``bg_iou`` is set back to background. So a GT's best
  anchor in [0.4, 0.5) is foreground, below 0.4 it stays background. Detectron counted its foreground anchors
  between the two steps, so its loss normalizer includes those sent back (:func:`match_with_demoted`).
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
    """The labels of :func:`match_with_demoted`."""
    return match_with_demoted(iou, valid, fg_iou=fg_iou, bg_iou=bg_iou, low_quality=low_quality)[0]


def match_with_demoted(iou: Tensor, valid: Tensor | None = None, *, fg_iou: float, bg_iou: float,
                       low_quality: str) -> tuple[Tensor, Tensor]:
    """Match anchors to GT boxes for a batch of images at once.

    Args:
        iou: ``[N, M, R]`` IoU of M (padded) GT boxes with R anchors per image, or ``[M, R]`` for one image.
        valid: ``[N, M]`` (or ``[M]``) bool, False for padding GT slots; None means all valid.
        fg_iou, bg_iou: the thresholds (0.5, 0.4 in the paper).
        low_quality: ``detectron``, ``any`` or ``none`` (see module docstring).

    Returns:
        ``[N, R]`` (or ``[R]``) int64: the matched GT index (>= 0), :data:`BACKGROUND` or :data:`IGNORE`; every
        anchor is background when there is no GT (M = 0), and the result is empty when there are no anchors
        (R = 0). And ``[N, R]`` (or ``[R]``) bool, the *demoted* anchors: a GT's best anchor that the ``detectron``
        rule made foreground and then sent back to background for an IoU < ``bg_iou`` (never under ``any`` or
        ``none``). Detectron's ``fg_inds`` holds them, so its normalizer ``num_fg + 1`` counts them although their
        label is background and they take no box loss.
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
        demoted = torch.zeros((n, r), dtype=torch.bool, device=iou.device)
        return (out[0], demoted[0]) if single else (out, demoted)
    # Padding slots get IoU -1 so they never win a max.
    iou = torch.where(valid.unsqueeze(-1), iou, torch.full_like(iou, -1.0))
    best_iou, best_gt = iou.max(dim=1)  # [N, R]
    labels = torch.full_like(best_gt, IGNORE)
    fg = best_iou >= fg_iou
    if low_quality != "none":
        gt_best = iou.max(dim=2, keepdim=True).values  # [N, M, 1]
        is_best = (iou == gt_best) & (gt_best > 0) & valid.unsqueeze(-1)
        fg = fg | is_best.any(dim=1)
    below = best_iou < bg_iou
    if low_quality == "any":
        labels = torch.where(below, torch.full_like(labels, BACKGROUND), labels)
        labels = torch.where(fg, best_gt, labels)
        demoted = torch.zeros_like(fg)
    elif low_quality in ("detectron", "none"):
        labels = torch.where(fg, best_gt, labels)
        labels = torch.where(below, torch.full_like(labels, BACKGROUND), labels)
        demoted = fg & below  # "none": fg needs IoU >= fg_iou >= bg_iou, so none
    else:
        raise ValueError(f"matcher.low_quality: unknown policy {low_quality!r}")
    return (labels[0], demoted[0]) if single else (labels, demoted)
