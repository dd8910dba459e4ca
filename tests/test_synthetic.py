"""The embedded dataset: deterministic bytes, valid COCO, every scale bucket, tight boxes, atomic writes."""

from __future__ import annotations

import argparse
import colorsys
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from retinanet.config import ConfigError
from retinanet.synthetic import generator as synthetic
from retinanet.synthetic import scene
from retinanet.synthetic.generator import (
    CLASSES,
    DISTRACTORS,
    DatasetSpec,
    area_thresholds,
    class_names,
    generate,
    make_dataset,
)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_different_seed_different(tmp_path: Path) -> None:
    splits = {"train": 5, "val": 2}
    spec = DatasetSpec(image_size=64)
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        make_dataset(tmp_path / name, seed=seed, splits=splits, spec=spec)
    a, b, c = (_tree_bytes(tmp_path / n) for n in "abc")
    assert len(a) == 5 + 2 + 2
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a)  # every image and both annotation files change with the seed


def test_image_depends_only_on_seed_split_and_index(tmp_path: Path) -> None:
    generate(tmp_path / "short", seed=1, num_images=2, split="train", image_size=64)
    generate(tmp_path / "long", seed=1, num_images=4, split="train", image_size=64)
    generate(tmp_path / "other", seed=1, num_images=2, split="val", image_size=64)
    for i in (1, 2):
        short = (tmp_path / "short" / "train" / f"{i:06d}.png").read_bytes()
        assert short == (tmp_path / "long" / "train" / f"{i:06d}.png").read_bytes()
        assert short != (tmp_path / "other" / "val" / f"{i:06d}.png").read_bytes()


def test_writes_valid_coco(synthetic_coco: Path) -> None:
    for split, count in (("train", 6), ("val", 3)):
        path = synthetic_coco / "annotations" / f"instances_{split}.json"
        coco = COCO(str(path))
        raw = json.loads(path.read_text())
        assert sorted(coco.getImgIds()) == list(range(1, count + 1))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
        ann_ids = [a["id"] for a in raw["annotations"]]
        assert len(ann_ids) == len(set(ann_ids)) > 0
        for img in coco.loadImgs(coco.getImgIds()):
            assert (synthetic_coco / split / img["file_name"]).is_file()
            assert img["width"] == img["height"] == 64
        for ann in raw["annotations"]:
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0
            assert x >= 0 and y >= 0 and x + w <= 64 + 1e-6 and y + h <= 64 + 1e-6
            assert ann["area"] == pytest.approx(w * h, abs=0.01)
            assert ann["iscrowd"] == 0
            assert ann["category_id"] in coco.cats
            assert ann["image_id"] in coco.imgs
        assert raw["info"]["scale_split"] == synthetic.scale_counts(raw)


def test_every_scale_bucket_present_at_default_size(tmp_path: Path) -> None:
    coco = generate(tmp_path, seed=0, num_images=30)
    counts = coco["info"]["scale_split"]
    total = sum(counts.values())
    assert total == len(coco["annotations"]) > 60
    assert all(n >= 0.1 * total for n in counts.values()), counts
    # Few objects per image against thousands of anchors: the imbalance the paper is about.
    assert total / len(coco["images"]) <= DatasetSpec.max_objects


def test_area_thresholds_scale_coco_limits_by_image_area() -> None:
    small, medium = area_thresholds(128)
    assert small / 128**2 == pytest.approx(32**2 / (640 * 480))
    assert medium / 128**2 == pytest.approx(96**2 / (640 * 480))
    assert synthetic.scale_bucket(small, 128) == "small"  # pycocotools' ranges include their upper limit
    assert synthetic.scale_bucket(math.nextafter(small, math.inf), 128) == "medium"
    assert synthetic.scale_bucket(medium + 1, 128) == "large"


def test_zoom_scales_object_sides_and_bucket_limits_together(tmp_path: Path) -> None:
    small, medium = area_thresholds(128)
    assert area_thresholds(128, zoom=2.0) == pytest.approx((4 * small, 4 * medium))
    spec = DatasetSpec(image_size=128, zoom=2.0, min_small_side=0.65)
    coco = generate(tmp_path, seed=0, num_images=30, spec=spec)
    assert coco["info"]["area_thresholds"] == pytest.approx([4 * small, 4 * medium])
    assert coco["info"]["spec"]["zoom"] == 2.0
    sides = [math.sqrt(a["area"]) for a in coco["annotations"]]
    # Rotation and stretch keep the area of the drawn side^2 within a factor; the smallest sides stay above 1 stride
    # of P3 (8 px) and every bucket is still populated under the zoomed limits.
    assert min(sides) >= 0.65 * math.sqrt(4 * small) * 0.7
    assert min(coco["info"]["scale_split"].values()) >= 0.1 * len(sides)


@pytest.mark.parametrize("name", CLASSES + DISTRACTORS)
def test_boxes_are_tight_around_the_drawn_shape(name: str) -> None:
    rng = np.random.default_rng(0)
    spec = DatasetSpec(image_size=96)
    for _ in range(5):
        polys, box = scene._place(rng, name, 30.0, spec)
        assert 0 <= box[0] < box[2] <= 96 and 0 <= box[1] < box[3] <= 96
        (x0, y0), alpha = scene._rasterize(polys, box, spec.image_size)
        # The crop is the box rounded outwards; the shape touches all four sides of its box.
        assert alpha[:, 0].max() > 0 and alpha[:, -1].max() > 0
        assert alpha[0].max() > 0 and alpha[-1].max() > 0
        assert x0 == math.floor(box[0]) and y0 == math.floor(box[1])


def test_images_without_objects_still_hold_distractors() -> None:
    spec = DatasetSpec(image_size=64, empty_fraction=1.0, max_strokes=0, noise_sigma=(0.0, 0.0))
    image, objects = scene.render_image(np.random.default_rng(5), spec)
    assert objects == []
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8


def test_existing_dataset_is_kept_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"data exists and is not empty"):
        make_dataset(out, seed=0, splits={"train": 1}, spec=DatasetSpec(image_size=32))
    assert (out / "keep.txt").read_text() == "mine"
    make_dataset(out, seed=0, splits={"train": 1}, spec=DatasetSpec(image_size=32), overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["annotations", "train"]
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_failure_leaves_no_partial_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = synthetic.generate

    def fail_on_val(out_dir, *, split, **kwargs):
        if split == "val":
            raise RuntimeError("killed")
        return real(out_dir, split=split, **kwargs)

    monkeypatch.setattr(synthetic, "generate", fail_on_val)
    with pytest.raises(RuntimeError):
        make_dataset(tmp_path / "data", seed=0, splits={"train": 1, "val": 1}, spec=DatasetSpec(image_size=32))
    assert list(tmp_path.iterdir()) == []


def test_bad_settings_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="image_size = 16"):
        generate(tmp_path, seed=0, num_images=1, image_size=16)
    with pytest.raises(ConfigError, match="num_images = -1"):
        generate(tmp_path, seed=0, num_images=-1)


def test_cli_writes_dataset_and_reports_the_scale_split(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser()
    synthetic.add_command(parser.add_subparsers())
    out = tmp_path / "ds"
    args = parser.parse_args(["make-dataset", "--out", str(out), "--seed", "2", "--train", "3", "--val", "2",
                              "--size", "48", "--preview", str(tmp_path / "grid.png")])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("train: 3 images, ") and "small" in lines[0] and "large" in lines[0]
    assert lines[1].startswith("val: 2 images, ")
    assert len(list((out / "val").glob("*.png"))) == 2
    assert (tmp_path / "grid.png").stat().st_size > 0


# ----- K classes (shape x hue family), objects per image, canvas ----------------------------------------------------

TODAY = {  # sha256 of every file's path and bytes, computed before --classes/--objects existed (numpy/Pillow pinned)
    "defaults": "6a922fdbc49aae06a740f934e569ba54e3608096ec1cd39fe4ff796c72eda316",
    "mini": "f65eaf9a830fb71a8d14e65cb1fa3802d778bce6cafb2ffb49f396020a00d091",
}
"""The default 6-class dataset's bytes before the K-class generator: seed 0, DatasetSpec() with 8 train + 4 val images
("defaults"), and mini's settings (128 px, zoom 2, min-small-side .65) with 12 + 4 ("mini"). The whole mini dataset
(2000 + 500) hashed 1d1267df5f109d706b4d226689bf3e17c0e63b430a2358cbccbb88fb1eb008fa before and after."""


def _tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for name, data in _tree_bytes(root).items():
        digest.update(name.encode() + b"\0" + data)
    return digest.hexdigest()


def test_default_settings_generate_todays_dataset_byte_for_byte(tmp_path: Path) -> None:
    make_dataset(tmp_path / "defaults", seed=0, splits={"train": 8, "val": 4}, spec=DatasetSpec())
    assert _tree_hash(tmp_path / "defaults") == TODAY["defaults"]
    parser = argparse.ArgumentParser()
    synthetic.add_command(parser.add_subparsers())
    args = parser.parse_args(["make-dataset", "--out", str(tmp_path / "mini"), "--seed", "0", "--train", "12",
                              "--val", "4", "--size", "128", "--zoom", "2", "--min-small-side", "0.65"])
    assert args.func(args) == 0  # the study's make_dataset rule goes through the CLI and its defaults
    assert _tree_hash(tmp_path / "mini") == TODAY["mini"]
    info = json.loads((tmp_path / "mini" / "annotations" / "instances_train.json").read_text())["info"]
    assert "num_classes" not in info["spec"] and "min_objects" not in info["spec"]


def test_eighty_classes_write_valid_coco_with_shape_x_family_categories(tmp_path: Path) -> None:
    spec = DatasetSpec(image_size=96, num_classes=80, min_objects=4, max_objects=6, empty_fraction=0.0)
    make_dataset(tmp_path / "a", seed=1, splits={"train": 12, "val": 3}, spec=spec)
    make_dataset(tmp_path / "b", seed=1, splits={"train": 12, "val": 3}, spec=spec)
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")  # deterministic at K = 80 too
    path = tmp_path / "a" / "annotations" / "instances_train.json"
    coco, raw = COCO(str(path)), json.loads(path.read_text())
    assert coco.getCatIds() == list(range(1, 81))
    names = [c["name"] for c in raw["categories"]]
    assert names == list(class_names(80)) and len(set(names)) == 80
    assert names[:7] == ["circle-h000", "ring-h000", "square-h000", "triangle-h000", "cross-h000", "star-h000",
                         "circle-h026"] and names[-1] == "ring-h334"
    assert all(c["supercategory"] == c["name"].split("-")[0] in CLASSES for c in raw["categories"])
    assert {a["category_id"] for a in raw["annotations"]} <= set(range(1, 81))
    assert len({a["category_id"] for a in raw["annotations"]}) > 30  # drawn uniformly over the 80
    assert raw["info"]["spec"]["num_classes"] == 80 and raw["info"]["spec"]["min_objects"] == 4
    per_image = np.bincount([a["image_id"] for a in raw["annotations"]], minlength=13)[1:]
    assert per_image.max() <= 6 and np.mean(per_image) > 4  # 4-6 asked; a crowded image may fit fewer


def test_up_to_six_classes_are_the_first_shapes_in_any_colour(tmp_path: Path) -> None:
    assert class_names(6) == CLASSES and class_names(3) == CLASSES[:3]
    coco = generate(tmp_path, seed=0, num_images=10, image_size=64, spec=DatasetSpec(num_classes=3))
    assert [c["name"] for c in coco["categories"]] == ["circle", "ring", "square"]
    assert {a["category_id"] for a in coco["annotations"]} <= {1, 2, 3}
    assert all(c["supercategory"] == "shape" for c in coco["categories"])


@pytest.mark.parametrize("num_classes", [7, 18, 80])
def test_a_family_colour_keeps_its_hue_sector(num_classes: int) -> None:
    families = scene.num_families(num_classes)
    assert families == math.ceil(num_classes / 6)
    rng = np.random.default_rng(0)
    grey = np.array([128.0, 128.0, 128.0])
    for family in range(families):
        centre = scene.family_hue(family, num_classes)
        for _ in range(20):
            rgb = scene.family_colour(rng, family, num_classes, grey, min_contrast=0.0) / 255.0
            h, s, v = colorsys.rgb_to_hsv(*rgb)
            off = (360.0 * h - centre + 180.0) % 360.0 - 180.0
            # within the middle half of the sector: a gap of half a sector to the next family
            assert abs(off) <= 90.0 / families + 1e-6
            assert scene.FAMILY_SATURATION[0] - 1e-9 <= s and scene.FAMILY_VALUE[0] - 1e-9 <= v


def test_objects_per_image_follow_min_and_max(tmp_path: Path) -> None:
    one = generate(tmp_path / "one", seed=0, num_images=40, image_size=64,
                   spec=DatasetSpec(min_objects=1, max_objects=1))
    per_image = np.bincount([a["image_id"] for a in one["annotations"]], minlength=41)[1:]
    assert per_image.max() == 1 and per_image.sum() >= 0.9 * 40  # 2% empty images, as the default
    some_empty = generate(tmp_path / "zero", seed=0, num_images=40, image_size=64,
                          spec=DatasetSpec(min_objects=0, max_objects=1, empty_fraction=0.0))
    counts = np.bincount([a["image_id"] for a in some_empty["annotations"]], minlength=41)[1:]
    assert counts.max() == 1 and 5 < (counts == 0).sum() < 35


@pytest.mark.parametrize(("field", "value", "message"), [
    ("num_classes", 81, "num_classes = 81"), ("num_classes", 0, "num_classes = 0"),
    ("min_objects", 7, "max_objects = 6"), ("min_objects", -1, "min_objects = -1"),
])
def test_bad_class_and_object_counts_name_the_field(tmp_path: Path, field: str, value: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        generate(tmp_path, seed=0, num_images=1, spec=DatasetSpec(**{field: value}))


def test_cli_sets_classes_objects_and_canvas(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser()
    synthetic.add_command(parser.add_subparsers())
    args = parser.parse_args(["make-dataset", "--out", str(tmp_path / "ds"), "--train", "4", "--val", "1",
                              "--classes", "20", "--objects", "2", "3", "--image-size", "96", "--zoom", "1.5"])
    assert args.func(args) == 0
    raw = json.loads((tmp_path / "ds" / "annotations" / "instances_train.json").read_text())
    assert len(raw["categories"]) == 20 and raw["images"][0]["width"] == 96
    assert {k: raw["info"]["spec"][k] for k in ("num_classes", "min_objects", "max_objects", "image_size", "zoom")} \
        == {"num_classes": 20, "min_objects": 2, "max_objects": 3, "image_size": 96, "zoom": 1.5}
