"""Box coding with the R-CNN parameterization (Girshick et al.; paper section 4, 'Box Regression Subnet').

Boxes are ``(x1, y1, x2, y2)`` in continuous pixel coordinates. Targets are class-agnostic with weights (1, 1, 1, 1),
as in the paper's code. Detectron1 measured widths as ``x2 - x1 + 1`` (integer pixel boxes); like detectron2 we use
continuous coordinates (``x2 - x1``), which differs by at most one pixel on box sides.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Largest log-scale change a decoded box may have (Detectron's ``log(1000 / 16)``); keeps exp() finite.
SCALE_CLAMP = math.log(1000.0 / 16)


def encode(anchors: Tensor, boxes: Tensor) -> Tensor:
    """Regression targets that turn ``anchors`` into ``boxes``.

    Args:
        anchors: ``[..., 4]`` xyxy with positive width and height.
        boxes: ``[..., 4]`` xyxy, broadcastable to ``anchors``.

    Returns:
        ``[..., 4]`` deltas ``(dx, dy, dw, dh)`` with ``dx = (x - xa) / wa``, ``dw = log(w / wa)``.
    """
    wa = anchors[..., 2] - anchors[..., 0]
    ha = anchors[..., 3] - anchors[..., 1]
    xa = anchors[..., 0] + 0.5 * wa
    ya = anchors[..., 1] + 0.5 * ha
    w = (boxes[..., 2] - boxes[..., 0]).clamp(min=1e-6)
    h = (boxes[..., 3] - boxes[..., 1]).clamp(min=1e-6)
    x = boxes[..., 0] + 0.5 * w
    y = boxes[..., 1] + 0.5 * h
    return torch.stack(((x - xa) / wa, (y - ya) / ha, torch.log(w / wa), torch.log(h / ha)), dim=-1)


def decode(deltas: Tensor, anchors: Tensor) -> Tensor:
    """Inverse of :func:`encode`, with ``dw, dh`` clamped to :data:`SCALE_CLAMP`.

    Args:
        deltas: ``[..., 4]``.
        anchors: ``[..., 4]`` xyxy, broadcastable to ``deltas``.

    Returns:
        ``[..., 4]`` xyxy boxes in the dtype of ``deltas``.
    """
    anchors = anchors.to(deltas.dtype)
    wa = anchors[..., 2] - anchors[..., 0]
    ha = anchors[..., 3] - anchors[..., 1]
    xa = anchors[..., 0] + 0.5 * wa
    ya = anchors[..., 1] + 0.5 * ha
    x = deltas[..., 0] * wa + xa
    y = deltas[..., 1] * ha + ya
    w = torch.exp(deltas[..., 2].clamp(max=SCALE_CLAMP)) * wa
    h = torch.exp(deltas[..., 3].clamp(max=SCALE_CLAMP)) * ha
    return torch.stack((x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h), dim=-1)


def clip(boxes: Tensor, height: Tensor | float, width: Tensor | float) -> Tensor:
    """Clip ``[..., 4]`` xyxy boxes to ``[0, width] x [0, height]``.

    ``height`` and ``width`` are scalars or tensors broadcastable to ``boxes.shape[:-1]`` (one size per image).
    """
    h = torch.as_tensor(height, dtype=boxes.dtype, device=boxes.device)
    w = torch.as_tensor(width, dtype=boxes.dtype, device=boxes.device)
    upper = torch.stack(torch.broadcast_tensors(w, h, w, h), dim=-1)
    return torch.minimum(boxes.clamp(min=0), upper)
