"""Detector-level benchmarks: training-step throughput and batch-1 inference, ours vs torchvision's RetinaNet.

Both models come from one seeded :func:`retinanet.modeling.detector.build_model` (the peer gets a copy of its weights,
see :mod:`benchmarks.peer`), see the same batch tensor and targets, and train with the same SGD settings. A training
step is ``zero_grad, forward (with matching and losses), backward, optimizer.step``. Inference is ``predict`` /
torchvision's eval forward, post-processing included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

from benchmarks.peer import build_peer, comparable_config
from retinanet.config import ModelConfig, RunConfig, from_dict
from retinanet.engine.solver import build_optimizer
from retinanet.modeling.detector import RetinaNet, build_model
from retinanet.tools.probe import random_backbone_file

ROOT = Path(__file__).resolve().parent.parent

Targets = list[dict[str, Tensor]]
Step = Callable[[], None]
"""A timed call with no result: one training step, or one loss computation and its backward."""
Call = Callable[[], list]
"""A timed inference call: one batch through a detector, its detections returned."""


@dataclass
class Setting:
    """One benchmark setting: model size, image side and batch."""

    name: str
    depth: int
    fpn_channels: int
    head_convs: int
    num_classes: int
    image_size: int
    batch: int
    norm: str = "frozen_bn"
    """``frozen_bn`` + ``freeze_at`` 2 model the paper's frozen pretrained backbone (weights: random, seed 0,
    :func:`retinanet.tools.probe.random_backbone_file`)."""
    freeze_at: int = 2


def mini_setting(batch: int | None = None) -> Setting:
    """The mini study's model and batch, read from ``config/mini.yaml`` (ablation scale 600 -> its ``min_size``)."""
    scale = yaml.safe_load((ROOT / "config" / "mini.yaml").read_text())
    model = scale["base"]["model"]
    depth = next(d["ours"] for d in scale["maps"]["depth"] if d["paper"] == 50)
    size = next(s["min_size"] for s in scale["maps"]["image_scale"]
                if s["paper"] == scale["grids"]["ablation_scale"])
    return Setting(name=f"mini: R-{depth}-FPN C={model['fpn_channels']} x{model['head_convs']}, {size} px",
                   depth=depth, fpn_channels=model["fpn_channels"], head_convs=model["head_convs"],
                   num_classes=model["num_classes"], image_size=size,
                   batch=batch or scale["base"]["solver"]["batch_size"],
                   norm=model.get("norm", ModelConfig.norm), freeze_at=model.get("freeze_at", ModelConfig.freeze_at))


def r50_setting(image_size: int = 512, batch: int = 2) -> Setting:
    """ResNet-50-FPN with the paper's head (C=256, 4 convs, 80 classes)."""
    return Setting(name=f"R-50-FPN C=256 x4, {image_size} px", depth=50, fpn_channels=256, head_convs=4,
                   num_classes=80, image_size=image_size, batch=batch)


def run_config(s: Setting) -> RunConfig:
    """Our run config for a setting (the peer-comparable loss choices of :mod:`benchmarks.peer`)."""
    pretrained = random_backbone_file(s.depth) if s.norm == "frozen_bn" else "none"
    cfg = from_dict({"model": {"depth": s.depth, "fpn_channels": s.fpn_channels, "head_convs": s.head_convs,
                               "num_classes": s.num_classes, "pretrained": pretrained, "norm": s.norm,
                               "freeze_at": s.freeze_at},
                     "data": {"min_size": s.image_size, "max_size": s.image_size}},
                    source="benchmarks")
    return comparable_config(cfg)


def build_pair(s: Setting, seed: int = 0) -> tuple[RetinaNet, nn.Module, RunConfig]:
    """Ours and the peer with identical weights."""
    cfg = run_config(s)
    torch.manual_seed(seed)
    ours = build_model(cfg)
    return ours, build_peer(ours, cfg), cfg


def make_batch(s: Setting, seed: int = 0, batch: int | None = None) -> tuple[Tensor, Targets]:
    """A normalized image batch ``[N, 3, S, S]`` and 1-6 random boxes per image (sides 8%-70% of the image)."""
    g = torch.Generator().manual_seed(seed)
    n = batch or s.batch
    images = torch.randn(n, 3, s.image_size, s.image_size, generator=g)
    targets = []
    for _ in range(n):
        m = int(torch.randint(1, 7, (1,), generator=g))
        wh = (0.08 + 0.62 * torch.rand(m, 2, generator=g)) * s.image_size
        xy = torch.rand(m, 2, generator=g) * (s.image_size - wh)
        targets.append({"boxes": torch.cat([xy, xy + wh], dim=1),
                        "labels": torch.randint(0, s.num_classes, (m,), generator=g)})
    return images, targets


def dense_scores(ours: RetinaNet, peer: nn.Module, logit_bias: float = -2.0) -> None:
    """Set both models' classification bias so that every anchor scores sigmoid(bias) ~ 0.12 > 0.05: every level
    then yields its full top-1000 candidates, as early in training (the post-processing's heavy case; with the
    prior init every score is 0.01 and nothing passes the threshold)."""
    with torch.no_grad():
        ours.head.cls_subnet[-1].bias.fill_(logit_bias)
        peer.head.classification_head.cls_logits.bias.fill_(logit_bias)


def train_steps(ours: RetinaNet, peer: nn.Module, cfg: RunConfig, images: Tensor, targets: Targets,
                *, bf16: bool = False, channels_last: bool = False) -> tuple[Step, Step]:
    """``(peer_step, ours_step)`` closures, each one SGD step on the batch."""
    lr = cfg.solver.base_lr * images.shape[0] / cfg.solver.reference_batch

    def make(model: nn.Module, loss_of: Callable[[dict[str, Tensor]], Tensor], opt: torch.optim.Optimizer) -> Step:
        for group in opt.param_groups:
            group["lr"] = lr
        x = images.contiguous(memory_format=torch.channels_last) if channels_last else images
        model.train()

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = model(x, targets)
            loss_of(out).backward()
            opt.step()
        return step

    # The peer steps with torch's default SGD (as torchvision's reference scripts), ours with our training's
    # optimizer (`solver.build_optimizer`): the same update.
    peer_opt = torch.optim.SGD([p for p in peer.parameters() if p.requires_grad], lr=lr,
                               momentum=cfg.solver.momentum, weight_decay=cfg.solver.weight_decay)
    return (make(peer, lambda o: o["classification"] + o["bbox_regression"], peer_opt),
            make(ours, lambda o: o["loss_cls"] + o["loss_box"], build_optimizer(ours, cfg.solver)))


def frozen_forward(ours: RetinaNet, images: Tensor, freeze_at: int) -> Callable[[], list[Tensor]]:
    """``call``: the forward of the backbone's ``freeze_at`` frozen stages alone (1: the stem; 2: stem and res2),
    without autograd, as a training step runs them (no gradient reaches them). It bounds what a cache of their
    outputs could save per step; a cache would hold ``[N, 64, H/4, W/4]`` per image and flip, and scale jitter
    (Table 2) would defeat it."""
    ours.train()

    def call() -> list[Tensor]:
        with torch.no_grad():
            return ours.backbone.bottom_up(images, stages=freeze_at - 1)

    return call


def infer_calls(ours: RetinaNet, peer: nn.Module, image: Tensor, *, bf16: bool = False,
                ours_format: torch.memory_format = torch.contiguous_format,
                peer_format: torch.memory_format = torch.contiguous_format) -> tuple[Call, Call]:
    """``(peer_call, ours_call)`` closures, each one batch-1 inference with post-processing; each model and its
    copy of ``image [1, 3, H, W]`` are put in its layout (``ours_format``: :func:`inference_memory_format`'s)."""
    sizes = [tuple(image.shape[-2:])] * image.shape[0]
    ours.eval().to(memory_format=ours_format)
    peer.eval().to(memory_format=peer_format)
    x_ours, x_peer = image.contiguous(memory_format=ours_format), image.contiguous(memory_format=peer_format)

    def run_peer() -> list:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return peer(x_peer)

    def run_ours() -> list:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return ours.predict(x_ours, sizes)

    return run_peer, run_ours


def loss_calls(ours: RetinaNet, peer: nn.Module, images: Tensor, targets: Targets) -> tuple[Step, Step]:
    """``(peer_call, ours_call)``: the detector-specific part of a training step alone, on fixed head outputs:
    anchors, matching, classification and box targets, both losses, and their backward to the head outputs
    (everything but the shared network)."""
    ours.train()
    peer.train()
    with torch.no_grad():
        features = ours.backbone(images)
        logits, deltas = ours.head(features)
    shapes = [tuple(f.shape[-2:]) for f in features]
    stubs = [f[:, :0] for f in features]  # torchvision's anchor generator reads only the shapes and dtype
    image_list = ImageList(images, [tuple(images.shape[-2:])] * images.shape[0])

    def run_peer() -> None:
        cls = logits.detach().requires_grad_()
        box = deltas.detach().requires_grad_()
        anchors = peer.anchor_generator(image_list, stubs)
        losses = peer.compute_loss(targets, {"cls_logits": cls, "bbox_regression": box}, anchors)
        (losses["classification"] + losses["bbox_regression"]).backward()

    def run_ours() -> None:
        cls = logits.detach().requires_grad_()
        box = deltas.detach().requires_grad_()
        losses = ours.losses_from_outputs(cls, box, ours.anchors(shapes, images.device), targets)
        (losses["loss_cls"] + losses["loss_box"]).backward()

    return run_peer, run_ours
