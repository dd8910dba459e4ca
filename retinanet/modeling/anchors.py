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
from collections import OrderedDict

import torch
from torch import Tensor

from retinanet.config import AnchorConfig

#: Strides of P3..P7.
STRIDES: tuple[int, ...] = (8, 16, 32, 64, 128)

CACHED_SIZES = 16
"""Padded batch sizes whose anchors an :class:`AnchorGenerator` keeps (least recently used dropped first). COCO
batches at the paper's scale pad to a handful of shapes (aspect grouping: 640 x 896, 896 x 640, ...); 16 keeps all
of them (122,760 anchors at 640 x 1024 are 2 MB each in float32)."""


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

    Anchors are built on the device that asks for them (no host-to-device copy per batch, which on a GPU would
    wait for the queued work) and cached per (feature shapes, device, dtype): the :data:`CACHED_SIZES` most
    recently used padded sizes. A cached tensor is returned as is; callers must not modify it.

    Args (keyword-only):
        sizes: base anchor side (sqrt of area) on P3..P7 (32..512 in the paper).
        num_scales: octave scales per level, 2^(k / num_scales) for k < num_scales (3).
        aspect_ratios: height / width ratios (1:2, 1:1, 2:1).
    """

    def __init__(self, *, sizes: list[float], num_scales: int, aspect_ratios: list[float]) -> None:
        self.cells = [cell_anchors(s, num_scales, aspect_ratios) for s in sizes]
        self._cells_on: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        self._cache: OrderedDict[tuple, Tensor] = OrderedDict()

    @property
    def num_anchors(self) -> int:
        """A, anchors per location."""
        return self.cells[0].shape[0]

    def __call__(self, feature_shapes: list[tuple[int, int]], device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> Tensor:
        """All anchors, levels P3..P7 concatenated, each level ordered (y, x, anchor).

        Args:
            feature_shapes: ``(H_l, W_l)`` of P3..P7.
            device, dtype: where and in which precision to build them (float32: box coordinates up to ~1333 px
                need it).

        Returns:
            ``[R, 4]`` xyxy with ``R = A * sum_l H_l W_l`` (the layout of the heads' flattened outputs), on
            ``device``; the same tensor for the same arguments while it stays cached.
        """
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        key = (tuple(tuple(s) for s in feature_shapes), device, dtype)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if (device, dtype) not in self._cells_on:  # once per device: the only host-to-device copy
            self._cells_on[device, dtype] = [c.to(device, dtype) for c in self.cells]
        levels = []
        for (h, w), stride, cell in zip(feature_shapes, STRIDES, self._cells_on[device, dtype], strict=True):
            ys = (torch.arange(h, dtype=dtype, device=device) + 0.5) * stride
            xs = (torch.arange(w, dtype=dtype, device=device) + 0.5) * stride
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            shifts = torch.stack((cx, cy, cx, cy), dim=-1).reshape(-1, 1, 4)
            levels.append((shifts + cell.reshape(1, -1, 4)).reshape(-1, 4))
        self._cache[key] = torch.cat(levels)
        if len(self._cache) > CACHED_SIZES:
            self._cache.popitem(last=False)
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


def build_anchor_generator(cfg: AnchorConfig) -> AnchorGenerator:
    """The anchor generator of a run's ``anchors`` config."""
    return AnchorGenerator(sizes=cfg.sizes, num_scales=cfg.num_scales, aspect_ratios=cfg.aspect_ratios)
