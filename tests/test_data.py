"""Data layer: resize/flip/pad arithmetic, box policy counts, label mapping, errors, the resumable sampler."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_coco import CATEGORY_IDS, COLORS, tiny_config, write_coco

from retinanet.data.coco_json import DataError
from retinanet.data.dataset import (
    CocoDetection,
    build_dataset,
    build_train_loader,
    check_train_images,
    collate,
    hflip_boxes,
    normalize,
    pad_batch,
    resize_image,
    resize_scale,
    resized_shape,
)
from retinanet.data.sampler import TrainBatchSampler

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _dataset(root: Path, *, train: bool = True, min_sizes=(64,), max_size: int = 1000, hflip: bool = True,
             name: str = "instances.json") -> CocoDetection:
    return CocoDetection(root / "images", root / "annotations" / name, min_sizes=list(min_sizes),
                         max_size=max_size, hflip=hflip, pixel_mean=MEAN, pixel_std=STD, train=train)


def _edit(root: Path, fn, name: str = "instances.json") -> Path:
    path = root / "annotations" / name
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))
    return path


# ---------------------------------------------------------------------------------------------- transforms


@pytest.mark.parametrize(("hw", "min_size", "max_size", "scale"), [
    ((480, 640), 600, 1000, 600 / 480),     # shorter side -> 600, longer 800 <= 1000
    ((300, 1000), 600, 1000, 1.0),          # longer side would be 2000: capped at 1000
    ((427, 640), 800, 1333, 800 / 427),     # 640 * 1.8735 = 1199 <= 1333
    ((500, 1333), 800, 1333, 1.0),          # capped
])
def test_resize_scale_shorter_side_with_cap(hw, min_size, max_size, scale):
    assert resize_scale(*hw, min_size, max_size) == pytest.approx(scale)
    h, w = resized_shape(*hw, resize_scale(*hw, min_size, max_size))
    assert min(h, w) <= min_size and max(h, w) <= max_size
    assert min(h, w) == min_size or max(h, w) == max_size


def _cv2_inter_linear(image: np.ndarray, scale: float, size: tuple[int, int]) -> np.ndarray:
    """OpenCV's ``resize(fx=fy=scale, INTER_LINEAR)`` (resize.cpp): output pixel ``d`` reads the source at
    ``(d + 0.5) / scale - 0.5``, clamped to the first and last pixel; separable, in float64."""
    def weights(n_out: int, n_in: int) -> np.ndarray:
        src = (np.arange(n_out) + 0.5) / scale - 0.5
        x0 = np.floor(src).astype(int)
        frac = src - x0
        low, high = x0 < 0, x0 >= n_in - 1
        x0[low], frac[low] = 0, 0.0
        x0[high], frac[high] = n_in - 1, 0.0
        w = np.zeros((n_out, n_in))
        np.add.at(w, (np.arange(n_out), x0), 1 - frac)
        np.add.at(w, (np.arange(n_out), np.minimum(x0 + 1, n_in - 1)), frac)
        return w

    return np.einsum("oh,chw,pw->cop", weights(size[0], image.shape[1]), image, weights(size[1], image.shape[2]))


@pytest.mark.parametrize("scale", [0.6, 600 / 427, 1.7])
def test_resize_without_antialias_is_detectrons_cv2_resize(scale):
    """Detectron's cv2.resize grid (from the scale, not the rounded size) and no antialiasing; the antialiased
    resize and torch's size-derived grid both differ from it."""
    image = torch.rand(3, 37, 53, generator=torch.Generator().manual_seed(0))
    size = resized_shape(37, 53, scale)
    got = resize_image(image, size, scale, antialias=False)
    want = torch.from_numpy(_cv2_inter_linear(image.double().numpy(), scale, size)).float()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    by_size = torch.nn.functional.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    assert (by_size - want).abs().max() > 1e-3
    if scale < 1:
        assert (resize_image(image, size, scale, antialias=True) - want).abs().max() > 1e-2


def test_hflip_boxes_is_mirror_and_involution():
    boxes = torch.tensor([[10.0, 5.0, 30.0, 25.0], [0.0, 0.0, 64.0, 10.0]])
    flipped = hflip_boxes(boxes, 64)
    assert torch.equal(flipped, torch.tensor([[34.0, 5.0, 54.0, 25.0], [0.0, 0.0, 64.0, 10.0]]))
    assert torch.equal(hflip_boxes(flipped, 64), boxes)


def test_normalize_and_pad_batch():
    img = torch.full((3, 2, 2), 0.5)
    out = normalize(img, MEAN, STD)
    assert torch.allclose(out[:, 0, 0], (0.5 - torch.tensor(MEAN)) / torch.tensor(STD))
    a, b = torch.randn(3, 50, 70), torch.randn(3, 64, 33)
    batch = pad_batch([a, b], 32)
    assert batch.shape == (2, 3, 64, 96)
    assert torch.equal(batch[0, :, :50, :70], a) and torch.equal(batch[1, :, :64, :33], b)
    assert batch[0, :, 50:].abs().sum() == 0 and batch[1, :, :, 33:].abs().sum() == 0


def test_item_resizes_image_and_boxes_and_normalizes(tmp_path):
    data = write_coco(tmp_path, sizes=[(40, 60)])
    ds = _dataset(tmp_path, train=False, min_sizes=[80])
    image, target = ds[0]
    scale = 80 / 40
    assert target["scale"] == scale and target["orig_size"] == (40, 60) and image.shape == (3, 80, 120)
    x, y, w, h = data["annotations"][0]["bbox"]
    assert torch.allclose(target["boxes"], torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32) * scale)
    # the middle of the rectangle has the class color, normalized
    cx, cy = int((x + w / 2) * scale), int((y + h / 2) * scale)
    color = torch.tensor(COLORS[data["annotations"][0]["category_id"]]) / 255.0
    assert torch.allclose(image[:, cy, cx], (color - torch.tensor(MEAN)) / torch.tensor(STD), atol=1e-5)


def test_flip_and_jitter_follow_the_sample_seed(tmp_path):
    write_coco(tmp_path, num_images=1)
    ds = _dataset(tmp_path, min_sizes=[48, 64])
    plain_image, plain = _dataset(tmp_path, min_sizes=[64])[0]  # no seed: no flip
    seen = set()
    for seed in range(40):
        image, target = ds[(0, seed)]
        again, target2 = ds[(0, seed)]
        assert torch.equal(image, again) and torch.equal(target["boxes"], target2["boxes"])  # deterministic
        size = image.shape[1]
        seen.add((size, target["flipped"]))
        if size == 64:
            expected = hflip_boxes(plain["boxes"], 64) if target["flipped"] else plain["boxes"]
            assert torch.allclose(target["boxes"], expected)
            assert torch.equal(image, plain_image.flip(-1) if target["flipped"] else plain_image)
    assert seen == {(48, False), (48, True), (64, False), (64, True)}


def test_collate_reports_unpadded_sizes(tmp_path):
    write_coco(tmp_path, sizes=[(64, 64), (64, 96)])
    ds = _dataset(tmp_path, train=False)
    images, targets, sizes = collate([ds[0], ds[1]], 64)
    assert images.shape == (2, 3, 64, 128) and sizes == [(64, 64), (64, 96)]
    assert [t["image_id"] for t in targets] == [1, 2]


# ---------------------------------------------------------------------------------------------- box policy


def test_category_ids_map_to_contiguous_labels_in_sorted_order(tmp_path):
    data = write_coco(tmp_path, num_images=4)
    ds = _dataset(tmp_path, train=False)
    assert ds.category_ids == sorted(CATEGORY_IDS)
    for i in range(len(ds)):
        ann = data["annotations"][i]
        assert ds[i][1]["labels"].tolist() == [sorted(CATEGORY_IDS).index(ann["category_id"])]


def test_box_policy_counts_crowd_clip_and_drops(tmp_path):
    write_coco(tmp_path, num_images=3)

    def edit(d):
        extra = [
            {"image_id": 1, "category_id": 3, "bbox": [5, 5, 10, 10], "iscrowd": 1},      # crowd: dropped
            {"image_id": 1, "category_id": 3, "bbox": [50, 50, 30, 30], "iscrowd": 0},    # clipped to 64
            {"image_id": 1, "category_id": 7, "bbox": [10, 10, 0, 5], "iscrowd": 0},      # non-positive: dropped
            {"image_id": 1, "category_id": 7, "bbox": [70, 10, 5, 5], "iscrowd": 0},      # outside: dropped
        ]
        for k, ann in enumerate(extra):
            d["annotations"].append({"id": 100 + k, "area": 1.0, **ann})
        d["annotations"] = [a for a in d["annotations"] if a["image_id"] != 3]          # image 3: no boxes

    _edit(tmp_path, edit)
    train = _dataset(tmp_path, train=True)
    assert train.report()["crowd"] == 1 and train.counts["clipped"] == 1
    assert train.counts["dropped_nonpositive"] == 1 and train.counts["dropped_outside"] == 1
    assert train.counts["images_without_boxes"] == 1 and len(train) == 2
    boxes = train[0][1]["boxes"]
    assert boxes.shape == (2, 4) and torch.equal(boxes[1], torch.tensor([50.0, 50.0, 64.0, 64.0]))
    assert len(_dataset(tmp_path, train=False)) == 3  # evaluation keeps every image


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["annotations"][0].update(category_id=99), r"annotations\[0\]\.category_id: 99 is not in categories"),
    (lambda d: d["annotations"][0].pop("bbox"), r"annotations\[0\]\.bbox: missing field"),
    (lambda d: d["annotations"][1].update(bbox=[1, 2, 3]), r"annotations\[1\]\.bbox: expected 4 numbers"),
    (lambda d: d["annotations"][0].update(image_id=42), r"annotations\[0\]\.image_id: 42 is not in images"),
    (lambda d: d["images"][0].update(height="64"), r"images\[0\]\.height: expected int"),
    (lambda d: d.pop("categories"), r"categories: missing field"),
])
def test_bad_annotation_fields_name_file_and_field(tmp_path, edit, message):
    write_coco(tmp_path)
    path = _edit(tmp_path, edit)
    with pytest.raises(DataError, match=message) as info:
        _dataset(tmp_path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_malformed_json_names_file_and_position(tmp_path):
    write_coco(tmp_path)
    path = tmp_path / "annotations" / "instances.json"
    path.write_text(path.read_text()[:-10])
    with pytest.raises(DataError, match=rf"^{path}: malformed JSON at line 1 column \d+"):
        _dataset(tmp_path)


def test_annotation_file_not_utf8_names_file_and_position(tmp_path):
    write_coco(tmp_path)
    path = tmp_path / "annotations" / "instances.json"
    path.write_bytes(path.read_bytes().replace(b'"class3"', b'"caf\xe9"'))  # Latin-1, not UTF-8
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: annotation file is not UTF-8 \(byte 0xe9 on "
                                        r"line 1, offset \d+\)"):
        _dataset(tmp_path)


def test_info_is_optional_metadata_but_its_area_limits_are_checked_at_load(tmp_path):
    """Some tools write ``info`` as a string: ignored. ``info.area_thresholds`` is read by evaluation, after
    inference, so a bad one must stop the load."""
    write_coco(tmp_path)
    _edit(tmp_path, lambda d: d.update(info="made by another tool"))
    assert len(_dataset(tmp_path)) == 4
    for limits, message in (("32", "expected 2 numbers"), ([1024], "expected 2 numbers"),
                            ([9216, 1024], "expected 0 < small/medium < medium/large")):
        path = _edit(tmp_path, lambda d, limits=limits: d.update(info={"area_thresholds": limits}))
        with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: info\.area_thresholds: {message}"):
            _dataset(tmp_path)
    _edit(tmp_path, lambda d: d.update(info={"area_thresholds": None, "year": 2017}))
    assert len(_dataset(tmp_path)) == 4


def test_training_split_without_usable_boxes_names_the_file(tmp_path):
    write_coco(tmp_path, num_images=3)
    cfg = tiny_config(tmp_path)
    path = _edit(tmp_path, lambda d: d.update(annotations=[]))
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: annotations: none of its 3 images has a "
                                        r"non-crowd box .*\(0 annotations\); training needs at least "
                                        r"solver.images_per_process=2"):
        build_train_loader(cfg, _dataset(tmp_path), world_size=1, rank=0, accumulation_steps=1, start_iter=0)
    write_coco(tmp_path, num_images=3)
    _edit(tmp_path, lambda d: [a.update(iscrowd=1) for a in d["annotations"][1:]])
    with pytest.raises(DataError, match=r": annotations: only 1 of its 3 images have a non-crowd box .*"
                                        r"\(3 annotations: 2 crowd\)"):
        check_train_images(_dataset(tmp_path), 2)
    check_train_images(_dataset(tmp_path), 1)
    _edit(tmp_path, lambda d: d.update(images=[], annotations=[]))
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: images: the file lists no images; training "
                                        r"needs at least solver.images_per_process=2"):
        check_train_images(_dataset(tmp_path), 2)


def test_missing_and_unreadable_images(tmp_path):
    write_coco(tmp_path, num_images=2)
    (tmp_path / "images" / "0001.png").unlink()
    with pytest.raises(DataError, match=r"0001.png: image file not found"):
        _dataset(tmp_path)
    (tmp_path / "images" / "0001.png").write_bytes(b"not a png")
    ds = _dataset(tmp_path)
    with pytest.raises(DataError, match=r"0001.png: cannot read image"):
        ds[1]


def test_image_size_must_match_json(tmp_path):
    write_coco(tmp_path)
    _edit(tmp_path, lambda d: d["images"][0].update(width=65))
    with pytest.raises(DataError, match=r"0000.png: image is 64x64 but .* says height=64, width=65"):
        _dataset(tmp_path)[0]


def test_missing_dataset_root_names_the_field(tmp_path):
    cfg = tiny_config(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"^data.root: dataset root .*nowhere does not exist"):
        build_dataset(cfg.data, train=True)


# ---------------------------------------------------------------------------------------------- sampler


def _take(sampler: TrainBatchSampler, n: int) -> list:
    return list(itertools.islice(iter(sampler), n))


def test_sampler_splits_each_step_across_ranks_like_accumulation():
    """Two ranks x 1 pass see, per step, exactly the micro-batches one rank sees in 2 accumulation passes."""
    single = _take(TrainBatchSampler(10, images_per_batch=2, seed=3, accumulation_steps=2), 12)
    ranks = [_take(TrainBatchSampler(10, images_per_batch=2, seed=3, world_size=2, rank=r), 6) for r in (0, 1)]
    for step in range(6):
        assert single[2 * step] == ranks[0][step] and single[2 * step + 1] == ranks[1][step]


def test_sampler_resumes_mid_stream_and_epochs_are_permutations():
    full = _take(TrainBatchSampler(10, images_per_batch=2, seed=1, accumulation_steps=2), 20)
    resumed = _take(TrainBatchSampler(10, images_per_batch=2, seed=1, accumulation_steps=2, start_iter=3), 14)
    assert resumed == full[6:]
    for epoch in range(4):
        indices = [i for batch in full[5 * epoch:5 * epoch + 5] for i, _ in batch]
        assert sorted(indices) == list(range(10))
    assert full[:5] != full[5:10]  # a new order each epoch
    seeds = [s for batch in full for _, s in batch]
    assert len(set(seeds)) == len(seeds)


def test_sampler_aspect_groups_and_errors():
    groups = [0, 1, 0, 1, 1, 0, 0, 1, 0]
    sampler = TrainBatchSampler(9, images_per_batch=2, seed=0, groups=groups)
    batches = sampler.epoch(0)[1]
    perm = sampler.epoch(0)[0]
    assert len(batches) == 4 == sampler.batches_per_epoch
    homogeneous = [len({groups[perm[p]] for p in b}) == 1 for b in batches]
    assert sum(homogeneous) >= 3  # at most one mixed micro-batch (the leftovers)
    with pytest.raises(DataError, match="fewer than solver.images_per_process"):
        TrainBatchSampler(1, images_per_batch=2, seed=0)


def test_batches_do_not_depend_on_the_number_of_workers(tmp_path):
    write_coco(tmp_path, num_images=5, sizes=[(64, 64), (48, 64), (64, 48), (64, 64), (56, 64)])
    batches = {}
    for workers in (0, 2):
        cfg = tiny_config(tmp_path, {"data": {"num_workers": workers, "train_min_sizes": [48, 64],
                                              "aspect_grouping": True}})
        loader = build_train_loader(cfg, build_dataset(cfg.data, train=True), world_size=1, rank=0,
                                    accumulation_steps=1, start_iter=1)
        batches[workers] = list(itertools.islice(iter(loader), 4))
    for (img0, tg0, sz0), (img2, tg2, sz2) in zip(batches[0], batches[2], strict=True):
        assert torch.equal(img0, img2) and sz0 == sz2
        assert [t["image_id"] for t in tg0] == [t["image_id"] for t in tg2]
        assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(tg0, tg2))
