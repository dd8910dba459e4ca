"""Anchors on the feature pyramid (paper section 4, 'Anchors'; Table 1c).

On level P_l (stride 2^l, l = 3..7) each location carries ``num_scales x len(aspect_ratios)`` anchors of area
``(size_l * 2^(k / num_scales))^2`` for k < num_scales, with height / width = ratio. The paper uses sizes
32..512 on P3..P7, scales {2^0, 2^(1/3), 2^(2/3)} and ratios {1:2, 1:1, 2:1}: A = 9 anchors per location.
All anchors are kept, also those that cross the image border (the paper's code does not drop them).

Anchor centres sit at the centre of their feature cell, ``((x + 0.5) * stride, (y + 0.5) * stride)``, like Detectron's
``(stride - 1) / 2`` in its integer-pixel convention.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from retinanet.config import AnchorConfig

#: Strides of P3..P7.
STRIDES: tuple[int, ...] = (8, 16, 32, 64, 128)


def cell_anchors(size: float, num_scales: int, aspect_ratios: list[float]) -> Tensor:
    """The ``A = num_scales * len(aspect_ratios)`` anchors of one location centred on (0, 0).

    Returns:
        ``[A, 4]`` xyxy, ordered scale-major (all ratios of scale 0 first), as Detectron orders them.
    """
    out = []
    for k in range(num_scales):
        side = size * 2.0 ** (k / num_scales)
        for ratio in aspect_ratios:
            w = side / math.sqrt(ratio)
            h = side * math.sqrt(ratio)
            out.append((-w / 2, -h / 2, w / 2, h / 2))
    return torch.tensor(out, dtype=torch.float32)


class AnchorGenerator:
    """Anchors for every level of a padded batch (all images of a batch share the padded size).

    Args:
        cfg: the run's :class:`~retinanet.config.AnchorConfig`.
    """

    def __init__(self, cfg: AnchorConfig) -> None:
        self.cells = [cell_anchors(s, cfg.num_scales, cfg.aspect_ratios) for s in cfg.sizes]
        self._cache: dict[tuple, Tensor] = {}

    @property
    def num_anchors(self) -> int:
        """A, anchors per location."""
        return self.cells[0].shape[0]

    def __call__(self, feature_shapes: list[tuple[int, int]], device: torch.device | str = "cpu") -> Tensor:
        """All anchors, levels P3..P7 concatenated, each level ordered (y, x, anchor).

        Args:
            feature_shapes: ``(H_l, W_l)`` of P3..P7.

        Returns:
            ``[R, 4]`` xyxy with ``R = A * sum_l H_l W_l`` (the layout of the heads' flattened outputs).
        """
        key = (tuple(feature_shapes), str(device))
        if key not in self._cache:
            levels = []
            for (h, w), stride, cell in zip(feature_shapes, STRIDES, self.cells, strict=True):
                ys = (torch.arange(h, dtype=torch.float32) + 0.5) * stride
                xs = (torch.arange(w, dtype=torch.float32) + 0.5) * stride
                cy, cx = torch.meshgrid(ys, xs, indexing="ij")
                shifts = torch.stack((cx, cy, cx, cy), dim=-1).reshape(-1, 1, 4)
                levels.append((shifts + cell.reshape(1, -1, 4)).reshape(-1, 4))
            self._cache = {key: torch.cat(levels).to(device)}  # one padded size at a time is enough
        return self._cache[key]

    def level_sizes(self, feature_shapes: list[tuple[int, int]]) -> list[int]:
        """Number of anchors on each level, in the order of :meth:`__call__`."""
        return [h * w * self.num_anchors for h, w in feature_shapes]


def feature_shapes(height: int, width: int) -> list[tuple[int, int]]:
    """``(H_l, W_l)`` of P3..P7 for a padded input of ``height x width`` (stride-2 convs round up)."""
    shapes = []
    for stride in STRIDES:
        shapes.append((math.ceil(height / stride), math.ceil(width / stride)))
    return shapes
