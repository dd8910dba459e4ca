"""A tiny dataset in COCO 2017's exact layout, for the paper rehearsal (tests/test_rehearsal.py, docs/study.md).

``ROOT/train2017/*.jpg``, ``ROOT/val2017/*.jpg``, ``ROOT/annotations/instances_{train,val}2017.json``: the paths
of RunConfig's ``data`` defaults. The annotation files list COCO's 80 categories with their real ids (1..90 with
COCO's ten gaps) and names, and use ids from across that range, including ones next to a gap; each split has
crowd boxes (``iscrowd: 1``, with a segmentation as COCO's crowd annotations have), which training drops and
COCOeval ignores. Image file names are COCO's (12-digit zero-padded id, ``.jpg``).

Each image is noise with a few solid rectangles whose colour depends on the category, so a detector has something
to learn; nothing here is meant to be learnt in a rehearsal's few iterations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

COCO_CATEGORIES: tuple[tuple[int, str, str], ...] = (
    (1, "person", "person"), (2, "bicycle", "vehicle"), (3, "car", "vehicle"), (4, "motorcycle", "vehicle"),
    (5, "airplane", "vehicle"), (6, "bus", "vehicle"), (7, "train", "vehicle"), (8, "truck", "vehicle"),
    (9, "boat", "vehicle"), (10, "traffic light", "outdoor"), (11, "fire hydrant", "outdoor"),
    (13, "stop sign", "outdoor"), (14, "parking meter", "outdoor"), (15, "bench", "outdoor"), (16, "bird", "animal"),
    (17, "cat", "animal"), (18, "dog", "animal"), (19, "horse", "animal"), (20, "sheep", "animal"),
    (21, "cow", "animal"), (22, "elephant", "animal"), (23, "bear", "animal"), (24, "zebra", "animal"),
    (25, "giraffe", "animal"), (27, "backpack", "accessory"), (28, "umbrella", "accessory"),
    (31, "handbag", "accessory"), (32, "tie", "accessory"), (33, "suitcase", "accessory"), (34, "frisbee", "sports"),
    (35, "skis", "sports"), (36, "snowboard", "sports"), (37, "sports ball", "sports"), (38, "kite", "sports"),
    (39, "baseball bat", "sports"), (40, "baseball glove", "sports"), (41, "skateboard", "sports"),
    (42, "surfboard", "sports"), (43, "tennis racket", "sports"), (44, "bottle", "kitchen"),
    (46, "wine glass", "kitchen"), (47, "cup", "kitchen"), (48, "fork", "kitchen"), (49, "knife", "kitchen"),
    (50, "spoon", "kitchen"), (51, "bowl", "kitchen"), (52, "banana", "food"), (53, "apple", "food"),
    (54, "sandwich", "food"), (55, "orange", "food"), (56, "broccoli", "food"), (57, "carrot", "food"),
    (58, "hot dog", "food"), (59, "pizza", "food"), (60, "donut", "food"), (61, "cake", "food"),
    (62, "chair", "furniture"), (63, "couch", "furniture"), (64, "potted plant", "furniture"),
    (65, "bed", "furniture"), (67, "dining table", "furniture"), (70, "toilet", "furniture"),
    (72, "tv", "electronic"), (73, "laptop", "electronic"), (74, "mouse", "electronic"),
    (75, "remote", "electronic"), (76, "keyboard", "electronic"), (77, "cell phone", "electronic"),
    (78, "microwave", "appliance"), (79, "oven", "appliance"), (80, "toaster", "appliance"),
    (81, "sink", "appliance"), (82, "refrigerator", "appliance"), (84, "book", "indoor"), (85, "clock", "indoor"),
    (86, "vase", "indoor"), (87, "scissors", "indoor"), (88, "teddy bear", "indoor"), (89, "hair drier", "indoor"),
    (90, "toothbrush", "indoor"),
)
"""COCO 2017's 80 detection categories: (id, name, supercategory), as in ``instances_*2017.json``."""

USED_IDS = (1, 3, 11, 13, 25, 27, 44, 46, 67, 70, 82, 84, 90)
"""Category ids the boxes use: both ends of 1..90 and the ids on either side of COCO's gaps (12, 26, 45, 66/68/69,
71, 83), where a label mapping that assumed contiguous ids would go wrong."""

SPLITS = {"train": "train2017", "val": "val2017"}


def _colour(category_id: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(1000 + category_id)
    return tuple(int(v) for v in rng.integers(0, 256, size=3))


def write_split(root: Path, split: str, *, num_images: int, size_range: tuple[int, int], seed: int,
                first_id: int) -> dict[str, Any]:
    """Write ``root/<split>2017/*.jpg`` and ``root/annotations/instances_<split>2017.json``; return the JSON."""
    rng = np.random.default_rng(seed)
    folder = SPLITS[split]
    (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "info": {"description": f"COCO 2017 layout rehearsal ({split})", "version": "1.0", "year": 2017},
        "licenses": [{"id": 1, "name": "CC0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
        "images": [], "annotations": [],
        "categories": [{"id": c, "name": n, "supercategory": s} for c, n, s in COCO_CATEGORIES],
    }
    for i in range(num_images):
        image_id = first_id + 7 * i  # COCO's ids are sparse too
        h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
        pixels = rng.integers(80, 170, size=(h, w, 3)).astype(np.uint8)
        for k in range(int(rng.integers(2, 4))):
            cat = USED_IDS[(i * 3 + k) % len(USED_IDS)]
            bw = int(rng.integers(12, max(13, w // 2)))
            bh = int(rng.integers(12, max(13, h // 2)))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            pixels[y:y + bh, x:x + bw] = _colour(cat)
            data["annotations"].append({
                "id": len(data["annotations"]) + 1 + 100000 * (split == "val"), "image_id": image_id,
                "category_id": cat, "bbox": [float(x), float(y), float(bw), float(bh)], "area": float(bw * bh),
                "iscrowd": 0, "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]})
        if i % 3 == 1:  # a crowd region (COCO: RLE-encoded, with iscrowd 1)
            cw, ch = w // 3, h // 3
            counts = [0]  # column-major runs of 0s and 1s: the top-left cw x ch corner
            for _ in range(cw):
                counts += [ch, h - ch]
            counts[-1] += (w - cw) * h
            data["annotations"].append({
                "id": len(data["annotations"]) + 1 + 100000 * (split == "val"), "image_id": image_id,
                "category_id": 1, "bbox": [0.0, 0.0, float(cw), float(ch)], "area": float(cw * ch), "iscrowd": 1,
                "segmentation": {"counts": counts, "size": [h, w]}})
        file_name = f"{image_id:012d}.jpg"
        Image.fromarray(pixels).save(root / folder / file_name, quality=95)
        data["images"].append({"id": image_id, "file_name": file_name, "height": h, "width": w, "license": 1})
    (root / "annotations" / f"instances_{folder}.json").write_text(json.dumps(data))
    return data


def write_coco2017(root: str | Path, *, train: int = 8, val: int = 4, size_range: tuple[int, int] = (64, 96),
                   seed: int = 0) -> dict[str, dict[str, Any]]:
    """A tiny COCO 2017 under ``root``: ``train`` and ``val`` images of ``size_range`` pixels per side; returns
    each split's annotation JSON."""
    root = Path(root)
    return {"train": write_split(root, "train", num_images=train, size_range=size_range, seed=seed, first_id=9),
            "val": write_split(root, "val", num_images=val, size_range=size_range, seed=seed + 1, first_id=139)}
