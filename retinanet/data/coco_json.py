"""COCO annotation files: read and check every field the pipeline uses, or refuse the file with one line.

:class:`DataError` is the error of the whole data path (annotation files, images, dataset folders, the sampler):
its message names the file and the field or value. Checked here: malformed JSON, a missing field or wrong type, a
duplicate image id, a non-positive image size, an unknown ``category_id`` or ``image_id``, a bbox that is not 4
finite numbers, ``iscrowd`` other than 0/1, an ``info.area_thresholds`` that is not two increasing positive
numbers, a file that is not UTF-8. Missing ``id``, ``iscrowd`` and ``area`` of an annotation get COCO's defaults
(the position, 0, the box area). An ``info`` that is not an object (a string in some tools' files) is ignored.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO

from retinanet.config_parsing import not_utf8


class DataError(ValueError):
    """Bad dataset input: the message names the file and the field or value."""


def _field(source: str, where: str, entry: dict, key: str, types: tuple[type, ...]) -> Any:
    if not isinstance(entry, dict):
        raise DataError(f"{source}: {where}: expected an object, got {type(entry).__name__}")
    if key not in entry:
        raise DataError(f"{source}: {where}.{key}: missing field")
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, types):
        raise DataError(f"{source}: {where}.{key}: expected {'/'.join(t.__name__ for t in types)}, got {value!r}")
    return value


def _check_info(source: str, info: Any) -> None:
    """``info`` is optional metadata: anything but an object (a string in some tools' files) is ignored. Of an
    object, ``area_thresholds`` (the dataset's own small/medium and medium/large limits, read by evaluation) must
    be null or two increasing positive numbers, so that a bad value stops the run before inference, not after."""
    if not isinstance(info, dict) or info.get("area_thresholds") is None:
        return
    limits = info["area_thresholds"]
    if (not isinstance(limits, list) or len(limits) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in limits)):
        raise DataError(f"{source}: info.area_thresholds: expected 2 numbers [small/medium, medium/large], got "
                        f"{limits!r}")
    if not (math.isfinite(limits[0]) and math.isfinite(limits[1]) and 0 < limits[0] < limits[1]):
        raise DataError(f"{source}: info.area_thresholds: expected 0 < small/medium < medium/large, got {limits!r}")


def load_coco_json(path: str | Path, *, require_annotations: bool = True) -> COCO:
    """Read and check a COCO ``instances`` (or test-dev ``image_info``) JSON file; return a pycocotools COCO.

    Checks every field the pipeline reads; raises :class:`DataError` naming the file and the field.
    """
    path = Path(path)
    source = str(path)
    data = _read_json(path)
    for key in ("images", "categories") + (("annotations",) if require_annotations else ()):
        if not isinstance(data.get(key), list):
            raise DataError(f"{source}: {key}: missing field or not a list")
    _check_info(source, data.get("info"))
    data.setdefault("annotations", [])
    if not isinstance(data["annotations"], list):
        raise DataError(f"{source}: annotations: not a list")
    image_ids = _check_images(source, data["images"])
    category_ids: set[int] = set()
    for i, cat in enumerate(data["categories"]):
        category_ids.add(_field(source, f"categories[{i}]", cat, "id", (int,)))
    if not category_ids:
        raise DataError(f"{source}: categories: empty")
    for i, ann in enumerate(data["annotations"]):
        _check_annotation(source, i, ann, image_ids, category_ids)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def _read_json(path: Path) -> dict:
    """The file's JSON object (UTF-8)."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{source}: cannot read annotation file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: annotation file is {not_utf8(exc)}; JSON files must be UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{source}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise DataError(f"{source}: top level: expected an object with images/annotations/categories")
    return data


def _check_images(source: str, images: list) -> set[int]:
    """The image ids, each checked unique, with a file name and a positive size."""
    image_ids: set[int] = set()
    for i, img in enumerate(images):
        image_id = _field(source, f"images[{i}]", img, "id", (int,))
        if image_id in image_ids:
            raise DataError(f"{source}: images[{i}].id: duplicate image id {image_id}")
        image_ids.add(image_id)
        _field(source, f"images[{i}]", img, "file_name", (str,))
        for key in ("height", "width"):
            if _field(source, f"images[{i}]", img, key, (int,)) <= 0:
                raise DataError(f"{source}: images[{i}].{key}: must be positive, got {img[key]}")
    return image_ids


def _check_annotation(source: str, i: int, ann: Any, image_ids: set[int], category_ids: set[int]) -> None:
    """Check annotation ``i`` (a known image and category, a finite [x, y, w, h], iscrowd 0 or 1) and fill in the
    fields pycocotools needs (``id``, ``iscrowd``, ``area``) where they are missing."""
    where = f"annotations[{i}]"
    image_id = _field(source, where, ann, "image_id", (int,))
    if image_id not in image_ids:
        raise DataError(f"{source}: {where}.image_id: {image_id} is not in images")
    category_id = _field(source, where, ann, "category_id", (int,))
    if category_id not in category_ids:
        known = ", ".join(str(c) for c in sorted(category_ids))
        raise DataError(f"{source}: {where}.category_id: {category_id} is not in categories (known: {known})")
    bbox = _field(source, where, ann, "bbox", (list,))
    if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        raise DataError(f"{source}: {where}.bbox: expected 4 numbers [x, y, w, h], got {bbox!r}")
    if not all(math.isfinite(v) for v in bbox):
        raise DataError(f"{source}: {where}.bbox: non-finite value in {bbox!r}")
    if "iscrowd" in ann and ann["iscrowd"] not in (0, 1):
        raise DataError(f"{source}: {where}.iscrowd: expected 0 or 1, got {ann['iscrowd']!r}")
    ann.setdefault("id", i + 1)
    ann.setdefault("iscrowd", 0)
    ann.setdefault("area", float(bbox[2] * bbox[3]))
