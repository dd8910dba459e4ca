"""A run config's training step on synthetic data, for measurements without a dataset.

Used by ``python -m retinanet plan --measure`` (seconds per image of a training step on this device) and by
``benchmarks/gpu_check.py`` (a short training on one fixed batch whose loss must fall). The step is the one
``retinanet.engine.train`` takes (zero_grad, forward with matching and losses under the run's precision, backward,
optional gradient clipping, SGD step), on one process, without data loading.

The backbone gets random ResNet weights saved as a state_dict file (:func:`random_backbone_file`), so a run that
fine-tunes pretrained weights with frozen BatchNorm and frozen stages computes exactly what it computes with
ImageNet weights, without a download.
"""

from __future__ import annotations

import atexit
import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch
import torchvision
from torch import Tensor

from retinanet.config import RunConfig
from retinanet.engine.precision import autocast, grad_scaler
from retinanet.engine.solver import build_optimizer
from retinanet.modeling.backbone import STYLE_KEY
from retinanet.modeling.detector import RetinaNet, build_model

Targets = list[dict[str, Tensor]]

ASPECT = 4 / 3
"""Width / height of the synthetic images: COCO's most common shape (640 x 480)."""


@cache
def random_backbone_file(depth: int, style: str = "torchvision") -> str:
    """A torchvision ResNet-``depth`` state_dict with random weights (seed 0), in a temporary folder of this
    process: a stand-in for ImageNet weights, declared of backbone ``style`` (the backbone checks a declared style
    against ``model.backbone_style``; the paper scale's is ``caffe2``). The folder is removed when the process exits:
    each file is 45-100 MB, and a test suite's processes left gigabytes behind."""
    folder = Path(tempfile.mkdtemp(prefix="retinanet-probe-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    torch.manual_seed(0)
    path = folder / f"resnet{depth}-{style}-random.pth"
    torch.save({"model": torchvision.models.get_model(f"resnet{depth}").state_dict(), STYLE_KEY: style}, path)
    return str(path)


def probe_config(cfg: RunConfig) -> RunConfig:
    """``cfg`` with its pretrained weights replaced by random ones of the same depth (no file or download
    needed); a run without pretrained weights is unchanged."""
    if cfg.model.pretrained == "none":
        return cfg
    model = dataclasses.replace(cfg.model, pretrained=random_backbone_file(cfg.model.depth, cfg.model.backbone_style))
    return dataclasses.replace(cfg, model=model)


def image_shape(cfg: RunConfig) -> tuple[int, int]:
    """``(H, W)`` of a synthetic training image: ``data.min_size`` by ``ASPECT`` times it (capped at
    ``data.max_size``), both padded up to ``data.size_divisibility`` as the data layer pads a batch."""
    h = cfg.data.min_size
    w = min(cfg.data.max_size, round(h * ASPECT))
    d = cfg.data.size_divisibility
    return -(-h // d) * d, -(-w // d) * d


def synthetic_batch(cfg: RunConfig, images: int, device: torch.device, seed: int = 0) -> tuple[Tensor, Targets]:
    """Normalized random images ``[images, 3, H, W]`` (:func:`image_shape`) and 1-6 random boxes per image (sides
    8-70 % of the image, classes uniform over ``model.num_classes``), on ``device``."""
    g = torch.Generator().manual_seed(seed)
    h, w = image_shape(cfg)
    x = torch.randn(images, 3, h, w, generator=g)
    size = torch.tensor([w, h], dtype=torch.float32)
    targets = []
    for _ in range(images):
        m = int(torch.randint(1, 7, (1,), generator=g))
        wh = (0.08 + 0.62 * torch.rand(m, 2, generator=g)) * size
        xy = torch.rand(m, 2, generator=g) * (size - wh)
        targets.append({"boxes": torch.cat([xy, xy + wh], dim=1).to(device),
                        "labels": torch.randint(0, cfg.model.num_classes, (m,), generator=g).to(device)})
    return x.to(device), targets


def build(cfg: RunConfig, device: torch.device, seed: int = 0) -> tuple[RetinaNet, torch.optim.Optimizer]:
    """The run's model (random backbone weights, :func:`probe_config`) in training mode on ``device``, and its
    optimizer."""
    cfg = probe_config(cfg)
    torch.manual_seed(seed)
    model = build_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    return model, build_optimizer(model, cfg.solver)


def train_step(model: RetinaNet, optimizer: torch.optim.Optimizer, cfg: RunConfig,
               device: torch.device) -> Callable[[Tensor, Targets], Tensor]:
    """``step(images, targets) -> loss``: one SGD step as ``retinanet.engine.train`` takes it (precision with its loss
    scaling, channels-last, clipping), at the paper's lr per image without a schedule: ``solver.base_lr`` times
    ``images / solver.reference_batch`` (the linear scaling rule, as :func:`retinanet.engine.solver.plan_batch` scales
    it for a smaller batch; 0.00125 for 2 images). The returned loss is detached. ``step.scaler`` is the step's
    :func:`retinanet.engine.precision.grad_scaler`."""
    scaler = grad_scaler(cfg.precision, device)

    def step(images: Tensor, targets: Targets) -> Tensor:
        lr = cfg.solver.base_lr * images.shape[0] / cfg.solver.reference_batch
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_factor", 1.0)
        optimizer.zero_grad(set_to_none=True)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, cfg.precision):
            losses = model.criterion(model(images), targets, fg_ema=model.fg_ema)
        loss = losses["loss_cls"] + losses["loss_box"]
        scaler.scale(loss).backward()
        if cfg.solver.clip_grad_norm is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.solver.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        return loss.detach()

    step.scaler = scaler  # type: ignore[attr-defined]

    return step


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Wait for the device's queued work (CUDA), or nothing (CPU)."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def seconds_per_image(cfg: RunConfig, device: torch.device, *, images: int | None = None, warmup: int = 2,
                      steps: int = 5) -> float:
    """Median wall seconds of one training step on ``device`` divided by its images (``images``, default
    ``solver.images_per_process``: the paper's 2 per GPU), after ``warmup`` discarded steps (allocator, cuDNN
    autotuning, kernel compilation)."""
    n = images or cfg.solver.images_per_process
    model, optimizer = build(cfg, device)
    step = train_step(model, optimizer, cfg, device)
    batch = synthetic_batch(cfg, n, device)
    sync = synchronizer(device)
    for _ in range(warmup):
        step(*batch)
    times = []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        step(*batch)
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] / n
