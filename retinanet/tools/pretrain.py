"""Backbone pretraining on the embedded data: the small scales' stand-in for ImageNet.

The paper fine-tunes ResNets pretrained on ImageNet-1k classification (section 4.1, "Initialization"), with their
BatchNorm statistics frozen. No weights can be downloaded at the ``mini`` and ``smoke`` scales, so the workflow
pretrains each small ResNet once, as its own DAG step, on a classification task derived from the *training* split
(the validation split is only used to report held-out accuracy):

- ``K`` object classes: square crops centred on each annotated object, with context (side x ``U(1.2, 2.0)``) and
  jitter of the centre (up to 15 % of the side), as ImageNet's object-centric images;
- one *background* class: random squares (side ``U(8, S/2)`` px) that overlap no annotated object by more than
  30 % of their own area, so they include the unlabelled look-alike distractors and the clutter.

Every crop is resampled to ``crop`` x ``crop`` px (:func:`torchvision.ops.roi_align`, all crops of a batch at
once), normalized exactly as the detector's input (``data.pixel_mean`` / ``pixel_std``), flipped at random, and the
ResNet (torchvision's, trainable BatchNorm, ``K + 1`` outputs) trained with SGD + momentum, linear warmup and a
cosine decay. The saved file is a torchvision-format ``state_dict`` (``conv1.*``, ``bn1.*``, ``layer1.*`` ...,
``fc.*``), loaded by ``model.pretrained: <file>`` like the ImageNet one (the ``fc`` is dropped there), and its
BatchNorm statistics are what the detector freezes (``model.norm: frozen_bn``), as in the paper.

``python -m retinanet pretrain --data ROOT --depth 18 --out resnet18.pth [--iterations N] [--crop PX]``
writes the weights and ``<out>.json`` (settings, loss curve, held-out accuracy, wall time).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor
from torchvision.ops import box_area, roi_align

from retinanet.atomic import atomic_path, write_json
from retinanet.config import ConfigError, DataConfig
from retinanet.data.coco_json import DataError, load_coco_json
from retinanet.data.dataset import normalize, pad_batch, read_image


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of one pretraining run (recorded in ``<out>.json``)."""

    depth: int = 18
    crop: int = 48
    """Side of the classification crops (px)."""
    iterations: int = 1500
    batch_size: int = 128
    """Crops per step: half objects, half background."""
    base_lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 100
    seed: int = 0
    context: tuple[float, float] = (1.2, 2.0)
    """Crop side / object side, uniform in this range."""
    jitter: float = 0.15
    """Largest shift of the crop centre, as a fraction of the object side."""
    background_max_overlap: float = 0.3
    """A background square may share at most this fraction of its area with any annotated object."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first field out of range."""
        checks = {
            "depth": self.depth in (18, 34, 50, 101),
            "crop": self.crop >= 16,
            "iterations": self.iterations >= 1,
            "batch_size": self.batch_size >= 2,
            "base_lr": self.base_lr > 0,
            "warmup_iters": self.warmup_iters >= 0,
            "context": 1.0 <= self.context[0] <= self.context[1],
            "jitter": 0.0 <= self.jitter < 1.0,
            "background_max_overlap": 0.0 <= self.background_max_overlap < 1.0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"pretrain: {name} = {getattr(self, name)!r} is out of range")


@dataclass
class CropSource:
    """One split held in memory: normalized images ``[N, 3, H, W]`` (zero-padded), object boxes ``[M, 4]``
    (x1, y1, x2, y2 px), their image index ``[M]`` and contiguous labels ``[M]`` in ``0..K-1``, and each image's
    size ``[N, 2]`` (h, w)."""

    images: Tensor
    boxes: Tensor
    box_image: Tensor
    labels: Tensor
    sizes: Tensor
    num_classes: int


def load_split(root: str | Path, images_dir: str, annotations: str, data: DataConfig | None = None) -> CropSource:
    """Read every image and box of one COCO-format split (``root/images_dir``, ``root/annotations``).

    Raises DataError naming the file for a bad JSON or image, or for a split without any object.
    """
    data = data or DataConfig()
    root = Path(root)
    coco = load_coco_json(root / annotations)
    cat_ids = sorted(coco.getCatIds())
    label_of = {c: i for i, c in enumerate(cat_ids)}
    images, sizes, boxes, box_image, labels = [], [], [], [], []
    for n, image_id in enumerate(sorted(coco.getImgIds())):
        info = coco.loadImgs(image_id)[0]
        image = read_image(root / images_dir / info["file_name"])
        images.append(normalize(image, data.pixel_mean, data.pixel_std, data.input_format))
        sizes.append(image.shape[1:])
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=False)):
            x, y, w, h = ann["bbox"]
            if w > 0 and h > 0:
                boxes.append([x, y, x + w, y + h])
                box_image.append(n)
                labels.append(label_of[ann["category_id"]])
    if not boxes:
        raise DataError(f"{root / annotations}: no annotated object to pretrain on")
    return CropSource(pad_batch(images, 1), torch.tensor(boxes, dtype=torch.float32), torch.tensor(box_image),
                      torch.tensor(labels), torch.tensor(sizes), len(cat_ids))


def sample_crops(src: CropSource, cfg: PretrainConfig, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """One batch: crops ``[B, 3, crop, crop]`` and labels ``[B]`` (``K`` = background), half objects, half
    background, each flipped with probability 1/2."""
    n_obj = cfg.batch_size // 2
    n_bg = cfg.batch_size - n_obj
    pick = torch.randint(len(src.boxes), (n_obj,), generator=g)
    box, img = src.boxes[pick], src.box_image[pick]
    side = (box[:, 2:] - box[:, :2]).max(dim=1).values
    side = side * (cfg.context[0] + (cfg.context[1] - cfg.context[0]) * torch.rand(n_obj, generator=g))
    centre = (box[:, :2] + box[:, 2:]) / 2 + (torch.rand(n_obj, 2, generator=g) * 2 - 1) * cfg.jitter * side[:, None]
    obj_rois = torch.cat([img[:, None].float(), centre - side[:, None] / 2, centre + side[:, None] / 2], dim=1)
    bg_rois = _background_rois(src, cfg, n_bg, g)
    rois = torch.cat([obj_rois, bg_rois])
    crops = roi_align(src.images, rois, output_size=cfg.crop, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    labels = torch.cat([src.labels[pick], torch.full((n_bg,), src.num_classes)])
    flip = torch.rand(len(crops), generator=g) < 0.5
    crops[flip] = crops[flip].flip(-1)
    return crops, labels


def _background_rois(src: CropSource, cfg: PretrainConfig, count: int, g: torch.Generator) -> Tensor:
    """``[count, 5]`` rois (image index, x1, y1, x2, y2) of squares overlapping no object by more than
    ``cfg.background_max_overlap`` of their area; drawn in rounds of candidates until enough are found."""
    found: list[Tensor] = []
    have = 0
    for _ in range(100):
        m = 4 * count
        img = torch.randint(len(src.images), (m,), generator=g)
        h, w = src.sizes[img, 0].float(), src.sizes[img, 1].float()
        side = 8 + (torch.minimum(h, w) / 2 - 8).clamp(min=0) * torch.rand(m, generator=g)
        x1 = (w - side) * torch.rand(m, generator=g)
        y1 = (h - side) * torch.rand(m, generator=g)
        cand = torch.stack([x1, y1, x1 + side, y1 + side], dim=1)
        same = img[:, None] == src.box_image[None, :]
        lt = torch.maximum(cand[:, None, :2], src.boxes[None, :, :2])
        rb = torch.minimum(cand[:, None, 2:], src.boxes[None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=2) * same
        ok = (inter.max(dim=1).values / box_area(cand)) <= cfg.background_max_overlap
        found.append(torch.cat([img[ok, None].float(), cand[ok]], dim=1))
        have += int(ok.sum())
        if have >= count:
            return torch.cat(found)[:count]
    raise DataError(f"pretrain: could not find {count} background squares in 100 rounds (objects cover the images)")


def _lr(cfg: PretrainConfig, it: int) -> float:
    """Linear warmup from 1/3, then cosine decay to 0."""
    if it < cfg.warmup_iters:
        return cfg.base_lr * (1 / 3 + (2 / 3) * it / cfg.warmup_iters)
    t = (it - cfg.warmup_iters) / max(1, cfg.iterations - cfg.warmup_iters)
    return cfg.base_lr * 0.5 * (1 + math.cos(math.pi * t))


@torch.no_grad()
def accuracy(model: torch.nn.Module, src: CropSource, cfg: PretrainConfig, batches: int, seed: int) -> float:
    """Top-1 accuracy over ``batches`` fixed batches of crops (half objects, half background) of ``src``."""
    g = torch.Generator().manual_seed(seed)
    model.eval()
    right = total = 0
    for _ in range(batches):
        crops, labels = sample_crops(src, cfg, g)
        right += int((model(crops).argmax(dim=1) == labels).sum())
        total += len(labels)
    model.train()
    return right / total


def pretrain(cfg: PretrainConfig, train: CropSource, val: CropSource | None, out: str | Path,
             log_period: int = 50) -> dict[str, Any]:
    """Train a torchvision ResNet-``cfg.depth`` classifier (``K + 1`` classes) on crops of ``train``; write its
    state_dict to ``out`` and a summary (returned) to ``out`` + ``.json``, both atomically."""
    cfg.validate()
    torch.manual_seed(cfg.seed)
    model = torchvision.models.get_model(f"resnet{cfg.depth}", weights=None, num_classes=train.num_classes + 1)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], lr=cfg.base_lr, momentum=cfg.momentum)
    g = torch.Generator().manual_seed(cfg.seed)
    curve: list[dict[str, float]] = []
    start = time.perf_counter()
    model.train()
    for it in range(cfg.iterations):
        for group in opt.param_groups:
            group["lr"] = _lr(cfg, it)
        crops, labels = sample_crops(train, cfg, g)
        logits = model(crops)
        loss = F.cross_entropy(logits, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pretrain: loss is {loss.item()} at iteration {it}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (it + 1) % log_period == 0 or it + 1 == cfg.iterations:
            acc = float((logits.detach().argmax(dim=1) == labels).float().mean())
            curve.append({"iteration": it + 1, "loss": loss.item(), "train_batch_accuracy": acc})
            print(f"iter {it + 1}/{cfg.iterations} loss {loss.item():.4f} batch acc {acc:.3f} "
                  f"lr {_lr(cfg, it):.4f} {time.perf_counter() - start:.0f}s", flush=True)
    wall = time.perf_counter() - start
    summary = {
        "config": asdict(cfg),
        "num_classes": train.num_classes,
        "train_objects": len(train.boxes),
        "curve": curve,
        "train_accuracy": accuracy(model, train, cfg, 8, cfg.seed + 1),
        "val_accuracy": accuracy(model, val, cfg, 8, cfg.seed + 2) if val is not None else None,
        "wall_s": wall,
    }
    out = Path(out)
    with atomic_path(out) as tmp:
        torch.save(model.state_dict(), tmp)
    write_json(str(out) + ".json", summary)
    return summary


# ----------------------------------------------------------------------------------------------------------------
# CLI: python -m retinanet pretrain


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``pretrain`` with the CLI of ``retinanet.__main__``."""
    d = PretrainConfig()
    p = subparsers.add_parser("pretrain", help="pretrain a small ResNet on crops of the embedded data",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset root (COCO layout: train/, val/, annotations/)")
    p.add_argument("--out", required=True, help="weights file to write (torchvision state_dict)")
    p.add_argument("--depth", type=int, default=d.depth, choices=(18, 34, 50, 101))
    p.add_argument("--iterations", type=int, default=d.iterations)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.base_lr, help="base learning rate (SGD, momentum 0.9)")
    p.add_argument("--crop", type=int, default=d.crop, help="crop side in px")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = PretrainConfig(depth=args.depth, crop=args.crop, iterations=args.iterations, batch_size=args.batch_size,
                         base_lr=args.lr, seed=args.seed)
    cfg.validate()
    train = load_split(args.data, "train", "annotations/instances_train.json")
    val_json = Path(args.data) / "annotations" / "instances_val.json"
    val = load_split(args.data, "val", "annotations/instances_val.json") if val_json.is_file() else None
    summary = pretrain(cfg, train, val, args.out)
    print(f"resnet{cfg.depth}: held-out accuracy {summary['val_accuracy']}, {summary['wall_s']:.0f}s -> {args.out}")
    return 0
