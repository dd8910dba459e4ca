"""Regenerate the pictures of docs/dataset.md: ``python docs/make_dataset_figures.py`` (from the repository root)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from retinanet.synthetic import generator as synthetic
from retinanet.synthetic import scene
from retinanet.synthetic.generator import CLASSES, DISTRACTORS, DatasetSpec, class_names

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


def _tile(name: str, colour: tuple[float, float, float], tile: int) -> np.ndarray:
    """One shape, unrotated and unstretched, filled with ``colour`` on a light grey tile: uint8 [tile, tile, 3]."""
    polys = scene._shape(name, np.random.default_rng(0))
    outer = np.concatenate([v for v, f in polys if f])
    lo, hi = outer.min(axis=0), outer.max(axis=0)
    scale = 0.8 * tile / (hi - lo).max()
    offset = (tile - (hi - lo) * scale) / 2
    polys = [((v - lo) * scale + offset, f) for v, f in polys]
    (x0, y0), alpha = scene._rasterize(polys, np.concatenate([offset, offset + (hi - lo) * scale]), tile)
    img = np.full((tile, tile, 3), 215.0)
    h, w = alpha.shape
    region = img[y0 : y0 + h, x0 : x0 + w]
    region[...] = region * (1 - alpha[..., None]) + np.asarray(colour) * alpha[..., None]
    return img.astype(np.uint8)


def classes(num_classes: int = 80, tile: int = 44) -> None:
    """The K-class dataset: its first 4 training images with boxes (mini's settings, ``--classes K``; top) and every
    class, shape x hue family, drawn in its family's centre colour (bottom; one row per family)."""
    import colorsys

    with tempfile.TemporaryDirectory() as tmp:
        spec = DatasetSpec(image_size=128, zoom=2.0, min_small_side=0.65, num_classes=num_classes)
        synthetic.make_dataset(Path(tmp) / "data", seed=0, splits={"train": 4}, spec=spec)
        synthetic.preview(Path(tmp) / "data", "train", Path(tmp) / "examples.png", num_images=4, zoom=2)
        with Image.open(Path(tmp) / "examples.png") as src:
            row = src.convert("RGB")
    side = (row.width - 12) // 4  # preview's 4 tiles in a row, 4 px apart -> 2 x 2
    top = Image.new("RGB", (2 * side + 4, 2 * side + 4), (255, 255, 255))
    for i in range(4):
        x = i * (side + 4)
        top.paste(row.crop((x, 0, x + side, side)), ((i % 2) * (side + 4), (i // 2) * (side + 4)))
    names = class_names(num_classes)
    families = scene.num_families(num_classes)
    label_w, head_h = 40, 14
    grid = Image.new("RGB", (label_w + len(CLASSES) * (tile + 2), head_h + families * (tile + 2)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for c, shape in enumerate(CLASSES):
        draw.text((label_w + c * (tile + 2), 1), shape, fill=(0, 0, 0))
    for k, name in enumerate(names):
        f, c = divmod(k, len(CLASSES))
        hue = scene.family_hue(f, num_classes)
        mid_s, mid_v = (sum(scene.FAMILY_SATURATION) / 2, sum(scene.FAMILY_VALUE) / 2)
        colour = tuple(255.0 * v for v in colorsys.hsv_to_rgb(hue / 360.0, mid_s, mid_v))
        if c == 0:
            draw.text((2, head_h + f * (tile + 2) + tile // 2 - 5), name.split("-")[1], fill=(0, 0, 0))
        at = (label_w + c * (tile + 2), head_h + f * (tile + 2))
        grid.paste(Image.fromarray(_tile(CLASSES[c], colour, tile)), at)
    sheet = Image.new("RGB", (top.width + 8 + grid.width, max(top.height, grid.height)), (255, 255, 255))
    sheet.paste(top, (0, 0))
    sheet.paste(grid, (top.width + 8, 0))
    # 256 colours: the noisy example images would otherwise make the PNG several hundred KB
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        IMG / f"synthetic-classes{num_classes}.png", format="PNG", compress_level=9, optimize=True)


if __name__ == "__main__":
    examples()
    gallery()
    classes()
