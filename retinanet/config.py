"""Typed run configuration: one dataclass per concern, loaded from YAML with clear errors.

A *run* is one trained model. Its whole description is a :class:`RunConfig`; the study (``workflow/``) builds run
configs by applying overrides to a scale's base config. Every default below is the paper's value or, where the
paper is silent, the value of its reference code (Detectron, Caffe2), and is written here once.

YAML layout mirrors the dataclasses::

    model:  {depth: 50, ...}
    anchors: {sizes: [32, 64, 128, 256, 512], ...}
    ...

Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the dotted field path
(``loss.gamma``) and, when loaded from a file, the file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from retinanet.config_parsing import ConfigError, build_dataclass, read_yaml_mapping, where


@dataclass
class ModelConfig:
    """Backbone, FPN and heads (paper section 4, Fig. 3)."""

    depth: int = 50
    """ResNet depth: 18, 34, 50 or 101."""
    num_classes: int = 80
    """K, the number of object classes (COCO: 80)."""
    fpn_channels: int = 256
    """C, the width of every pyramid level P3-P7 and of both subnets."""
    head_convs: int = 4
    """Number of 3x3 conv + ReLU layers in each subnet before the output conv."""
    norm: Literal["frozen_bn", "bn", "gn"] = "frozen_bn"
    """Backbone normalization. Detectron froze BN statistics and affine for ImageNet-pretrained backbones."""
    freeze_at: int = 2
    """0: train everything; 1: freeze the stem; 2: freeze stem + res2 (Detectron's default)."""
    pretrained: str = "imagenet"
    """``imagenet`` (torchvision weights API), ``none`` (random init), or a path to a local state_dict file."""
    backbone_style: Literal["torchvision", "caffe2"] = "torchvision"
    """The ResNet variant, which must be the pretrained weights' own. ``caffe2``: Detectron's MSRA ResNets, the ones
    the paper fine-tuned (R-50.pkl / R-101.pkl converted by ``python -m retinanet convert-weights``): stride 2 on the
    first 1x1 conv of each downsampling bottleneck, BGR input in [0, 255] minus the mean. ``torchvision``: stride
    on the 3x3 conv ("ResNet v1.5"), RGB input in [0, 1], standardised. Each style's ``data.input_format``,
    ``pixel_mean`` and ``pixel_std``: :data:`BACKBONE_INPUT`. The default is torchvision's because ``pretrained:
    imagenet`` downloads torchvision's weights; the paper scale selects caffe2 (``weights.source: msra``)."""
    prior_prob: float = 0.01
    """pi of section 4.1: the classification bias is initialized to -log((1 - pi) / pi)."""
    cls_bias_init: Literal["prior", "zero"] = "prior"
    """``prior`` (section 4.1) or ``zero`` (the plain init that diverges with CE, section 5.1)."""


@dataclass
class AnchorConfig:
    """Anchors per pyramid level (section 4, 'Anchors'; Table 1c)."""

    sizes: list[float] = field(default_factory=lambda: [32.0, 64.0, 128.0, 256.0, 512.0])
    """Base anchor side (sqrt of area) on P3..P7."""
    num_scales: int = 3
    """Octave scales per level: 2^(k / num_scales) for k < num_scales."""
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    """Height / width ratios."""


@dataclass
class MatcherConfig:
    """Anchor to ground-truth assignment (section 4, 'Anchors')."""

    fg_iou: float = 0.5
    bg_iou: float = 0.4
    low_quality: Literal["detectron", "any", "none"] = "detectron"
    """Detectron: each GT's best anchors become foreground, then any of them below ``bg_iou`` goes back to
    background. ``any``: detectron2/torchvision keep them foreground. ``none``: IoU thresholds only."""


@dataclass
class LossConfig:
    """Classification and box losses (sections 3, 4.1, 5.1; appendix A)."""

    cls: Literal["focal", "focal_star"] = "focal"
    """``focal``: eq. 5 (gamma = 0 is alpha-balanced CE, eq. 3). ``focal_star``: FL* of eq. 7-8."""
    gamma: float = 2.0
    alpha: float | None = 0.25
    """Weight of the positive class; ``null`` disables balancing (eq. 4)."""
    beta: float = 0.0
    """FL* shift (eq. 7); unused by ``focal``."""
    box: Literal["smooth_l1", "l1"] = "smooth_l1"
    smooth_l1_beta: float = 0.11
    """Detectron's RetinaNet smooth L1 beta."""
    normalizer: Literal["detectron", "per_image", "ema"] = "detectron"
    """``detectron``: sum over this process's images of (fg anchors + 1). ``per_image``: each image's loss divided
    by max(1, its fg anchors), then averaged. ``ema``: detectron2's moving average of the fg count."""
    ema_momentum: float = 0.9
    sampling: Literal["all", "ohem"] = "all"
    """``all``: the loss over every non-ignored anchor (the paper). ``ohem``: Table 1d's baseline, CE on a mined
    minibatch."""
    ohem_batch: int = 128
    """OHEM minibatch size B per image."""
    ohem_nms: float = 0.7
    """IoU threshold of the NMS over anchor boxes before top-B selection."""
    ohem_pos_fraction: float | None = None
    """``0.25`` enforces OHEM 1:3 (at most 1 positive for 3 negatives); ``null``: plain OHEM."""


#: The input each ``model.backbone_style``'s ImageNet weights were trained on, as ``data`` fields: torchvision's
#: ResNets take RGB in [0, 1] standardised per channel; Detectron's MSRA ResNets BGR in [0, 255] minus its
#: ``PIXEL_MEANS`` (BGR order, ``lib/core/config.py``) and no division by a std.
BACKBONE_INPUT: dict[str, dict[str, Any]] = {
    "torchvision": {"input_format": "rgb", "pixel_mean": [0.485, 0.456, 0.406], "pixel_std": [0.229, 0.224, 0.225]},
    "caffe2": {"input_format": "bgr255", "pixel_mean": [102.9801, 115.9465, 122.7717], "pixel_std": [1.0, 1.0, 1.0]},
}


@dataclass
class DataConfig:
    """Datasets and transforms (section 5, 'Optimization'; Table 2)."""

    root: str = "data/coco"
    """Dataset root; the paths below are relative to it unless absolute."""
    train_images: str = "train2017"
    train_annotations: str = "annotations/instances_train2017.json"
    val_images: str = "val2017"
    val_annotations: str = "annotations/instances_val2017.json"
    min_size: int = 600
    """Train and test scale: the shorter image side after resizing."""
    max_size: int = 1000
    """Cap on the longer side (Detectron: 1000 at 600, 1333 at 800)."""
    train_min_sizes: list[int] | None = None
    """Scale jitter (Table 2): a list of shorter-side scales sampled per image; ``null`` uses ``min_size``."""
    hflip: bool = True
    size_divisibility: int = 128
    """Batches are padded to a multiple of this (the coarsest stride, P7 = 2^7)."""
    aspect_grouping: bool = True
    num_workers: int = 4
    input_format: Literal["rgb", "bgr255"] = BACKBONE_INPUT["torchvision"]["input_format"]
    """Channel order and range of the pixels that ``pixel_mean`` and ``pixel_std`` apply to: ``rgb`` in [0, 1] or
    ``bgr255`` in [0, 255]. Must be the one of ``model.backbone_style`` (:data:`BACKBONE_INPUT`)."""
    pixel_mean: list[float] = field(default_factory=lambda: list(BACKBONE_INPUT["torchvision"]["pixel_mean"]))
    """Per channel, in ``input_format``'s order and range."""
    pixel_std: list[float] = field(default_factory=lambda: list(BACKBONE_INPUT["torchvision"]["pixel_std"]))
    resize_antialias: bool = False
    """Antialias the bilinear resize. Detectron resized with ``cv2.resize`` (``INTER_LINEAR``, scale factor given):
    no antialiasing, source coordinate ``(x + 0.5) / scale - 0.5``; false does exactly that."""


@dataclass
class SolverConfig:
    """SGD schedule (section 5, 'Optimization'; warmup from Detectron)."""

    base_lr: float = 0.01
    """Learning rate for ``reference_batch`` images per iteration."""
    reference_batch: int = 16
    batch_size: int = 16
    """Effective images per optimizer step, summed over processes and accumulation steps."""
    batch_policy: Literal["accumulate", "scale_lr"] = "accumulate"
    """How a smaller per-step batch than ``batch_size`` is handled: accumulate gradients to keep it, or use
    the smaller batch and scale the lr linearly. Recorded in the run."""
    images_per_process: int = 2
    """Images per forward pass on one process (2 per GPU in the paper)."""
    momentum: float = 0.9
    weight_decay: float = 1e-4
    bias_lr_factor: float = 2.0
    """lr multiplier of the trainable ``*.bias`` parameters. Detectron doubled every bias gradient (its optimizer,
    ``add_single_gpu_param_update_ops``; ``SOLVER.BIAS_DOUBLE_LR = True`` in its PyTorch port): 2x lr under SGD.
    1 gives biases the weights' lr."""
    bias_weight_decay: bool = False
    """Whether the trainable biases get ``weight_decay``: Detectron did not decay them
    (``SOLVER.BIAS_WEIGHT_DECAY = False``)."""
    iterations: int = 90000
    steps: list[float] = field(default_factory=lambda: [60000 / 90000, 80000 / 90000])
    """lr / 10 at these fractions of ``iterations``."""
    gamma: float = 0.1
    warmup_iters: int = 500
    warmup_factor: float = 1.0 / 3.0
    checkpoint_period: int = 5000
    log_period: int = 20
    snapshot_period: int | None = None
    """Keep the weights every this many iterations (``RUNDIR/snapshots``, :mod:`retinanet.rundir.snapshots`) for
    AP-against-iteration curves; ``null``: none, as the paper's runs."""
    clip_grad_norm: float | None = None
    """Not used by the paper; available to stabilise small-scale runs (recorded as a deviation)."""


@dataclass
class TestConfig:
    """Inference (section 4, 'Inference')."""

    __test__ = False  # not a pytest test class

    score_thresh: float = 0.05
    score_thresh_p7: float | None = None
    """Detectron used 0.0 on the last level; ``null`` uses ``score_thresh`` everywhere."""
    topk_per_level: int = 1000
    nms_thresh: float = 0.5
    detections_per_image: int = 100
    batch_size: int = 1
    memory_format: Literal["auto", "channels_last", "contiguous"] = "auto"
    """Layout of inference (``evaluate``, ``time``, loss samples); training's is ``channels_last``. ``auto``:
    channels-last on CPU (batch-1 inference 1.1x faster there, ``docs/benchmarks.md``) and for runs trained in
    channels-last, NCHW otherwise. Outputs agree up to float rounding."""


@dataclass
class RunConfig:
    """Everything that defines one trained model."""

    model: ModelConfig = field(default_factory=ModelConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    test: TestConfig = field(default_factory=TestConfig)
    seed: int = 0
    device: str = "auto"
    """``auto`` (cuda if available), ``cpu`` or ``cuda``."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Training arithmetic: ``fp32`` (the paper's), or autocast to ``bf16`` (Ampere and newer GPUs, CPUs with
    bf16) or ``fp16`` with loss scaling (``torch.amp.GradScaler``; for pre-Ampere GPUs such as the V100, whose
    tensor cores take fp16 only). The losses are computed in float32 either way. :mod:`retinanet.engine.precision`."""
    allow_tf32: bool = False
    """Let CUDA run fp32 matmuls and convolutions as TF32 (Ampere and newer GPUs; no effect on CPU). The paper
    trained in fp32 on pre-Ampere GPUs, so false; PyTorch's own default turns TF32 on for cuDNN convolutions.
    Applied by :func:`retinanet.engine.precision.set_tf32` in train, evaluate, time and loss samples."""
    channels_last: bool = False
    cudnn_benchmark: bool = True
    """Let cuDNN time its convolution algorithms per input shape and keep the fastest
    (``torch.backends.cudnn.benchmark``; CUDA only). It picks among algorithms that compute the same convolution,
    so results differ only by float rounding, and the choice may differ between runs; false keeps cuDNN's
    heuristic choice. Recorded in provenance (``device.cudnn_benchmark``)."""
    threads: int | None = None
    """torch intra-op threads; ``null`` leaves torch's default."""


_RANGES: dict[str, tuple[float | None, float | None]] = {
    "model.num_classes": (1, None),
    "model.fpn_channels": (1, None),
    "model.head_convs": (0, None),
    "model.freeze_at": (0, 5),
    "model.prior_prob": (1e-9, 1 - 1e-9),
    "anchors.num_scales": (1, None),
    "matcher.fg_iou": (0.0, 1.0),
    "matcher.bg_iou": (0.0, 1.0),
    "loss.gamma": (0.0, None),
    "loss.alpha": (0.0, 1.0),
    "loss.smooth_l1_beta": (0.0, None),
    "loss.ema_momentum": (0.0, 1.0),
    "loss.ohem_batch": (1, None),
    "loss.ohem_nms": (0.0, 1.0),
    "loss.ohem_pos_fraction": (0.0, 1.0),
    "data.min_size": (1, None),
    "data.max_size": (1, None),
    "data.size_divisibility": (1, None),
    "data.num_workers": (0, None),
    "solver.base_lr": (0.0, None),
    "solver.reference_batch": (1, None),
    "solver.batch_size": (1, None),
    "solver.images_per_process": (1, None),
    "solver.iterations": (1, None),
    "solver.momentum": (0.0, 1.0),
    "solver.weight_decay": (0.0, None),
    "solver.bias_lr_factor": (0.0, None),
    "solver.warmup_iters": (0, None),
    "solver.warmup_factor": (0.0, 1.0),
    "solver.checkpoint_period": (1, None),
    "solver.log_period": (1, None),
    "solver.snapshot_period": (1, None),
    "test.score_thresh": (0.0, 1.0),
    "test.topk_per_level": (1, None),
    "test.nms_thresh": (0.0, 1.0),
    "test.detections_per_image": (1, None),
    "test.batch_size": (1, None),
    "threads": (1, None),
}
_CHOICES: dict[str, tuple[Any, ...]] = {"model.depth": (18, 34, 50, 101)}


def _validate(cfg: RunConfig, source: str | None) -> None:
    flat = to_dict(cfg)
    for path, (lo, hi) in _RANGES.items():
        value = _get(flat, path)
        if value is None:
            continue
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(f"{where(path, source)}: {value!r} is outside [{lo}, {hi}]")
    for path, choices in _CHOICES.items():
        if _get(flat, path) not in choices:
            raise ConfigError(f"{where(path, source)}: {_get(flat, path)!r} is not one of {choices}")
    if cfg.matcher.bg_iou > cfg.matcher.fg_iou:
        raise ConfigError(f"{where('matcher.bg_iou', source)}: must not exceed matcher.fg_iou")
    if len(cfg.anchors.sizes) != 5:
        raise ConfigError(f"{where('anchors.sizes', source)}: need one size per level P3-P7 (5), got "
                          f"{len(cfg.anchors.sizes)}")
    if not cfg.anchors.aspect_ratios:
        raise ConfigError(f"{where('anchors.aspect_ratios', source)}: must not be empty")
    if any(s <= 0 for s in cfg.anchors.sizes + cfg.anchors.aspect_ratios):
        raise ConfigError(f"{where('anchors', source)}: sizes and aspect ratios must be positive")
    if cfg.model.pretrained == "none" and cfg.model.norm == "frozen_bn":
        raise ConfigError(f"{where('model.norm', source)}: frozen_bn with model.pretrained none freezes the "
                          "statistics of a random init (no normalization at all); use bn or gn")
    if cfg.model.pretrained == "none" and cfg.model.freeze_at > 0:
        raise ConfigError(f"{where('model.freeze_at', source)}: {cfg.model.freeze_at} with model.pretrained none "
                          "freezes randomly initialized layers; use 0")
    _validate_input(cfg, source)
    if cfg.loss.cls == "focal_star" and cfg.loss.gamma <= 0:
        raise ConfigError(f"{where('loss.gamma', source)}: FL* needs gamma > 0 (eq. 8 divides by gamma)")
    if sorted(cfg.solver.steps) != cfg.solver.steps or any(not 0 < s <= 1 for s in cfg.solver.steps):
        raise ConfigError(f"{where('solver.steps', source)}: must be increasing fractions in (0, 1]")
    if cfg.solver.batch_size % cfg.solver.images_per_process and cfg.solver.batch_policy == "accumulate":
        raise ConfigError(f"{where('solver.batch_size', source)}: {cfg.solver.batch_size} is not a multiple of "
                          f"solver.images_per_process={cfg.solver.images_per_process}")


def _validate_input(cfg: RunConfig, source: str | None) -> None:
    """The backbone style, its weights and the data's pixel convention agree (:data:`BACKBONE_INPUT`)."""
    style, data = cfg.model.backbone_style, cfg.data
    want = BACKBONE_INPUT[style]
    if data.input_format != want["input_format"]:
        raise ConfigError(f"{where('data.input_format', source)}: {data.input_format!r}, but model.backbone_style "
                          f"{style} takes {want['input_format']!r} input (its data fields: {want})")
    if style == "caffe2" and cfg.model.pretrained == "imagenet":
        raise ConfigError(f"{where('model.pretrained', source)}: 'imagenet' loads torchvision's ResNet, not the "
                          "caffe2 style; give Detectron's MSRA weights converted by python -m retinanet "
                          "convert-weights")
    for name in ("pixel_mean", "pixel_std"):
        if len(getattr(data, name)) != 3:
            raise ConfigError(f"{where(f'data.{name}', source)}: need 3 values (one per channel), got "
                              f"{getattr(data, name)}")
    if any(s <= 0 for s in data.pixel_std):
        raise ConfigError(f"{where('data.pixel_std', source)}: must be positive, got {data.pixel_std}")
    top = 255.0 if data.input_format == "bgr255" else 1.0
    if not all(0 <= m <= top for m in data.pixel_mean) or (top > 1 and max(data.pixel_mean) <= 1):
        raise ConfigError(f"{where('data.pixel_mean', source)}: {data.pixel_mean} is not a mean of "
                          f"data.input_format {data.input_format} pixels (range [0, {top:g}]); model.backbone_style "
                          f"{style} takes {want}")


def _get(flat: dict, path: str) -> Any:
    value: Any = flat
    for key in path.split("."):
        value = value[key]
    return value


def from_dict(data: dict, source: str | None = None) -> RunConfig:
    """Build and validate a :class:`RunConfig` from a (possibly partial) nested mapping."""
    cfg = build_dataclass(RunConfig, data or {}, "", source)
    _validate(cfg, source)
    return cfg


def to_dict(cfg: RunConfig) -> dict:
    """The fully resolved config as plain nested dicts (what ``config.resolved.yaml`` stores)."""
    return dataclasses.asdict(cfg)


def merge(base: dict, override: dict) -> dict:
    """Recursive dict merge: ``override`` wins; nested mappings are merged, lists replaced."""
    out = dict(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load(path: str | Path, overrides: dict | None = None) -> RunConfig:
    """Load a run config YAML file, apply ``overrides`` and validate.

    The file must not be empty (:func:`read_yaml_mapping`); every field it leaves out takes the paper's default,
    so the paper configuration is asked for explicitly (``seed: 0``, or ``{}``), never by an empty file.
    """
    path = Path(path)
    data = read_yaml_mapping(path, "config file", hint="; to train the paper's defaults, state one of them, "
                             "e.g. 'seed: 0'")
    return from_dict(merge(data, overrides or {}), source=str(path))


def dump(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
