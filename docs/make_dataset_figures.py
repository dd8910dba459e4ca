"""Regenerate the pictures of docs/dataset.md: ``python docs/make_dataset_figures.py`` (from the repository root)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from retinanet import scene, synthetic
from retinanet.synthetic import CLASSES, DISTRACTORS, DatasetSpec

IMG = Path(__file__).resolve().parent / "img"


def examples() -> None:
    """The first 8 training images of the mini dataset (seed 0, 128 px) with their boxes."""
    with tempfile.TemporaryDirectory() as tmp:
        synthetic.make_dataset(Path(tmp) / "data", seed=0, splits={"train": 8})
        synthetic.preview(Path(tmp) / "data", "train", IMG / "synthetic-examples.png")


def gallery(tile: int = 64, zoom: int = 2) -> None:
    """Each class (top row) above the distractor that imitates it (bottom row), unrotated, on a grey tile."""
    spec = DatasetSpec(image_size=tile, max_aspect=1.0)
    rows = []
    for names in (CLASSES, DISTRACTORS):
        row = []
        for name in names:
            rng = np.random.default_rng(0)
            polys = scene._shape(name, rng)
            outer = np.concatenate([v for v, f in polys if f])
            lo, hi = outer.min(axis=0), outer.max(axis=0)
            scale = 0.7 * tile / (hi - lo).max()
            offset = (tile - (hi - lo) * scale) / 2
            polys = [((v - lo) * scale + offset, f) for v, f in polys]
            box = np.concatenate([offset, offset + (hi - lo) * scale])
            (x0, y0), alpha = scene._rasterize(polys, box, spec.image_size)
            img = np.full((tile, tile, 3), 200.0)
            h, w = alpha.shape
            region = img[y0 : y0 + h, x0 : x0 + w]
            region[...] = region * (1 - alpha[..., None]) + np.array([40.0, 60.0, 160.0]) * alpha[..., None]
            pic = Image.fromarray(img.astype(np.uint8)).resize((tile * zoom, tile * zoom), Image.Resampling.NEAREST)
            ImageDraw.Draw(pic).text((4, 2), name, fill=(0, 0, 0))
            row.append(pic)
        rows.append(row)
    side = tile * zoom
    sheet = Image.new("RGB", (len(CLASSES) * (side + 4) - 4, 2 * side + 4), (255, 255, 255))
    for r, row in enumerate(rows):
        for c, pic in enumerate(row):
            sheet.paste(pic, (c * (side + 4), r * (side + 4)))
    sheet.save(IMG / "synthetic-shapes.png", format="PNG", compress_level=9)


if __name__ == "__main__":
    examples()
    gallery()
