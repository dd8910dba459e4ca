"""COCO-format detection data: annotation checks, box-aware transforms, batching and a resumable sampler.

Shapes: an image is ``[3, h, w]`` float, normalized; a batch is ``[N, 3, H, W]`` with ``H, W`` multiples of
``data.size_divisibility`` (the coarsest stride, P7 = 2^7) and zero padding (the mean pixel after
normalization) at the bottom/right. Boxes are ``[M, 4]`` ``(x1, y1, x2, y2)`` in pixels of the *resized* image.

Category ids of the JSON are mapped to contiguous labels ``0..K-1`` in sorted id order
(:attr:`CocoDetection.category_ids` inverts it for detections).

Box policy (counted and reported by :meth:`CocoDetection.report`):

- ``iscrowd`` boxes are dropped from training targets (Detectron's RetinaNet did the same; COCOeval still uses
  them as ignore regions through the original JSON).
- a box with non-positive width or height is *dropped* (``dropped_nonpositive``);
- a box reaching outside the image is *clipped* to it (``clipped``); one with no area left is *dropped*
  (``dropped_outside``);
- a training image without any box left is dropped from the training set (``images_without_boxes``), as
  Detectron's ``filter_for_training`` and detectron2's ``FILTER_EMPTY_ANNOTATIONS`` did.

Resizing is bilinear with antialiasing (Detectron used OpenCV's bilinear resize, without antialiasing; at the
paper's scales COCO images are mostly upsampled, where the two agree).

Refused (one-line :class:`DataError` naming the file and field): malformed JSON, a missing field or wrong type,
an unknown ``category_id`` or ``image_id``, a missing or unreadable image, an image whose size differs from its
JSON entry, a missing dataset root.

Data order (:class:`TrainBatchSampler`) and augmentation are a pure function of ``(seed, position in the
stream)``, so a resumed run sees exactly the batches an uninterrupted run would, on any number of processes.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import DataLoader, Dataset

from retinanet.config import ConfigError, DataConfig, RunConfig


class DataError(ValueError):
    """Bad dataset input: the message names the file and the field or value."""


# --------------------------------------------------------------------------------------------------------------
# Annotation file


def _field(source: str, where: str, entry: dict, key: str, types: tuple[type, ...]) -> Any:
    if not isinstance(entry, dict):
        raise DataError(f"{source}: {where}: expected an object, got {type(entry).__name__}")
    if key not in entry:
        raise DataError(f"{source}: {where}.{key}: missing field")
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, types):
        raise DataError(f"{source}: {where}.{key}: expected {'/'.join(t.__name__ for t in types)}, got {value!r}")
    return value


def load_coco_json(path: str | Path, *, require_annotations: bool = True) -> COCO:
    """Read and check a COCO ``instances`` (or test-dev ``image_info``) JSON file; return a pycocotools COCO.

    Checks every field the pipeline reads; raises :class:`DataError` naming the file and the field.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DataError(f"{source}: cannot read annotation file ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{source}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise DataError(f"{source}: top level: expected an object with images/annotations/categories")
    for key in ("images", "categories") + (("annotations",) if require_annotations else ()):
        if not isinstance(data.get(key), list):
            raise DataError(f"{source}: {key}: missing field or not a list")
    data.setdefault("annotations", [])
    if not isinstance(data["annotations"], list):
        raise DataError(f"{source}: annotations: not a list")
    image_ids: set[int] = set()
    for i, img in enumerate(data["images"]):
        image_id = _field(source, f"images[{i}]", img, "id", (int,))
        if image_id in image_ids:
            raise DataError(f"{source}: images[{i}].id: duplicate image id {image_id}")
        image_ids.add(image_id)
        _field(source, f"images[{i}]", img, "file_name", (str,))
        for key in ("height", "width"):
            if _field(source, f"images[{i}]", img, key, (int,)) <= 0:
                raise DataError(f"{source}: images[{i}].{key}: must be positive, got {img[key]}")
    category_ids: set[int] = set()
    for i, cat in enumerate(data["categories"]):
        category_ids.add(_field(source, f"categories[{i}]", cat, "id", (int,)))
    if not category_ids:
        raise DataError(f"{source}: categories: empty")
    known = ", ".join(str(c) for c in sorted(category_ids))
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        image_id = _field(source, where, ann, "image_id", (int,))
        if image_id not in image_ids:
            raise DataError(f"{source}: {where}.image_id: {image_id} is not in images")
        category_id = _field(source, where, ann, "category_id", (int,))
        if category_id not in category_ids:
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
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


# --------------------------------------------------------------------------------------------------------------
# Transforms (pure functions)


def resize_scale(height: int, width: int, min_size: int, max_size: int) -> float:
    """Scale that makes the shorter side ``min_size`` unless the longer side would exceed ``max_size``.

    Detectron's ``prep_im_for_blob``: the cap is tested on the rounded longer side.
    """
    short, long = min(height, width), max(height, width)
    scale = min_size / short
    if round(scale * long) > max_size:
        scale = max_size / long
    return scale


def resized_shape(height: int, width: int, scale: float) -> tuple[int, int]:
    """``(h, w)`` of the resized image (rounded like ``cv2.resize`` with ``fx = fy = scale``)."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def hflip_boxes(boxes: torch.Tensor, width: int) -> torch.Tensor:
    """Mirror ``[M, 4]`` xyxy boxes in an image of ``width`` pixels (continuous coordinates)."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


def normalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``[3, h, w]`` in [0, 1] -> ``(image - mean) / std`` per channel."""
    m = torch.tensor(mean, dtype=image.dtype).view(3, 1, 1)
    s = torch.tensor(std, dtype=image.dtype).view(3, 1, 1)
    return (image - m) / s


def pad_batch(images: Sequence[torch.Tensor], size_divisibility: int) -> torch.Tensor:
    """Stack ``[3, h_i, w_i]`` images into ``[N, 3, H, W]``, zero-padded bottom/right, H and W rounded up."""
    height = max(img.shape[1] for img in images)
    width = max(img.shape[2] for img in images)
    height = int(math.ceil(height / size_divisibility) * size_divisibility)
    width = int(math.ceil(width / size_divisibility) * size_divisibility)
    batch = images[0].new_zeros((len(images), 3, height, width))
    for i, img in enumerate(images):
        batch[i, :, : img.shape[1], : img.shape[2]] = img
    return batch


def read_image(path: Path) -> torch.Tensor:
    """``[3, h, w]`` float RGB in [0, 1]; DataError naming the file if it cannot be decoded."""
    try:
        with Image.open(path) as pil:
            array = np.asarray(pil.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from None
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


# --------------------------------------------------------------------------------------------------------------
# Dataset


@dataclass(frozen=True)
class Augment:
    """Per-sample augmentation choice, drawn from the sample's seed (see :class:`TrainBatchSampler`)."""

    min_size: int
    flip: bool


class CocoDetection(Dataset):
    """One COCO-format split. ``dataset[i]`` or ``dataset[(i, seed)]`` -> ``(image [3,h,w], target)``.

    ``target``: ``boxes`` float32 [M, 4] xyxy in resized pixels, ``labels`` int64 [M] in [0, K),
    ``image_id`` int, ``scale`` float (resized / original), ``orig_size`` (h, w), ``flipped`` bool.
    With a seed and ``train=True`` the scale is drawn from ``min_sizes`` and the image flipped with p = 0.5.
    """

    def __init__(self, images_dir: str | Path, annotation_file: str | Path, *, min_sizes: Sequence[int],
                 max_size: int, hflip: bool, pixel_mean: Sequence[float], pixel_std: Sequence[float],
                 train: bool, require_annotations: bool = True) -> None:
        self.images_dir = Path(images_dir)
        self.annotation_file = str(annotation_file)
        if not self.images_dir.is_dir():
            raise DataError(f"{self.images_dir}: image folder does not exist")
        self.coco = load_coco_json(annotation_file, require_annotations=require_annotations)
        self.category_ids: list[int] = sorted(self.coco.getCatIds())
        self.label_of = {cat: i for i, cat in enumerate(self.category_ids)}
        self.min_sizes = list(min_sizes)
        self.max_size = max_size
        self.hflip = hflip and train
        self.pixel_mean = list(pixel_mean)
        self.pixel_std = list(pixel_std)
        self.train = train
        self.counts = {"annotations": 0, "crowd": 0, "clipped": 0, "dropped_nonpositive": 0, "dropped_outside": 0,
                       "images_without_boxes": 0, "images": 0}
        self._boxes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.image_ids: list[int] = []
        for image_id in sorted(self.coco.imgs):
            info = self.coco.imgs[image_id]
            boxes, labels = self._clean_boxes(info)
            if train and len(boxes) == 0:
                self.counts["images_without_boxes"] += 1
                continue
            self._boxes[image_id] = (boxes, labels)
            self.image_ids.append(image_id)
        for image_id in self.image_ids:
            path = self.images_dir / self.coco.imgs[image_id]["file_name"]
            if not path.is_file():
                raise DataError(f"{path}: image file not found (images[id={image_id}].file_name in "
                                f"{self.annotation_file})")
        self.counts["images"] = len(self.image_ids)

    def _clean_boxes(self, info: dict) -> tuple[np.ndarray, np.ndarray]:
        """Apply the box policy of the module docstring; ``[M, 4]`` xyxy original pixels and ``[M]`` labels."""
        width, height = info["width"], info["height"]
        boxes, labels = [], []
        for ann in self.coco.imgToAnns.get(info["id"], []):
            self.counts["annotations"] += 1
            if ann["iscrowd"]:
                self.counts["crowd"] += 1
                continue
            x, y, w, h = ann["bbox"]
            if w <= 0 or h <= 0:
                self.counts["dropped_nonpositive"] += 1
                continue
            x1, y1, x2, y2 = x, y, x + w, y + h
            cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
            cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
            if cx2 <= cx1 or cy2 <= cy1:
                self.counts["dropped_outside"] += 1
                continue
            if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
                self.counts["clipped"] += 1
            boxes.append((cx1, cy1, cx2, cy2))
            labels.append(self.label_of[ann["category_id"]])
        return np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64)

    def report(self) -> dict[str, Any]:
        """Counts of the box policy, with the policy in words (for the run log and provenance)."""
        return {"annotation_file": self.annotation_file, **self.counts,
                "policy": "crowd: dropped; non-positive size: dropped; outside image: clipped (dropped if no area "
                          "left); training images without boxes: dropped; unknown category id: refused"}

    def __len__(self) -> int:
        return len(self.image_ids)

    def aspect_groups(self) -> list[int]:
        """Per index: 0 if the image is landscape (w >= h), 1 if portrait (detectron2's grouping)."""
        return [0 if self.coco.imgs[i]["width"] >= self.coco.imgs[i]["height"] else 1 for i in self.image_ids]

    def augment(self, seed: int | None) -> Augment:
        """The augmentation of a sample: its seed decides the jitter scale and the flip; no seed: none."""
        if seed is None or not self.train:
            return Augment(min_size=self.min_sizes[0], flip=False)
        rng = random.Random(seed)
        min_size = self.min_sizes[rng.randrange(len(self.min_sizes))]
        flip = self.hflip and rng.random() < 0.5
        return Augment(min_size=min_size, flip=flip)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, Any]]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        path = self.images_dir / info["file_name"]
        image = read_image(path)
        height, width = image.shape[1:]
        if (height, width) != (info["height"], info["width"]):
            raise DataError(f"{path}: image is {height}x{width} but {self.annotation_file} images[id={image_id}] "
                            f"says height={info['height']}, width={info['width']}")
        aug = self.augment(seed)
        scale = resize_scale(height, width, aug.min_size, self.max_size)
        new_h, new_w = resized_shape(height, width, scale)
        image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False,
                              antialias=True)[0].clamp_(0.0, 1.0)
        boxes_np, labels_np = self._boxes[image_id]
        boxes = torch.from_numpy(boxes_np).clone() * scale
        if aug.flip:
            image = image.flip(-1)
            boxes = hflip_boxes(boxes, new_w)
        image = normalize(image, self.pixel_mean, self.pixel_std)
        target = {"boxes": boxes, "labels": torch.from_numpy(labels_np).clone(), "image_id": image_id,
                  "scale": scale, "orig_size": (height, width), "flipped": aug.flip}
        return image, target


def collate(samples: list[tuple[torch.Tensor, dict]], size_divisibility: int) -> tuple[torch.Tensor, list[dict],
                                                                                         list[tuple[int, int]]]:
    """Samples -> ``(images [N,3,H,W], targets, image_sizes [(h, w)] of the resized images before padding)``."""
    images = [s[0] for s in samples]
    return (pad_batch(images, size_divisibility), [s[1] for s in samples],
            [(int(img.shape[1]), int(img.shape[2])) for img in images])


class _Collate:
    """Picklable collate for DataLoader workers."""

    def __init__(self, size_divisibility: int) -> None:
        self.size_divisibility = size_divisibility

    def __call__(self, samples: list) -> tuple[torch.Tensor, list[dict], list[tuple[int, int]]]:
        return collate(samples, self.size_divisibility)


# --------------------------------------------------------------------------------------------------------------
# Sampler


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """Augmentation seed of the sample at ``position`` of ``epoch``'s stream (independent of world size)."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1)[0])


class TrainBatchSampler:
    """Infinite, resumable, distributed stream of per-process batches of ``(index, augmentation seed)``.

    Each epoch is a permutation of the dataset drawn from ``(seed, epoch)``; it is cut into micro-batches of
    ``images_per_batch`` images (with ``groups``, images of one aspect group per micro-batch, the leftovers of
    all groups then form mixed micro-batches; an incomplete last micro-batch is dropped), so every epoch has the
    same number of micro-batches. Micro-batch ``m`` of the global stream goes to optimizer step
    ``m // (accumulation_steps * world_size)``, accumulation step ``(m // world_size) % accumulation_steps`` and
    rank ``m % world_size``: the same images make up each optimizer step whatever the number of processes. This
    is the job of ``torch.utils.data.DistributedSampler`` (disjoint shards of one seeded permutation per epoch),
    made resumable at any iteration: the stream starts at ``start_iter``.
    """

    def __init__(self, num_images: int, *, images_per_batch: int, seed: int, world_size: int = 1, rank: int = 0,
                 accumulation_steps: int = 1, start_iter: int = 0, groups: Sequence[int] | None = None) -> None:
        if num_images < images_per_batch:
            raise DataError(f"training set has {num_images} images, fewer than solver.images_per_process="
                            f"{images_per_batch}")
        self.num_images = num_images
        self.images_per_batch = images_per_batch
        self.seed = seed
        self.world_size = world_size
        self.rank = rank
        self.accumulation_steps = accumulation_steps
        self.start_iter = start_iter
        self.groups = list(groups) if groups is not None else None
        self._cache: tuple[int, np.ndarray, list[list[int]]] | None = None
        self.batches_per_epoch = len(self.epoch(0)[1])
        if self.batches_per_epoch == 0:
            raise DataError(f"training set: no complete batch of {images_per_batch} images per epoch")

    def epoch(self, epoch: int) -> tuple[np.ndarray, list[list[int]]]:
        """``epoch``'s permutation [num_images] and its micro-batches (lists of positions in the permutation)."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1], self._cache[2]
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_images)
        size = self.images_per_batch
        batches: list[list[int]] = []
        if self.groups is None:
            positions = list(range(self.num_images))
        else:
            buffers: dict[int, list[int]] = {}
            for pos, index in enumerate(perm):
                buf = buffers.setdefault(self.groups[index], [])
                buf.append(pos)
                if len(buf) == size:
                    batches.append(buf.copy())
                    buf.clear()
            positions = sorted(p for buf in buffers.values() for p in buf)
        batches += [positions[i:i + size] for i in range(0, len(positions) - size + 1, size)]
        self._cache = (epoch, perm, [[int(p) for p in b] for b in batches])
        return perm, self._cache[2]

    def micro_batch(self, m: int) -> list[tuple[int, int]]:
        """Global micro-batch ``m`` as ``[(dataset index, augmentation seed)]``."""
        epoch, k = divmod(m, self.batches_per_epoch)
        perm, batches = self.epoch(epoch)
        positions = batches[k]
        return [(int(perm[p]), sample_seed(self.seed, epoch, p)) for p in positions]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_iter = self.accumulation_steps * self.world_size
        m = self.start_iter * per_iter + self.rank
        while True:
            yield self.micro_batch(m)
            m += self.world_size


# --------------------------------------------------------------------------------------------------------------
# Builders (the only readers of the config here)


def _resolve(root: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else root / p


def _root(cfg: DataConfig) -> Path:
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"data.root: dataset root {root} does not exist")
    return root


def build_dataset(cfg: DataConfig, *, train: bool) -> CocoDetection:
    """The training split (scale jitter, flip) or the validation split (``min_size``, no flip)."""
    root = _root(cfg)
    images = _resolve(root, cfg.train_images if train else cfg.val_images)
    annotations = _resolve(root, cfg.train_annotations if train else cfg.val_annotations)
    min_sizes = (cfg.train_min_sizes or [cfg.min_size]) if train else [cfg.min_size]
    return CocoDetection(images, annotations, min_sizes=min_sizes, max_size=cfg.max_size, hflip=cfg.hflip,
                         pixel_mean=cfg.pixel_mean, pixel_std=cfg.pixel_std, train=train)


def check_num_classes(dataset: CocoDetection, num_classes: int) -> None:
    """ConfigError unless the split has exactly ``model.num_classes`` categories (labels must lie in [0, K))."""
    if len(dataset.category_ids) != num_classes:
        raise ConfigError(f"model.num_classes: {num_classes}, but {dataset.annotation_file} has "
                          f"{len(dataset.category_ids)} categories")


def build_train_loader(cfg: RunConfig, dataset: CocoDetection, *, world_size: int, rank: int,
                       accumulation_steps: int, start_iter: int, pin_memory: bool = False) -> DataLoader:
    """Infinite loader of ``(images, targets, image_sizes)`` for this process, starting at ``start_iter``.

    It draws nothing from the global RNGs (the order and augmentation come from the sampler; its own generator
    seeds the workers), so creating it at a resumed iteration leaves the restored RNG states untouched."""
    sampler = TrainBatchSampler(len(dataset), images_per_batch=cfg.solver.images_per_process, seed=cfg.seed,
                                world_size=world_size, rank=rank, accumulation_steps=accumulation_steps,
                                start_iter=start_iter,
                                groups=dataset.aspect_groups() if cfg.data.aspect_grouping else None)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.data.num_workers,
                      collate_fn=_Collate(cfg.data.size_divisibility), pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(cfg.seed))


def build_test_loader(cfg: RunConfig, dataset: CocoDetection, batch_size: int | None = None) -> DataLoader:
    """Sequential loader over every image of the split (no augmentation)."""
    return DataLoader(dataset, batch_size=batch_size or cfg.test.batch_size, shuffle=False,
                      num_workers=cfg.data.num_workers, collate_fn=_Collate(cfg.data.size_divisibility))
