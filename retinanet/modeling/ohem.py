"""Online hard example mining (OHEM) for a one-stage detector: Table 1d's baseline (section 5.1, 'OHEM').

The paper: "each example is scored by its loss, non-maximum suppression (nms) is then applied, and a minibatch is
constructed with the highest-loss examples" [30]; the 'OHEM 1:3' variant (from SSD [21]) "after applying nms to all
examples, [constructs] the minibatch to enforce a 1:3 ratio between positives and negatives to help ensure each
minibatch has enough positives". Our reading, per image:

1. candidates: every anchor that is not ignored (positives and negatives together), ordered by loss, highest first;
   ties are broken by anchor index (lower first), so the result is deterministic; of these, the first
   :data:`NMS_CANDIDATES` and every positive after them (below);
2. greedy NMS over the candidates' anchor boxes at ``nms_thresh``, in that order;
3. plain OHEM (``pos_fraction=None``): the first ``batch`` survivors.
   OHEM 1:3 (``pos_fraction=0.25``): the minibatch of size ``batch`` reserves up to ``batch * pos_fraction``
   slots for the highest-loss surviving positives and fills the rest with the highest-loss surviving negatives
   (Fast R-CNN's fg fraction, which is also what 'batch size' means in Table 1d). With a typical image's few
   positives the minibatch has more than 3 negatives per positive; the number of positives is additionally capped
   at ``pos_fraction / (1 - pos_fraction)`` times the number of negatives, so a minibatch never has more than 1
   positive per 3 negatives even when negatives run short.

Greedy NMS in loss order only ever suppresses an anchor by higher-ranked survivors, so NMS over a prefix of the
order keeps exactly the survivors that full NMS keeps within that prefix. We therefore run NMS on a growing prefix
(x4 each time) until it holds enough survivors: the result equals NMS over all ~100k anchors (several seconds on a CPU)
at a small fraction of the cost when the highest-loss anchors suffice (plain OHEM: ~20 ms for 120k anchors on one
CPU core). OHEM 1:3 must also see every surviving positive when there are fewer than ``batch * pos_fraction`` of
them, so its prefix reaches the lowest-loss positive, often most of the anchors.

The cap. NMS never sees more than the :data:`NMS_CANDIDATES` (32,768) highest-loss anchors plus the positives ranked
below them (typically tens to a few hundred per COCO image), instead of all ~120k anchors of a padded 600 px image:
torchvision's NMS takes seconds on 120k boxes on a CPU, and on a GPU its kernel builds a 120k x 120k / 64-word
overlap mask (1.9 GB) that it copies to the host. The result is unchanged whenever the cap does not bind, which is
the case when the minibatch's anchors come from the top 32,768: plain OHEM needs B <= 512 survivors, and 32,768
anchors hold far more (the 32,768 highest-loss of the 122,760 anchors of a 640 x 1024 input keep 9,033 survivors of
NMS at .5 for random losses, and 4,465 when the loss is one smooth bump around a point, so the hard examples crowd
one region); OHEM 1:3 also needs its positives, and all of them are kept as candidates. Where the cap binds, the
only difference is in OHEM 1:3's positives ranked below it (easy ones: each has a lower loss than 32,768 other
anchors): full NMS could suppress one of them by a negative ranked between the cap and it, which is not a candidate
here; such a positive then joins the minibatch (and may suppress a later positive), where full NMS would have taken
the next surviving positive. Every anchor above the cap survives or not exactly as in full NMS (greedy NMS in loss
order: a prefix's survivors do not depend on what follows), so the negatives are full NMS's too, as long as enough
of them survive above the cap (the counts above), except that one more or one fewer positive leaves one fewer or one
more negative slot.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchvision.ops import nms

NMS_CANDIDATES = 32768
"""The highest-loss anchors that OHEM's NMS considers per image (plus every positive below them); see the module
docstring for why this does not change the minibatch where it does not bind."""


def _rank_order(anchor_loss: Tensor, candidates: Tensor) -> Tensor:
    """Indices of ``candidates`` (anchor indices, ascending) ordered by loss descending, ties by anchor index."""
    order = torch.sort(anchor_loss[candidates], descending=True, stable=True).indices
    return candidates[order]


def _capped(order: Tensor, labels: Tensor, cap: int) -> Tensor:
    """The NMS candidates: the first ``cap`` anchors of ``order`` and every positive (``labels >= 0``) after them,
    still in ``order``'s order. Shape ``[<= cap + number of positives]``."""
    if order.numel() <= cap:
        return order
    tail = order[cap:]
    return torch.cat([order[:cap], tail[labels[tail] >= 0]])


def _survivors(boxes: Tensor, order: Tensor, nms_thresh: float, enough: Callable[[Tensor, int], bool]) -> Tensor:
    """Anchor indices that survive greedy NMS over ``order`` (in that order), computed on the shortest prefix of
    256 * 4^k anchors for which ``enough(survivors, prefix_length)`` holds (or on all of ``order``)."""
    n = order.numel()
    size = 256
    while True:
        prefix = order[: min(size, n)]
        # Scores by rank (strictly decreasing) make torchvision's NMS follow our tie-broken order exactly.
        rank_score = torch.arange(prefix.numel(), 0, -1, dtype=torch.float32, device=boxes.device)
        kept = prefix[nms(boxes[prefix].float(), rank_score, nms_thresh)]
        if prefix.numel() == n or enough(kept, prefix.numel()):
            return kept
        size *= 4


def ohem_mask(anchor_loss: Tensor, anchor_boxes: Tensor, labels: Tensor, *, batch: int, nms_thresh: float,
              pos_fraction: float | None) -> Tensor:
    """The OHEM minibatch of one image.

    Args:
        anchor_loss: ``[R]`` loss of each anchor (e.g. its classification loss summed over the K classes).
        anchor_boxes: ``[R, 4]`` the anchors, xyxy.
        labels: ``[R]`` int: ``>= 0`` foreground class, ``-1`` background, ``-2`` ignored (never selected).
        batch: minibatch size B per image (``loss.ohem_batch``).
        nms_thresh: IoU threshold of the NMS over anchor boxes (``loss.ohem_nms``).
        pos_fraction: None for plain OHEM, or the largest share of positives (``0.25``: 'OHEM 1:3').

    Returns:
        ``[R]`` bool, True for the at most ``batch`` selected anchors.
    """
    if anchor_loss.shape != labels.shape or anchor_boxes.shape != (*labels.shape, 4) or labels.dim() != 1:
        raise ValueError(f"ohem_mask: expected anchor_loss [R], anchor_boxes [R, 4], labels [R]; got "
                         f"{tuple(anchor_loss.shape)}, {tuple(anchor_boxes.shape)}, {tuple(labels.shape)}")
    if batch < 1:
        raise ValueError(f"ohem_mask: batch must be >= 1, got {batch!r}")
    if pos_fraction is not None and not 0.0 <= pos_fraction <= 1.0:
        raise ValueError(f"ohem_mask: pos_fraction must be in [0, 1] or None, got {pos_fraction!r}")
    mask = torch.zeros_like(labels, dtype=torch.bool)
    candidates = torch.nonzero(labels != -2).squeeze(1)
    if candidates.numel() == 0:
        return mask
    order = _capped(_rank_order(anchor_loss.detach(), candidates), labels, NMS_CANDIDATES)
    boxes = anchor_boxes.detach()

    if pos_fraction is None:
        kept = _survivors(boxes, order, nms_thresh, lambda kept, _: kept.numel() >= batch)
        mask[kept[:batch]] = True
        return mask

    max_pos = int(batch * pos_fraction)
    pos_ranks = torch.nonzero(labels[order] >= 0).squeeze(1)
    after_last_pos = int(pos_ranks[-1]) + 1 if pos_ranks.numel() else 0  # prefix length holding every positive

    def enough(kept: Tensor, prefix_len: int) -> bool:
        pos = int((labels[kept] >= 0).sum())
        all_pos_seen = pos >= max_pos or prefix_len >= after_last_pos
        return all_pos_seen and kept.numel() - pos >= batch - min(pos, max_pos)

    kept = _survivors(boxes, order, nms_thresh, enough)
    is_pos = labels[kept] >= 0
    pos, neg = kept[is_pos], kept[~is_pos]
    num_pos = min(pos.numel(), max_pos)
    num_neg = min(neg.numel(), batch - num_pos)
    if pos_fraction < 1.0:
        num_pos = min(num_pos, int(num_neg * pos_fraction / (1.0 - pos_fraction) + 1e-9))
    mask[pos[:num_pos]] = True
    mask[neg[:num_neg]] = True
    return mask
