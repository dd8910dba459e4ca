"""Foreground / background anchor statistics of a dataset under a run's anchors and matcher, and its positive rate.

``python -m retinanet anchor-stats [--config RUN.yaml] [--set KEY=VALUE ...] [--annotations FILE.json] [--train]
[--images N] [--out FILE.json]``

The paper's problem is the imbalance of ~100k anchors per image against a handful of foreground ones (section 1;
section 3: "the extreme foreground-background class imbalance encountered during training of dense detectors").
The quantity that governs it is the **positive rate per classification output**: the classification subnet has K
sigmoid outputs per anchor (section 4, Fig. 3) and a foreground anchor makes exactly one of them positive, so for
one image

    rate per output = fg anchors / (anchors x K)        rate per anchor = fg anchors / anchors

(ignored anchors count in the denominator, background ones too). Both are reported two ways: the **mean over
images** of each image's rate (what the loss of one image sees; the number the report quotes) and **pooled** (sum of
fg anchors / sum of anchors, / K). They are equal when every image has the same size and differ on COCO, whose
images vary in size. COCO with RetinaNet: ~1e-5 per output (:data:`COCO_PUBLISHED`).

Also: anchors per image, foreground / ignored / background anchors per image, and how many ground-truth boxes get no
foreground anchor at all (objects the detector cannot learn to find: a sign that the anchor sizes do not fit the
objects).

Only the annotation file is read, never the images: image sizes come from its ``images[].width/height``, boxes go
through the data loader's box policy (:class:`retinanet.data.dataset.CocoDetection`; the training split also drops
images without a box, as training does), each image is resized as at test time (``data.min_size`` / ``max_size``, no
flip, no jitter) and padded alone to ``data.size_divisibility``, as a batch of one. So it runs on any COCO-format
annotation file without its images, e.g. COCO's with the paper's settings (RunConfig's defaults, the run config when
``--config`` is not given)::

    python -m retinanet anchor-stats --annotations data/coco/annotations/instances_val2017.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from retinanet import atomic
from retinanet.config import ConfigError, DataConfig, RunConfig, from_dict, load, merge, to_dict
from retinanet.data.dataset import CocoDetection, check_num_classes, resize_scale, resized_shape
from retinanet.modeling.anchors import feature_shapes
from retinanet.modeling.detector import RetinaNet, build_model
from retinanet.modeling.matching import BACKGROUND, IGNORE


@dataclass(frozen=True)
class PublishedRate:
    """A positive rate per classification output taken from the literature, with where it comes from."""

    value: float
    source: str


COCO_PUBLISHED = PublishedRate(
    value=1e-5,
    source="Chen et al., 'Is Heuristic Sampling Necessary in Training Deep Object Detectors?', IEEE TIP 2021 "
           "(arXiv:1909.04868): their 'optimal bias initialization' sets the classifier prior to the positive rate, "
           "and their RetinaNet R-50-FPN COCO config sets PRIOR_PROB 1e-5 (github.com/ChenJoya/sampling-free, "
           "configs/sampling_free/retinanet_R_50_FPN_1x.yaml)",
)
"""COCO's positive rate per classification output with RetinaNet, as published. The study quotes it wherever COCO's
own annotations are not at hand to measure the rate with this command (``analysis/imbalance.py``)."""


def split_annotations(cfg: RunConfig, train_split: bool) -> Path:
    """The annotation file of the run's training or validation split (``data.*_annotations`` under ``data.root``
    unless absolute)."""
    path = Path(cfg.data.train_annotations if train_split else cfg.data.val_annotations)
    return path if path.is_absolute() else Path(cfg.data.root) / path


def _rates(foreground: list[int], anchors: list[int], num_classes: int) -> dict[str, dict[str, float]]:
    """Per-anchor and per-output positive rates: the mean over images of each image's rate, and pooled."""
    n, total = len(foreground), sum(anchors)
    per_image = [f / a for f, a in zip(foreground, anchors) if a > 0]
    mean = sum(per_image) / len(per_image) if per_image else 0.0
    pooled = sum(foreground) / total if total else 0.0
    return {"per_anchor": {"mean_over_images": mean, "pooled": pooled, "images": n},
            "per_output": {"mean_over_images": mean / num_classes, "pooled": pooled / num_classes, "images": n}}


def _match_image(model: RetinaNet, dataset: CocoDetection, index: int,
                 data: DataConfig) -> tuple[Tensor, np.ndarray]:
    """Image ``index`` resized as at test time and padded alone: each anchor's match ``[R]`` (GT index, BACKGROUND
    or IGNORE) and the image's boxes ``[M, 4]`` in the original pixels."""
    info = dataset.coco.imgs[dataset.image_ids[index]]
    scale = resize_scale(info["height"], info["width"], data.min_size, data.max_size)
    height, width = resized_shape(info["height"], info["width"], scale)
    div = data.size_divisibility
    anchors = model.anchors(feature_shapes(math.ceil(height / div) * div, math.ceil(width / div) * div))
    boxes, labels = dataset.original_boxes(index)
    target = {"boxes": torch.from_numpy(boxes).clone() * scale, "labels": torch.from_numpy(labels).clone()}
    return model.criterion.match(anchors, [target]).matched[0], boxes


@torch.no_grad()
def anchor_statistics(cfg: RunConfig, *, num_images: int | None = None, train_split: bool = False,
                      annotations: str | Path | None = None) -> dict[str, Any]:
    """Counts and positive rates over the first ``num_images`` images (all if None) of the validation (or training)
    split, or of the COCO-format file ``annotations``; K = ``model.num_classes``, which must be the file's category
    count. Keys: ``annotation_file``, ``split``, ``num_classes``, the totals (``images``, ``anchors``,
    ``foreground``, ``ignored``, ``background``, ``objects``, ``objects_without_foreground``), per-image means,
    ``foreground_fraction`` (= the pooled rate per anchor) and ``positive_rate`` (:func:`_rates`)."""
    if num_images is not None and num_images < 1:
        raise ConfigError(f"anchor-stats: --images {num_images} must be >= 1")
    path = Path(annotations) if annotations is not None else split_annotations(cfg, train_split)
    data = cfg.data
    dataset = CocoDetection(path.parent, path, min_sizes=[data.min_size], max_size=data.max_size, hflip=False,
                            pixel_mean=data.pixel_mean, pixel_std=data.pixel_std, train=train_split,
                            check_images=False)
    check_num_classes(dataset, cfg.model.num_classes)
    model = build_model(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained="none")))
    totals = dict.fromkeys(("images", "anchors", "foreground", "ignored", "background", "objects",
                            "objects_without_foreground"), 0)
    fg_per_image: list[int] = []
    anchors_per_image: list[int] = []
    count = len(dataset) if num_images is None else min(num_images, len(dataset))
    for index in range(count):
        matched, boxes = _match_image(model, dataset, index, data)
        fg = matched >= 0
        fg_per_image.append(int(fg.sum()))
        anchors_per_image.append(matched.numel())
        totals["images"] += 1
        totals["anchors"] += matched.numel()
        totals["foreground"] += fg_per_image[-1]
        totals["ignored"] += int((matched == IGNORE).sum())
        totals["background"] += int((matched == BACKGROUND).sum())
        totals["objects"] += len(boxes)
        hit = torch.zeros(len(boxes), dtype=torch.bool)
        hit[matched[fg]] = True
        totals["objects_without_foreground"] += int((~hit).sum())
    n = max(totals["images"], 1)
    return {
        "annotation_file": str(path),
        "split": "train" if train_split else "val",
        "num_classes": cfg.model.num_classes,
        "min_size": data.min_size,
        "max_size": data.max_size,
        **totals,
        "anchors_per_image": totals["anchors"] / n,
        "foreground_per_image": totals["foreground"] / n,
        "objects_per_image": totals["objects"] / n,
        "foreground_fraction": totals["foreground"] / max(totals["anchors"], 1),
        "background_per_foreground": totals["background"] / max(totals["foreground"], 1),
        "objects_without_foreground_fraction": totals["objects_without_foreground"] / max(totals["objects"], 1),
        "positive_rate": _rates(fg_per_image, anchors_per_image, cfg.model.num_classes),
    }


def summary(stats: dict[str, Any]) -> str:
    """The printed lines: the rates per anchor and per output (mean over images and pooled) beside COCO's."""
    rate = stats["positive_rate"]
    per_output = rate["per_output"]["mean_over_images"]
    ratio = f"{per_output / COCO_PUBLISHED.value:.3g}x COCO's" if per_output > 0 else "no foreground anchor"
    return "\n".join([
        f"anchor-stats: {stats['images']} images of {stats['annotation_file']} ({stats['split']} split), "
        f"K = {stats['num_classes']} classes, {stats['anchors_per_image']:.0f} anchors and "
        f"{stats['foreground_per_image']:.2f} foreground anchors per image",
        f"positive rate per anchor (fg / anchors): {rate['per_anchor']['mean_over_images']:.3g} mean over images, "
        f"{rate['per_anchor']['pooled']:.3g} pooled",
        f"positive rate per classification output (fg / (anchors x K)): {per_output:.3g} mean over images, "
        f"{rate['per_output']['pooled']:.3g} pooled; {ratio}",
        f"COCO with RetinaNet: ~{COCO_PUBLISHED.value:g} per output, published ({COCO_PUBLISHED.source})",
    ])


def add_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("anchor-stats", help="foreground/background anchor counts and positive rates",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="run config YAML (default: the paper's settings, RunConfig())")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. model.num_classes=6 data.min_size=128")
    p.add_argument("--annotations", default=None,
                   help="a COCO-format annotation file (default: the config's split under data.root); "
                        "its images are not needed")
    p.add_argument("--images", type=int, default=None, help="only the first N images")
    p.add_argument("--train", action="store_true",
                   help="the training split and its box policy (images without a box dropped); default: validation")
    p.add_argument("--out", default=None, help="also write the statistics to this JSON file")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from retinanet.config_parsing import parse_overrides

    overrides = parse_overrides(args.overrides)
    if args.config:
        cfg = load(args.config, overrides)
    else:
        cfg = from_dict(merge(to_dict(RunConfig()), overrides), source="paper defaults with --set")
    stats = anchor_statistics(cfg, num_images=args.images, train_split=args.train, annotations=args.annotations)
    text = json.dumps(stats, indent=1)
    print(text)
    print(summary(stats), file=sys.stderr)
    if args.out:
        atomic.write_text(Path(args.out), text + "\n")
    return 0
