"""COCO-format detection data: the dataset, box-aware transforms, batching and the loaders.

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

Resizing is bilinear without antialiasing, on OpenCV's sampling grid, as Detectron's ``cv2.resize``
(:func:`resize_image`); ``data.resize_antialias`` antialiases instead. The backbone's input (:func:`normalize`) is
RGB in [0, 1] standardised per channel, or, for Detectron's MSRA ResNets (``data.input_format: bgr255``), BGR in
[0, 255] minus the mean.

Refused (one-line :class:`retinanet.data.coco_json.DataError` naming the file and field): everything
:func:`retinanet.data.coco_json.load_coco_json` checks in the annotation file, a missing or unreadable image, an image
whose size differs from its JSON entry, a missing dataset root, a training split with fewer images that keep a box
than ``solver.images_per_process`` (:func:`check_train_images`).

Data order (:class:`retinanet.data.sampler.TrainBatchSampler`) and augmentation are a pure function of ``(seed,
position in the stream)``, so a resumed run sees exactly the batches an uninterrupted run would, on any number of
processes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from retinanet.engine import preemption
from retinanet.data.coco_json import DataError, load_coco_json
from retinanet.config import ConfigError, DataConfig, RunConfig
from retinanet.data.sampler import TrainBatchSampler

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


def resize_image(image: torch.Tensor, size: tuple[int, int], scale: float, antialias: bool) -> torch.Tensor:
    """``[3, h, w]`` in [0, 1] -> ``[3, *size]``, bilinear.

    Without antialiasing this is Detectron's ``cv2.resize(im, None, fx=scale, fy=scale, INTER_LINEAR)``: output
    pixel ``x`` samples the source at ``(x + 0.5) / scale - 0.5``, OpenCV's grid from the scale factor (torch's
    ``F.interpolate(size=...)`` would use ``size / (h, w)``, off by up to half a pixel at the far edge). With it,
    torch's antialiased bilinear, which widens the kernel when downsampling.
    """
    if antialias:
        return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False,
                             antialias=True)[0].clamp_(0.0, 1.0)
    # aten's op takes the output size and the scale whose inverse maps output to source coordinates
    return torch.ops.aten.upsample_bilinear2d(image[None], list(size), False, scale, scale)[0]


def normalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float],
              input_format: str = DataConfig.input_format) -> torch.Tensor:
    """``[3, h, w]`` RGB in [0, 1] -> the backbone's input, ``(pixel - mean) / std`` per channel, where ``pixel`` is
    the RGB value (``input_format`` ``rgb``) or 255 x the BGR value (``bgr255``: Detectron's MSRA ResNets, with
    ``std`` 1)."""
    if input_format == "bgr255":
        image = image.flip(0) * 255.0
    elif input_format != "rgb":
        raise ValueError(f"data.input_format: unknown format {input_format!r}")
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
    """Per-sample augmentation choice, drawn from the sample's seed (:class:`retinanet.data.sampler.TrainBatchSampler`)."""

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
                 train: bool, require_annotations: bool = True, input_format: str = DataConfig.input_format,
                 resize_antialias: bool = DataConfig.resize_antialias, check_images: bool = True) -> None:
        self.images_dir = Path(images_dir)
        self.annotation_file = str(annotation_file)
        if check_images and not self.images_dir.is_dir():
            raise DataError(f"{self.images_dir}: image folder does not exist")
        self.coco = load_coco_json(annotation_file, require_annotations=require_annotations)
        self.category_ids: list[int] = sorted(self.coco.getCatIds())
        self.label_of = {cat: i for i, cat in enumerate(self.category_ids)}
        self.min_sizes = list(min_sizes)
        self.max_size = max_size
        self.hflip = hflip and train
        self.pixel_mean = list(pixel_mean)
        self.pixel_std = list(pixel_std)
        self.input_format = input_format
        self.resize_antialias = resize_antialias
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
        for image_id in self.image_ids if check_images else ():  # off: only the JSON is read (anchor-stats)
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

    def original_boxes(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``index``'s boxes after the box policy, ``[M, 4]`` xyxy in *original* pixels, and labels ``[M]``
        in [0, K); no pixels are read."""
        return self._boxes[self.image_ids[index]]

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
        image = resize_image(image, (new_h, new_w), scale, self.resize_antialias)
        boxes_np, labels_np = self._boxes[image_id]
        boxes = torch.from_numpy(boxes_np).clone() * scale
        if aug.flip:
            image = image.flip(-1)
            boxes = hflip_boxes(boxes, new_w)
        image = normalize(image, self.pixel_mean, self.pixel_std, self.input_format)
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
                         pixel_mean=cfg.pixel_mean, pixel_std=cfg.pixel_std, train=train,
                         input_format=cfg.input_format, resize_antialias=cfg.resize_antialias)


def check_num_classes(dataset: CocoDetection, num_classes: int) -> None:
    """ConfigError unless the split has exactly ``model.num_classes`` categories (labels must lie in [0, K))."""
    if len(dataset.category_ids) != num_classes:
        raise ConfigError(f"model.num_classes: {num_classes}, but {dataset.annotation_file} has "
                          f"{len(dataset.category_ids)} categories")


def check_train_images(dataset: CocoDetection, images_per_process: int) -> None:
    """DataError naming the annotation file unless the training split keeps at least ``images_per_process``
    images with a box (the box policy drops the others), saying whether the file lists no images at all or
    images without a usable (non-crowd, non-empty) box."""
    kept, listed = len(dataset), len(dataset.coco.imgs)
    if kept >= images_per_process:
        return
    source = dataset.annotation_file
    if listed == 0:
        raise DataError(f"{source}: images: the file lists no images; training needs at least "
                        f"solver.images_per_process={images_per_process}")
    counts = dataset.counts
    kinds = {"crowd": "crowd", "dropped_nonpositive": "without width or height", "dropped_outside": "outside the image"}
    why = ", ".join(f"{counts[k]} {text}" for k, text in kinds.items() if counts[k])
    have = f"none of its {listed} images has" if kept == 0 else f"only {kept} of its {listed} images have"
    raise DataError(f"{source}: annotations: {have} a non-crowd box with an area inside the image "
                    f"({counts['annotations']} annotations{': ' + why if why else ''}); training needs at least "
                    f"solver.images_per_process={images_per_process}")


def build_train_loader(cfg: RunConfig, dataset: CocoDetection, *, world_size: int, rank: int,
                       accumulation_steps: int, start_iter: int, pin_memory: bool = False) -> DataLoader:
    """Infinite loader of ``(images, targets, image_sizes)`` for this process, starting at ``start_iter``.

    It draws nothing from the global RNGs (the order and augmentation come from the sampler; its own generator
    seeds the workers), so creating it at a resumed iteration leaves the restored RNG states untouched."""
    check_train_images(dataset, cfg.solver.images_per_process)
    sampler = TrainBatchSampler(len(dataset), images_per_batch=cfg.solver.images_per_process, seed=cfg.seed,
                                world_size=world_size, rank=rank, accumulation_steps=accumulation_steps,
                                start_iter=start_iter,
                                groups=dataset.aspect_groups() if cfg.data.aspect_grouping else None)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.data.num_workers,
                      collate_fn=_Collate(cfg.data.size_divisibility), pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(cfg.seed),
                      worker_init_fn=preemption.worker_stop_signals)  # a job's SIGTERM is for the main process


def build_test_loader(cfg: RunConfig, dataset: CocoDetection, batch_size: int | None = None) -> DataLoader:
    """Sequential loader over every image of the split (no augmentation)."""
    return DataLoader(dataset, batch_size=batch_size or cfg.test.batch_size, shuffle=False,
                      num_workers=cfg.data.num_workers, collate_fn=_Collate(cfg.data.size_divisibility))
