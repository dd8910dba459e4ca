"""Inference post-processing (paper section 4, 'Inference').

Per pyramid level: keep the top ``topk_per_level`` (1000) (anchor, class) pairs by score among those above
``score_thresh`` (0.05); decode their boxes; merge all levels; per-class NMS at ``nms_thresh`` (0.5); keep the
``detections_per_image`` (100) best. All images of a batch go through each step together: one ``topk`` per level,
one ``batched_nms`` call for the whole batch (classes of different images never suppress each other).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from retinanet.config import TestConfig
from retinanet.modeling import boxes as box_ops


def postprocess(
    logits: Tensor,
    deltas: Tensor,
    anchors: Tensor,
    level_sizes: list[int],
    image_sizes: list[tuple[int, int]],
    cfg: TestConfig,
) -> list[dict[str, Tensor]]:
    """Turn dense head outputs into detections.

    Args:
        logits: ``[N, R, K]`` classification logits.
        deltas: ``[N, R, 4]`` box deltas.
        anchors: ``[R, 4]`` xyxy anchors shared by the batch.
        level_sizes: anchors per level (P3..P7), summing to R.
        image_sizes: ``(h, w)`` of each image before padding; boxes are clipped to it.
        cfg: thresholds and counts.

    Returns:
        N dicts with ``boxes [D, 4]`` xyxy, ``scores [D]`` and ``labels [D]`` (int64 in [0, K)), sorted by
        decreasing score, ``D <= cfg.detections_per_image``.
    """
    n, _, k = logits.shape
    device = logits.device
    scores_t, anchor_t, labels_t, keep_t = _top_per_level(logits, level_sizes, cfg)
    img_t = torch.arange(n, device=device).unsqueeze(1).expand_as(anchor_t)
    scores_t, anchor_t, labels_t, img_t = scores_t[keep_t], anchor_t[keep_t], labels_t[keep_t], img_t[keep_t]

    sizes = torch.tensor(image_sizes, dtype=torch.float32, device=device).reshape(n, 2)
    boxes = box_ops.decode(deltas[img_t, anchor_t].float(), anchors[anchor_t])
    boxes = box_ops.clip(boxes, sizes[img_t, 0], sizes[img_t, 1])

    kept, counts = _nms_per_image(boxes, scores_t, labels_t, img_t, n, k, cfg)
    return [
        {"boxes": b, "scores": s, "labels": lab}
        for b, s, lab in zip(boxes[kept].split(counts), scores_t[kept].split(counts), labels_t[kept].split(counts),
                             strict=True)
    ]


def _top_per_level(logits: Tensor, level_sizes: list[int], cfg: TestConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The top ``topk_per_level`` (anchor, class) pairs of each level by score, levels concatenated: scores, anchor
    index and class ``[N, T]``, and whether each is above its level's score threshold (P7's may differ)."""
    k = logits.shape[2]
    scores, anchor_idx, labels, keep = [], [], [], []
    start = 0
    for level, size in enumerate(level_sizes):
        s = torch.sigmoid(logits[:, start:start + size].float()).flatten(1)  # [N, size * K]
        top_s, top_i = s.topk(min(cfg.topk_per_level, s.shape[1]), dim=1)
        last = level == len(level_sizes) - 1
        thresh = cfg.score_thresh_p7 if last and cfg.score_thresh_p7 is not None else cfg.score_thresh
        scores.append(top_s)
        anchor_idx.append(start + torch.div(top_i, k, rounding_mode="floor"))
        labels.append(top_i % k)
        keep.append(top_s > thresh)
        start += size
    return tuple(torch.cat(x, dim=1) for x in (scores, anchor_idx, labels, keep))


def _nms_per_image(boxes: Tensor, scores: Tensor, labels: Tensor, img: Tensor, n: int, k: int,
                   cfg: TestConfig) -> tuple[Tensor, list[int]]:
    """Per-class NMS of every image at once, then each image's ``detections_per_image`` best: the kept indices,
    grouped by image in decreasing score, and how many each of the N images keeps."""
    kept = batched_nms(boxes, scores, img * k + labels, cfg.nms_thresh)  # sorted by decreasing score
    order = torch.argsort(img[kept], stable=True)  # group by image, keep score order inside each image
    kept = kept[order]
    kept_img = img[kept]
    counts = torch.bincount(kept_img, minlength=n)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(kept.numel(), device=boxes.device) - first[kept_img]
    kept = kept[rank < cfg.detections_per_image]
    return kept, counts.clamp(max=cfg.detections_per_image).tolist()
