"""The embedded detection dataset: procedural shapes on cluttered, noisy backgrounds, written in COCO format.

It stands in for COCO at the ``mini`` and ``smoke`` scales (no download) and goes through exactly COCO's data path
(pycocotools, the same loader, the same evaluation). It is built to show the problem the paper studies:

- extreme foreground/background imbalance: a few objects per image (0 to ``max_objects``) against every anchor of
  the pyramid;
- objects at several scales: each object is drawn in COCO's small / medium / large bucket (32^2 and 96^2 px on a
  ~640x480 COCO image), the limits scaled by image area to this image size (:func:`area_thresholds`);
- K classes (:func:`class_names`): the 6 shapes of :data:`CLASSES` in any colour, or for K > 6 (up to COCO's 80)
  shape x hue family, each with random rotation, aspect ratio, colour (within its family) and texture;
- clutter and hard negatives: unannotated shapes that resemble the classes (:data:`DISTRACTORS`: a half disk next
  to the circle, an open arc next to the ring, a T next to the cross, ...), random strokes, smooth background
  colour fields and pixel noise.

Generation is deterministic: image ``i`` of split ``s`` depends only on (seed, s, i), PNGs are written with fixed
settings and the JSON with sorted keys, so the same seed gives the same bytes (with the same numpy and Pillow).

Layout written by :func:`make_dataset` (``python -m retinanet make-dataset``)::

    DIR/train/000001.png ...        DIR/annotations/instances_train.json
    DIR/val/000001.png ...          DIR/annotations/instances_val.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from retinanet.atomic import write_text
from retinanet.config import ConfigError
from retinanet.synthetic.scene import (
    CLASSES,
    DISTRACTORS,
    MAX_CLASSES,
    DatasetSpec,
    area_thresholds,
    class_names,
    num_families,
    render_image,
    scale_bucket,
)

__all__ = ["CLASSES", "DISTRACTORS", "MAX_CLASSES", "DatasetSpec", "area_thresholds", "categories", "class_names",
           "generate", "make_dataset", "preview", "render_image", "scale_bucket", "scale_counts", "spec_record"]
_PNG_COMPRESS_LEVEL = 1

RECORDED_IF_CHANGED = ("num_classes", "min_objects")
"""Spec fields added after the committed ``mini`` dataset: ``info.spec`` holds them only when they differ from their
defaults, so a dataset of the default settings keeps exactly the bytes it had (results/mini stay reproducible)."""


# ----------------------------------------------------------------------------------------------------------------
# COCO files


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index]))


def _write_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array, mode="RGB").save(path, format="PNG", compress_level=_PNG_COMPRESS_LEVEL, optimize=False)


def spec_record(spec: DatasetSpec) -> dict:
    """``info.spec`` of the annotation files: every generator setting (:data:`RECORDED_IF_CHANGED` only where it
    differs from its default)."""
    record = dataclasses.asdict(spec)
    for name in RECORDED_IF_CHANGED:
        if record[name] == getattr(DatasetSpec, name):
            del record[name]
    return record


def categories(num_classes: int) -> list[dict]:
    """COCO ``categories``: id 1..K, ``name`` (:func:`class_names`) and ``supercategory``: ``shape`` for the 6
    shape classes, the shape's name where the classes are shape x hue family."""
    names = class_names(num_classes)
    if not num_families(num_classes):
        return [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(names)]
    return [{"id": i + 1, "name": n, "supercategory": n.split("-")[0]} for i, n in enumerate(names)]


def scale_counts(coco: dict) -> dict[str, int]:
    """Number of annotations per scale bucket, with the dataset's own limits (``info.area_thresholds``)."""
    small, medium = coco["info"]["area_thresholds"]
    counts = {"small": 0, "medium": 0, "large": 0}
    for ann in coco["annotations"]:
        counts["small" if ann["area"] <= small else "medium" if ann["area"] <= medium else "large"] += 1
    return counts


def generate(
    out_dir: str | Path,
    *,
    seed: int,
    num_images: int,
    split: str = "train",
    image_size: int | None = None,
    spec: DatasetSpec | None = None,
) -> dict:
    """Write one split: ``out_dir/<split>/NNNNNN.png`` and ``out_dir/annotations/instances_<split>.json``.

    ``image_size`` overrides ``spec.image_size``. Image ``i`` depends only on (seed, split, i), so a larger
    ``num_images`` extends a split without changing its first images. Returns the COCO dict that was written:
    images (id 1..N, file_name, width, height), annotations (id, image_id, category_id, bbox [x, y, w, h], area = w*h,
    iscrowd 0), categories (:func:`categories`) and info (generator settings, :func:`spec_record`, and scale split).
    """
    spec = spec or DatasetSpec()
    if image_size is not None:
        spec = dataclasses.replace(spec, image_size=image_size)
    spec.validate()
    if num_images < 0:
        raise ConfigError(f"synthetic dataset: num_images = {num_images} for split {split!r} must be >= 0")
    out_dir = Path(out_dir)
    image_dir = out_dir / split
    image_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    size = spec.image_size
    images, annotations = [], []
    for index in range(num_images):
        array, objects = render_image(_image_rng(seed, split, index), spec)
        image_id = index + 1
        file_name = f"{image_id:06d}.png"
        _write_png(image_dir / file_name, array)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        annotations += _annotations(objects, image_id, first_id=len(annotations) + 1)
    coco = {
        "info": {
            "description": "Procedural shapes with distractors (retinanet.synthetic)",
            "split": split,
            "seed": seed,
            "image_size": size,
            "spec": spec_record(spec),
            "area_thresholds": list(area_thresholds(size, spec.zoom)),
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories(spec.num_classes),
    }
    coco["info"]["scale_split"] = scale_counts(coco)
    path = out_dir / "annotations" / f"instances_{split}.json"
    write_text(path, json.dumps(coco, sort_keys=True, separators=(",", ":")) + "\n")
    return coco


def _annotations(objects: list[dict], image_id: int, first_id: int) -> list[dict]:
    """COCO annotations of one image's objects (:func:`render_image`'s), ids from ``first_id``: the box as
    ``[x, y, w, h]`` and its area, rounded to 0.01 px."""
    out = []
    for obj in objects:
        x0, y0, x1, y1 = (round(v, 2) for v in obj["bbox"])
        w, h = round(x1 - x0, 2), round(y1 - y0, 2)
        out.append({
            "id": first_id + len(out), "image_id": image_id, "category_id": obj["category_id"],
            "bbox": [x0, y0, w, h], "area": round(w * h, 2), "iscrowd": 0,
        })
    return out


def make_dataset(
    out: str | Path, *, seed: int, splits: dict[str, int], spec: DatasetSpec | None = None, overwrite: bool = False
) -> dict[str, dict]:
    """Generate every split into a temporary folder beside ``out``, then rename it to ``out`` (atomic).

    An existing non-empty ``out`` is an error unless ``overwrite``; then it is replaced only once the new dataset is
    complete. ``splits`` maps split name -> number of images. Returns split name -> COCO dict.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"make-dataset: {out} exists and is not empty (use --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        result = {name: generate(tmp, seed=seed, num_images=n, split=name, spec=spec) for name, n in splits.items()}
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def preview(root: str | Path, split: str, out_png: str | Path, *, num_images: int = 8, zoom: int = 3) -> None:
    """Save a grid of the first ``num_images`` images of a split with their boxes and class names drawn."""
    root = Path(root)
    coco = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    palette = [(255, 64, 64), (64, 255, 64), (64, 160, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)]
    tiles = []
    for info in coco["images"][:num_images]:
        with Image.open(root / split / info["file_name"]) as src:
            img = src.convert("RGB")
        img = img.resize((img.width * zoom, img.height * zoom), Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(img)
        for ann in (a for a in coco["annotations"] if a["image_id"] == info["id"]):
            x, y, w, h = (v * zoom for v in ann["bbox"])
            colour = palette[(ann["category_id"] - 1) % len(palette)]
            draw.rectangle([x, y, x + w, y + h], outline=colour, width=2)
            draw.text((x + 2, y + 1), names[ann["category_id"]], fill=colour)
        tiles.append(img)
    if not tiles:
        raise ConfigError(f"preview: split {split!r} under {root} has no images")
    cols = min(4, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    tw, th = tiles[0].size
    gap = 4
    sheet = Image.new("RGB", (cols * tw + (cols - 1) * gap, rows * th + (rows - 1) * gap), (255, 255, 255))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % cols) * (tw + gap), (i // cols) * (th + gap)))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png, format="PNG", compress_level=9, optimize=False)


# ----------------------------------------------------------------------------------------------------------------
# CLI: python -m retinanet make-dataset


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``make-dataset`` with the CLI of ``retinanet.__main__``."""
    parser = subparsers.add_parser("make-dataset", help="generate the embedded synthetic dataset (COCO format)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=main)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m retinanet make-dataset``."""
    parser.add_argument("--out", required=True, help="dataset folder to create (written atomically)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (same seed, same bytes)")
    parser.add_argument("--train", type=int, required=True, help="number of training images")
    parser.add_argument("--val", type=int, required=True, help="number of validation images")
    parser.add_argument("--size", "--image-size", dest="size", type=int, default=DatasetSpec.image_size,
                        help="image side in pixels (the canvas)")
    parser.add_argument("--classes", type=int, default=DatasetSpec.num_classes,
                        help=f"K object classes, 1 to {MAX_CLASSES}: up to {len(CLASSES)} the shapes, above it "
                             "shape x hue family (docs/dataset.md)")
    parser.add_argument("--objects", type=int, nargs=2, metavar=("MIN", "MAX"),
                        default=(DatasetSpec.min_objects, DatasetSpec.max_objects),
                        help="annotated objects per non-empty image, uniform in [MIN, MAX]")
    parser.add_argument("--max-objects", type=int, default=None, help="objects per image, at most (= --objects 1 N)")
    parser.add_argument("--scale-mix", type=float, nargs=3, metavar=("SMALL", "MEDIUM", "LARGE"),
                        default=DatasetSpec.scale_mix, help="probability of each COCO scale bucket")
    parser.add_argument("--zoom", type=float, default=DatasetSpec.zoom,
                        help="scene magnification: object sizes and bucket limits scale by it (mini: 2)")
    parser.add_argument("--min-small-side", type=float, default=DatasetSpec.min_small_side,
                        help="smallest object side as a fraction of the small/medium limit side")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    parser.add_argument("--preview", metavar="PNG", help="also save a grid of 8 training images with their boxes")


def main(args: argparse.Namespace) -> int:
    """Run ``make-dataset``: write the dataset and print one summary line per split."""
    min_objects, max_objects = args.objects
    if args.max_objects is not None:
        max_objects = args.max_objects
    spec = DatasetSpec(image_size=args.size, max_objects=max_objects, scale_mix=tuple(args.scale_mix),
                       zoom=args.zoom, min_small_side=args.min_small_side, num_classes=args.classes,
                       min_objects=min_objects)
    result = make_dataset(args.out, seed=args.seed, splits={"train": args.train, "val": args.val}, spec=spec,
                          overwrite=args.overwrite)
    for split, coco in result.items():
        counts = coco["info"]["scale_split"]
        total = max(sum(counts.values()), 1)
        share = ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in counts.items())
        print(f"{split}: {len(coco['images'])} images, {len(coco['annotations'])} objects ({share}) "
              f"-> {Path(args.out) / split}")
    if args.preview:
        preview(args.out, "train", args.preview)
    return 0
