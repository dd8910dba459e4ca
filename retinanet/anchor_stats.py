"""Foreground / background anchor statistics of a dataset under a run's anchors and matcher.

``python -m retinanet anchor-stats --config RUN.yaml [--images N] [--out FILE.json]``

The paper's problem is the imbalance of ~100k anchors per image against a handful of foreground ones (section 1,
section 4: "the vast majority of anchors are easy negatives"). This measures it for a scale's data and anchors:
anchors per image, foreground / ignored / background anchors per image, the foreground share, and how many ground
truth boxes get no foreground anchor at all (objects the detector cannot learn to find: a sign that the anchor
sizes do not fit the objects).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from retinanet import atomic
from retinanet.anchors import feature_shapes
from retinanet.config import RunConfig, load
from retinanet.data import build_dataset, build_test_loader
from retinanet.matching import BACKGROUND, IGNORE
from retinanet.model import build_model


@torch.no_grad()
def anchor_statistics(cfg: RunConfig, *, num_images: int | None = None, train_split: bool = False) -> dict[str, Any]:
    """Counts over the first ``num_images`` images (all if None) of the validation (or training) split, resized as
    at test time (no flip, no jitter) and padded one image at a time."""
    model = build_model(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained="none")))
    dataset = build_dataset(cfg.data, train=train_split)
    loader = build_test_loader(cfg, dataset, batch_size=1)
    totals = dict.fromkeys(("images", "anchors", "foreground", "ignored", "background", "objects",
                            "objects_without_foreground"), 0)
    for images, targets, _ in loader:
        anchors = model.anchors(feature_shapes(*images.shape[-2:]))
        matched, _, _ = model.assign(anchors, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
        fg = matched >= 0
        totals["images"] += 1
        totals["anchors"] += matched.numel()
        totals["foreground"] += int(fg.sum())
        totals["ignored"] += int((matched == IGNORE).sum())
        totals["background"] += int((matched == BACKGROUND).sum())
        num_boxes = len(targets[0]["boxes"])
        totals["objects"] += num_boxes
        hit = torch.zeros(num_boxes, dtype=torch.bool)
        hit[matched[0][fg[0]]] = True
        totals["objects_without_foreground"] += int((~hit).sum())
        if num_images is not None and totals["images"] >= num_images:
            break
    n = max(totals["images"], 1)
    return {
        **totals,
        "anchors_per_image": totals["anchors"] / n,
        "foreground_per_image": totals["foreground"] / n,
        "objects_per_image": totals["objects"] / n,
        "foreground_fraction": totals["foreground"] / max(totals["anchors"], 1),
        "background_per_foreground": totals["background"] / max(totals["foreground"], 1),
        "objects_without_foreground_fraction": totals["objects_without_foreground"] / max(totals["objects"], 1),
    }


def add_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("anchor-stats", help="foreground/background anchor counts of a dataset",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="run config YAML")
    p.add_argument("--images", type=int, default=None, help="only the first N images")
    p.add_argument("--train", action="store_true", help="use the training split (default: validation)")
    p.add_argument("--out", default=None, help="also write the statistics to this JSON file")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    stats = anchor_statistics(load(args.config), num_images=args.images, train_split=args.train)
    text = json.dumps(stats, indent=1)
    print(text)
    if args.out:
        atomic.write_text(Path(args.out), text + "\n")
    return 0


