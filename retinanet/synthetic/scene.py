"""One image of the embedded dataset: its classes and look-alike distractors, their sizes, placement and drawing.

:func:`render_image` draws an image from a :class:`DatasetSpec` and a random generator: a smooth, striped or noisy
background, ``min_objects`` to ``max_objects`` annotated objects of ``num_classes`` classes (sizes drawn in COCO's
small / medium / large buckets scaled to the image, :func:`area_thresholds`), unannotated :data:`DISTRACTORS`, random
strokes and pixel noise. :mod:`retinanet.synthetic.generator` writes such images as a COCO dataset.

Classes (:func:`class_names`): up to 6 they are the shapes of :data:`CLASSES`, in any colour. Above 6 (up to
:data:`MAX_CLASSES`, COCO's 80) a class is a shape *and* a colour family: class ``k`` (0-based) is shape
``CLASSES[k % 6]`` in hue family ``k // 6`` of ``ceil(K / 6)`` families that split the hue circle evenly
(:func:`family_colour`), so that K classes stay visually distinct at 128 px; distractors keep any colour.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from retinanet.config import ConfigError

CLASSES: tuple[str, ...] = ("circle", "ring", "square", "triangle", "cross", "star")
"""The class shapes; with up to 6 classes, category id = index + 1 (:func:`class_names`)."""

MAX_CLASSES = 80
"""At most COCO's 80 classes: 6 shapes x 14 hue families hold 84."""

FAMILY_HUE_SPREAD = 0.5
"""A hue family draws its hue from the middle ``FAMILY_HUE_SPREAD`` of its sector of the hue circle, so two
neighbouring families keep a gap of half a sector (13 degrees at 14 families)."""
FAMILY_SATURATION = (0.6, 1.0)
"""Range of a family colour's HSV saturation: vivid enough that the hue is well defined."""
FAMILY_VALUE = (0.65, 1.0)
"""Range of a family colour's HSV value (brightness): darker textures (x 0.45-0.8) still show the hue."""

DISTRACTORS: tuple[str, ...] = ("half-disk", "arc", "hexagon", "tee", "four-star", "trapezoid")
"""Unannotated shapes, each close to a class (half disk ~ circle, arc ~ ring, hexagon ~ circle/square, tee ~ cross,
four-pointed star ~ star/cross, trapezoid ~ triangle/square)."""

COCO_REFERENCE_AREA = 640 * 480
"""Area of a typical COCO image (px^2), the reference for scaling COCO's area limits."""
COCO_AREA_LIMITS = (32.0**2, 96.0**2)
"""COCO's small/medium and medium/large limits on object area (px^2), as pycocotools' ``areaRng``."""

_SUPERSAMPLE = 4
"""Shapes are rasterized at this factor and box-filtered down: anti-aliased edges."""


@dataclass(frozen=True)
class DatasetSpec:
    """What one generated image may contain. Every field is recorded in the annotation file's ``info``."""

    image_size: int = 128
    """Side of the square images (px)."""
    max_objects: int = 6
    """Annotated objects per image: uniform in [min_objects, max_objects] (fewer if they do not fit without
    overlap)."""
    empty_fraction: float = 0.02
    """Fraction of images with no annotated object (distractors only)."""
    scale_mix: tuple[float, float, float] = (0.3, 0.4, 0.3)
    """Probability that an object is drawn small / medium / large (COCO val2017: about 0.41 / 0.34 / 0.25)."""
    zoom: float = 1.0
    """The image shows a COCO-like scene magnified ``zoom`` times: object sizes and the bucket limits are those of
    :func:`area_thresholds` times ``zoom`` in side. ``mini`` uses 2 so that its smallest objects still span one
    stride of P3 (8 px) at 128 px (docs/scales.md)."""
    min_small_side: float = 0.55
    """The smallest object side as a fraction of the small/medium limit side."""
    max_side_fraction: float = 0.7
    """The largest object side as a fraction of the image side."""
    max_aspect: float = 2.0
    """Objects are stretched by a random aspect ratio in [1/max_aspect, max_aspect] after a random rotation."""
    max_distractors: int = 4
    """Hard-negative shapes per image: uniform in [0, max_distractors]."""
    max_strokes: int = 3
    """Random thin polylines per image: uniform in [0, max_strokes]."""
    max_overlap: float = 0.2
    """Two shapes' boxes may share at most this fraction of the smaller box."""
    noise_sigma: tuple[float, float] = (2.0, 10.0)
    """Per-image range of the Gaussian pixel noise's standard deviation (0-255 scale)."""
    min_contrast: float = 80.0
    """Minimum RGB distance between a shape's colour and the background under it (0-255 scale)."""
    num_classes: int = len(CLASSES)
    """K, the number of object classes (:func:`class_names`), 1 to :data:`MAX_CLASSES`."""
    min_objects: int = 1
    """The fewest annotated objects of an image that is not empty (:attr:`empty_fraction`)."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first field out of range."""
        checks = {
            "image_size": self.image_size >= 32,
            "max_objects": self.max_objects >= max(self.min_objects, 1),
            "min_objects": self.min_objects >= 0,
            "num_classes": 1 <= self.num_classes <= MAX_CLASSES,
            "empty_fraction": 0.0 <= self.empty_fraction <= 1.0,
            "scale_mix": len(self.scale_mix) == 3 and min(self.scale_mix) >= 0 and sum(self.scale_mix) > 0,
            "zoom": self.zoom > 0.0,
            "min_small_side": 0.0 < self.min_small_side < 1.0,
            "max_side_fraction": 0.0 < self.max_side_fraction <= 1.0,
            "max_aspect": self.max_aspect >= 1.0,
            "max_distractors": self.max_distractors >= 0,
            "max_strokes": self.max_strokes >= 0,
            "max_overlap": 0.0 <= self.max_overlap <= 1.0,
            "noise_sigma": 0.0 <= self.noise_sigma[0] <= self.noise_sigma[1],
            "min_contrast": self.min_contrast >= 0.0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"synthetic dataset: {name} = {getattr(self, name)!r} is out of range")


def area_thresholds(image_size: int, zoom: float = 1.0) -> tuple[float, float]:
    """COCO's small/medium and medium/large area limits scaled to a square image of side ``image_size``.

    The limits keep the same fraction of the image area as 32^2 and 96^2 px have of a 640x480 COCO image, times
    ``zoom``^2 for a magnified scene (:attr:`DatasetSpec.zoom`). Pass them to pycocotools as ``params.areaRng`` to get
    APs/APm/APl comparable in spirit to COCO's.
    """
    factor = image_size**2 / COCO_REFERENCE_AREA * zoom**2
    return COCO_AREA_LIMITS[0] * factor, COCO_AREA_LIMITS[1] * factor


def scale_bucket(area: float, image_size: int, zoom: float = 1.0) -> str:
    """``small``, ``medium`` or ``large`` for a box of ``area`` px^2 (pycocotools' inclusive limits)."""
    small, medium = area_thresholds(image_size, zoom)
    return "small" if area <= small else "medium" if area <= medium else "large"


# ----------------------------------------------------------------------------------------------------------------
# Classes: shapes, and above 6 classes shape x hue family


def num_families(num_classes: int) -> int:
    """Hue families of a K-class dataset: 0 up to 6 classes (shape only, any colour), else ceil(K / 6)."""
    return 0 if num_classes <= len(CLASSES) else math.ceil(num_classes / len(CLASSES))


def class_family(label: int, num_classes: int) -> int | None:
    """Hue family of class ``label`` (0-based), None when the classes are shapes only."""
    return label // len(CLASSES) if num_families(num_classes) else None


def family_hue(family: int, num_classes: int) -> float:
    """Centre of a hue family's sector, in degrees: families split the hue circle evenly, family 0 at red (0)."""
    return 360.0 * family / num_families(num_classes)


def class_names(num_classes: int = len(CLASSES)) -> tuple[str, ...]:
    """Category names, id = index + 1: the shapes up to 6 classes, else ``<shape>-h<hue>`` (``circle-h000``,
    ``ring-h000``, ..., ``circle-h026``: shape and its family's centre hue in degrees)."""
    if not num_families(num_classes):
        return CLASSES[:num_classes]
    return tuple(f"{CLASSES[k % len(CLASSES)]}-h{round(family_hue(k // len(CLASSES), num_classes)):03d}"
                 for k in range(num_classes))


def family_colour(rng: np.random.Generator, family: int, num_classes: int, under: np.ndarray,
                  min_contrast: float) -> np.ndarray:
    """An RGB colour (0-255) of a hue family, at least ``min_contrast`` from ``under`` (the farthest of 8 draws
    otherwise, as :func:`_colour`): hue within :data:`FAMILY_HUE_SPREAD` of the family's sector around its centre,
    saturation and value in :data:`FAMILY_SATURATION` and :data:`FAMILY_VALUE`."""
    half = 0.5 * FAMILY_HUE_SPREAD * 360.0 / num_families(num_classes)
    centre = family_hue(family, num_classes)

    def draw() -> np.ndarray:
        hue = (centre + rng.uniform(-half, half)) % 360.0
        return 255.0 * np.asarray(colorsys.hsv_to_rgb(hue / 360.0, rng.uniform(*FAMILY_SATURATION),
                                                      rng.uniform(*FAMILY_VALUE)))
    return _contrasting(draw, under, min_contrast)


# ----------------------------------------------------------------------------------------------------------------
# Shapes: polygons in a unit frame centred on 0 (radius ~1). A shape is a list of (vertices [V,2], fill) where
# fill 1 draws and 0 cuts a hole (ring, arc).


def _ngon(n: int, radius: float = 1.0, start: float = 0.0, stop: float = 2 * math.pi) -> np.ndarray:
    closed = math.isclose(stop - start, 2 * math.pi)
    t = np.linspace(start, stop, n, endpoint=not closed)
    return radius * np.stack([np.cos(t), -np.sin(t)], axis=1)


def _star(points: int, inner: float) -> np.ndarray:
    t = math.pi / 2 + np.arange(2 * points) * math.pi / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), -r * np.sin(t)], axis=1)


def _plus(arm: float, keep: tuple[bool, bool, bool, bool] = (True, True, True, True)) -> np.ndarray:
    """A plus sign of half-width ``arm``; dropping arms (right, up, left, down) gives an L or a T."""
    a = arm
    pts: list[tuple[float, float]] = []
    # Walk the outline counter-clockwise: for each arm its two outer corners, else the centre square's corner.
    arms = [((1, -a), (1, a)), ((a, 1), (-a, 1)), ((-1, a), (-1, -a)), ((-a, -1), (a, -1))]
    corners = [(a, a), (-a, a), (-a, -a), (a, -a)]
    for i in range(4):
        if keep[i]:
            pts.extend(arms[i])
        pts.append(corners[i])
    return np.asarray(pts, dtype=np.float64)


def _shape(name: str, rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    if name == "circle":
        return [(_ngon(48), 1)]
    if name == "ring":
        return [(_ngon(48), 1), (_ngon(48, rng.uniform(0.5, 0.72)), 0)]
    if name == "square":
        return [(np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]), 1)]
    if name == "triangle":
        return [(_ngon(3, start=math.pi / 2, stop=math.pi / 2 + 2 * math.pi), 1)]
    if name == "cross":
        return [(_plus(rng.uniform(0.22, 0.38)), 1)]
    if name == "star":
        return [(_star(5, rng.uniform(0.38, 0.5)), 1)]
    if name == "half-disk":
        return [(_ngon(25, start=0.0, stop=math.pi), 1)]
    if name == "arc":
        stop = rng.uniform(0.9, 1.4) * math.pi
        inner = rng.uniform(0.5, 0.72)
        return [(np.concatenate([_ngon(32, 1.0, 0.0, stop), _ngon(32, inner, 0.0, stop)[::-1]]), 1)]
    if name == "hexagon":
        return [(_ngon(6), 1)]
    if name == "tee":
        return [(_plus(rng.uniform(0.22, 0.38), (True, True, True, False)), 1)]
    if name == "four-star":
        return [(_star(4, rng.uniform(0.3, 0.45)), 1)]
    if name == "trapezoid":
        top = rng.uniform(0.25, 0.6)
        return [(np.array([[-1.0, 0.7], [1.0, 0.7], [top, -0.7], [-top, -0.7]]), 1)]
    raise ValueError(f"unknown shape {name!r}")


def _place(
    rng: np.random.Generator, name: str, side: float, spec: DatasetSpec
) -> tuple[list[tuple[np.ndarray, int]], np.ndarray]:
    """Rotate, stretch and scale a shape so that its box has area ``side``^2 (when it fits); place it at random.

    Returns the polygons in image coordinates and their box [x0, y0, x1, y1].
    """
    polys = _shape(name, rng)
    angle = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    aspect = math.exp(rng.uniform(-math.log(spec.max_aspect), math.log(spec.max_aspect)))
    stretch = np.array([math.sqrt(aspect), 1 / math.sqrt(aspect)])
    polys = [((v @ rot.T) * stretch, f) for v, f in polys]
    outer = np.concatenate([v for v, f in polys if f])
    lo, hi = outer.min(axis=0), outer.max(axis=0)
    w0, h0 = hi - lo
    size = spec.image_size
    scale = min(side / math.sqrt(w0 * h0), (size - 1) / w0, (size - 1) / h0)
    w, h = w0 * scale, h0 * scale
    offset = np.array([rng.uniform(0, size - w), rng.uniform(0, size - h)])
    polys = [((v - lo) * scale + offset, f) for v, f in polys]
    return polys, np.array([offset[0], offset[1], offset[0] + w, offset[1] + h])


def _overlaps(box: np.ndarray, boxes: list[np.ndarray], limit: float) -> bool:
    for other in boxes:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw > 0 and ih > 0:
            smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
            if iw * ih > limit * smaller:
                return True
    return False


# ----------------------------------------------------------------------------------------------------------------
# Rendering


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled random grid: a smooth random field [size, size, 3] in [-1, 1]."""
    grid = rng.uniform(-1, 1, size=(cells, cells, 3))
    pos = np.linspace(0, cells - 1, size)
    i0 = np.minimum(pos.astype(int), cells - 2)
    t = (pos - i0)[:, None, None]
    rows = grid[i0] * (1 - t) + grid[i0 + 1] * t
    t = t.reshape(1, size, 1)
    return rows[:, i0] * (1 - t) + rows[:, i0 + 1] * t


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Two-colour linear gradient + smooth colour field + optional faint stripes: float [size, size, 3]."""
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    phi = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size
    t = ((xx - 0.5) * math.cos(phi) + (yy - 0.5) * math.sin(phi) + 0.71) / 1.42
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    img += rng.uniform(10, 50) * _smooth_field(rng, size, int(rng.integers(3, 9)))
    if rng.random() < 0.3:
        period = rng.uniform(4, 12)
        psi = rng.uniform(0, math.pi)
        stripes = np.sin(2 * math.pi * (xx * math.cos(psi) + yy * math.sin(psi)) * size / period)
        img += rng.uniform(8, 25) * stripes[..., None]
    return img


def _rasterize(polys: list[tuple[np.ndarray, int]], box: np.ndarray, size: int) -> tuple[tuple[int, int], np.ndarray]:
    """Anti-aliased coverage of ``polys`` on the pixels around ``box``: ((x, y) of the crop, alpha [h, w])."""
    x0, y0 = int(math.floor(box[0])), int(math.floor(box[1]))
    x1, y1 = min(int(math.ceil(box[2])), size), min(int(math.ceil(box[3])), size)
    w, h = max(x1 - x0, 1), max(y1 - y0, 1)
    ss = _SUPERSAMPLE
    mask = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(mask)
    for verts, fill in polys:
        pts = (verts - [x0, y0]) * ss
        draw.polygon([(float(x), float(y)) for x, y in pts], fill=255 * fill)
    alpha = np.asarray(mask, dtype=np.float32).reshape(h, ss, w, ss).mean(axis=(1, 3)) / 255.0
    return (x0, y0), alpha


def _fill(rng: np.random.Generator, colour: np.ndarray, h: int, w: int) -> np.ndarray:
    """Texture of a shape: solid, stripes, gradient or speckle around ``colour``: float [h, w, 3]."""
    kind = rng.integers(4)
    base = np.broadcast_to(colour, (h, w, 3)).astype(np.float64)
    if kind == 0:
        return base
    yy, xx = np.mgrid[0:h, 0:w]
    other = colour * rng.uniform(0.45, 0.8)
    if kind == 1:
        psi, period = rng.uniform(0, math.pi), rng.uniform(3, 8)
        on = (((xx * math.cos(psi) + yy * math.sin(psi)) / period) % 1.0) < 0.5
        return np.where(on[..., None], base, other)
    if kind == 2:
        psi = rng.uniform(0, 2 * math.pi)
        proj = xx * math.cos(psi) + yy * math.sin(psi)
        t = ((proj - proj.min()) / max(np.ptp(proj), 1.0))[..., None]
        return base * (1 - t) + other * t
    return base * rng.uniform(0.75, 1.0, size=(h, w, 1))


def _contrasting(draw: Callable[[], np.ndarray], under: np.ndarray, min_contrast: float) -> np.ndarray:
    """The first of up to 8 colours from ``draw`` at least ``min_contrast`` from ``under`` (RGB), else the
    farthest of them."""
    best, best_d = under, -1.0
    for _ in range(8):
        c = draw()
        d = float(np.linalg.norm(c - under))
        if d >= min_contrast:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _colour(rng: np.random.Generator, under: np.ndarray, min_contrast: float) -> np.ndarray:
    """A random colour at least ``min_contrast`` from ``under`` (RGB), or the farthest of a few tries."""
    return _contrasting(lambda: rng.uniform(0, 255, size=3), under, min_contrast)


def _paint(img: np.ndarray, rng: np.random.Generator, polys: list, box: np.ndarray, spec: DatasetSpec,
           family: int | None = None) -> None:
    """Draw a shape with a textured fill: any colour, or one of hue ``family`` (:func:`family_colour`)."""
    (x0, y0), alpha = _rasterize(polys, box, spec.image_size)
    h, w = alpha.shape
    region = img[y0 : y0 + h, x0 : x0 + w]
    under = region.reshape(-1, 3).mean(axis=0)
    if family is None:
        colour = _colour(rng, under, spec.min_contrast)
    else:
        colour = family_colour(rng, family, spec.num_classes, under, spec.min_contrast)
    a = alpha[..., None]
    region[...] = region * (1 - a) + _fill(rng, colour, h, w) * a


def _strokes(img: np.ndarray, rng: np.random.Generator, count: int) -> None:
    size = img.shape[0]
    for _ in range(count):
        mask = Image.new("L", (size, size), 0)
        pts = rng.uniform(0, size, size=(int(rng.integers(2, 5)), 2))
        ImageDraw.Draw(mask).line([(float(x), float(y)) for x, y in pts], fill=255, width=int(rng.integers(1, 3)))
        a = (np.asarray(mask, dtype=np.float32) / 255.0)[..., None] * rng.uniform(0.4, 0.9)
        img[...] = img * (1 - a) + rng.uniform(0, 255, size=3) * a


def _object_side(rng: np.random.Generator, spec: DatasetSpec) -> float:
    """Side sqrt(w*h) of a new object's box, log-uniform inside a bucket drawn from ``spec.scale_mix``."""
    small, medium = (math.sqrt(a) for a in area_thresholds(spec.image_size, spec.zoom))
    ranges = [
        (spec.min_small_side * small, small),
        (small, medium),
        (medium, max(spec.max_side_fraction * spec.image_size, medium)),
    ]
    mix = np.asarray(spec.scale_mix, dtype=np.float64)
    lo, hi = ranges[int(rng.choice(3, p=mix / mix.sum()))]
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def render_image(rng: np.random.Generator, spec: DatasetSpec) -> tuple[np.ndarray, list[dict]]:
    """Draw one image.

    Returns the image uint8 [S, S, 3] and its M objects as dicts {"category_id": int in 1..K (``num_classes``),
    "bbox": [x0, y0, x1, y1] float px, inside the image}.
    """
    size = spec.image_size
    img = _background(rng, size)
    n_obj = 0 if rng.random() < spec.empty_fraction else int(rng.integers(spec.min_objects, spec.max_objects + 1))
    n_dis = int(rng.integers(0, spec.max_distractors + 1))
    items: list[tuple[int | None, list, np.ndarray]] = []  # (category id or None for a distractor, polys, box)
    for k in range(n_obj + n_dis):
        if k < n_obj:
            cat: int | None = int(rng.integers(spec.num_classes)) + 1
            name, side = CLASSES[(cat - 1) % len(CLASSES)], _object_side(rng, spec)
        else:
            cat, name = None, DISTRACTORS[int(rng.integers(len(DISTRACTORS)))]
            side = _object_side(rng, spec)
        for _ in range(20):
            polys, box = _place(rng, name, side, spec)
            if not _overlaps(box, [b for _, _, b in items], spec.max_overlap):
                items.append((cat, polys, box))
                break
    for i in rng.permutation(len(items)):  # objects and distractors occlude each other in random order
        category = items[i][0]
        family = None if category is None else class_family(category - 1, spec.num_classes)
        _paint(img, rng, items[i][1], items[i][2], spec, family)
    _strokes(img, rng, int(rng.integers(0, spec.max_strokes + 1)))
    img += rng.normal(0, rng.uniform(*spec.noise_sigma), size=img.shape)
    objects = [{"category_id": cat, "bbox": box.tolist()} for cat, _, box in items if cat is not None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), objects
