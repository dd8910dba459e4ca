"""Tiny COCO-format datasets written by the engine tests themselves (independent of retinanet.synthetic.generator).

Each image is gray noise with 1-2 solid rectangles; the rectangle's color is its class (red -> category id 3,
blue -> 7: deliberately non-contiguous ids to exercise the label mapping).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from retinanet.config import RunConfig, from_dict, merge

CATEGORY_IDS = (3, 7)
COLORS = {3: (230, 40, 40), 7: (40, 60, 230)}


def write_coco(root: Path, *, num_images: int = 4, sizes: list[tuple[int, int]] | None = None, seed: int = 0,
               objects: int = 1, folder: str = "images", name: str = "instances.json") -> dict[str, Any]:
    """Write ``root/folder/*.png`` and ``root/annotations/name``; return the annotation dict.

    ``sizes``: (height, width) per image, default 64 x 64. Boxes are 18-34 px, inside the image.
    """
    rng = np.random.default_rng(seed)
    sizes = sizes or [(64, 64)] * num_images
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"images": [], "annotations": [],
                            "categories": [{"id": c, "name": f"class{c}"} for c in CATEGORY_IDS]}
    for i, (h, w) in enumerate(sizes):
        pixels = rng.integers(90, 160, size=(h, w, 3)).astype(np.uint8)
        for k in range(objects):
            cat = CATEGORY_IDS[(i + k) % len(CATEGORY_IDS)]
            bw, bh = (int(v) for v in rng.integers(18, min(34, w - 2, h - 2) + 1, size=2))
            x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            pixels[y:y + bh, x:x + bw] = COLORS[cat]
            data["annotations"].append({"id": len(data["annotations"]) + 1, "image_id": i + 1, "category_id": cat,
                                        "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0})
        file_name = f"{i:04d}.png"
        Image.fromarray(pixels).save(root / folder / file_name)
        data["images"].append({"id": i + 1, "file_name": file_name, "height": h, "width": w})
    (root / "annotations" / name).write_text(json.dumps(data))
    return copy.deepcopy(data)


def tiny_config(root: Path, overrides: dict | None = None) -> RunConfig:
    """A small, fast run config on ``root`` (train = val = the written split), CPU, one thread."""
    base = {
        "model": {"depth": 18, "fpn_channels": 32, "head_convs": 1, "pretrained": "none", "norm": "gn",
                  "freeze_at": 0, "num_classes": len(CATEGORY_IDS)},
        "anchors": {"sizes": [16.0, 32.0, 64.0, 128.0, 256.0]},
        "data": {"root": str(root), "train_images": "images", "train_annotations": "annotations/instances.json",
                 "val_images": "images", "val_annotations": "annotations/instances.json", "min_size": 64,
                 "max_size": 64, "size_divisibility": 64, "num_workers": 0, "aspect_grouping": False},
        "solver": {"base_lr": 0.01, "reference_batch": 2, "batch_size": 2, "images_per_process": 2,
                   "iterations": 4, "warmup_iters": 0, "checkpoint_period": 2, "log_period": 1},
        "device": "cpu",
        "threads": 1,
    }
    return from_dict(merge(base, overrides or {}))
