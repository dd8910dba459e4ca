"""Per-element losses: the focal loss (section 3), FL* (appendix A) and the box regression losses, and the builders
that the config selects them with.

Every classification loss takes ``logits`` and ``targets`` of one shape (e.g. ``[N, R, K]``: N images, R anchors,
K classes; targets are the one-hot anchor labels, exactly 0 or 1) and returns the loss of every element, same shape,
unreduced: the criterion masks ignored anchors and normalizes (section 4.1, :mod:`retinanet.modeling.criterion`).

:func:`focal_loss_reference` and :func:`focal_star_reference` state eq. 5 and eq. 7-8 as the paper writes them.
Training computes them with :func:`focal_loss` and :func:`focal_star_loss`, the fused kernels of
:mod:`retinanet.modeling.focal_kernels`: the same values to float rounding (tests/test_loss_reference.py), with the
closed-form gradient of appendix B, finite at every logit, in one pass over the input and ~10x less memory.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from retinanet.config import ConfigError, LossConfig
from retinanet.modeling.focal_kernels import focal_loss, focal_star_loss, fused_kernel

__all__ = ["build_box_loss", "build_classification_loss", "focal_loss", "focal_loss_reference", "focal_star_loss",
           "focal_star_reference", "fused_kernel", "l1_loss", "smooth_l1_loss"]


def focal_loss_reference(logits: Tensor, targets: Tensor, *, gamma: float, alpha: float | None) -> Tensor:
    """FL of every element, eq. 5 as written: ``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)``; ``alpha=None`` is
    eq. 4, ``gamma=0`` alpha-balanced CE (eq. 3). Exact where ``sigmoid`` does not saturate (``|x|`` below ~17 in
    float32); autograd through it is NaN beyond that for ``0 < gamma < 1``: train with :func:`focal_loss`."""
    p = torch.sigmoid(logits)
    p_t = torch.where(targets == 1, p, 1 - p)  # eq. 2
    alpha_t = 1.0 if alpha is None else torch.where(targets == 1, alpha, 1 - alpha)  # eq. 3
    return -alpha_t * (1 - p_t) ** gamma * torch.log(p_t)  # eq. 5: CE = -log(p_t) (eq. 1-2), modulated


def focal_star_reference(logits: Tensor, targets: Tensor, *, gamma: float, beta: float,
                         alpha: float | None) -> Tensor:
    """FL* of every element, eq. 6-8 as written: ``x_t = y x``, ``p*_t = sigmoid(gamma x_t + beta)``,
    ``FL* = -log(p*_t) / gamma``, times ``alpha_t`` unless ``alpha`` is None."""
    x_t = torch.where(targets == 1, logits, -logits)  # eq. 6
    loss = -torch.log(torch.sigmoid(gamma * x_t + beta)) / gamma  # eq. 7-8
    return loss if alpha is None else torch.where(targets == 1, alpha, 1 - alpha) * loss


def build_classification_loss(cfg: LossConfig) -> Callable[[Tensor, Tensor], Tensor]:
    """The elementwise classification loss ``f(logits, targets)`` selected by ``cfg.cls`` (``loss.cls``)."""
    if cfg.cls == "focal":
        return partial(focal_loss, gamma=cfg.gamma, alpha=cfg.alpha)
    if cfg.cls == "focal_star":
        return partial(focal_star_loss, gamma=cfg.gamma, beta=cfg.beta, alpha=cfg.alpha)
    raise ConfigError(f"loss.cls: {cfg.cls!r} is not one of 'focal', 'focal_star'")


def smooth_l1_loss(input: Tensor, target: Tensor, *, beta: float) -> Tensor:
    """Smooth L1 of every element (Fast R-CNN [10]; Detectron's form with a transition point ``beta``):
    ``0.5 d^2 / beta`` if ``|d| < beta`` else ``|d| - 0.5 beta``, ``d = input - target``; ``beta = 0`` is L1.

    Args:
        input, target: ``[...]`` same shape (e.g. ``[N, R, 4]`` box deltas). Returns ``[...]``.
    """
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be >= 0, got {beta!r}")
    return F.smooth_l1_loss(input, target, reduction="none", beta=beta)


def l1_loss(input: Tensor, target: Tensor) -> Tensor:
    """``|input - target|`` of every element, ``[...]`` -> ``[...]``."""
    return F.l1_loss(input, target, reduction="none")


def build_box_loss(cfg: LossConfig) -> Callable[[Tensor, Tensor], Tensor]:
    """The elementwise box regression loss ``f(deltas, targets)`` selected by ``cfg.box`` (``loss.box``)."""
    if cfg.box == "smooth_l1":
        return partial(smooth_l1_loss, beta=cfg.smooth_l1_beta)
    if cfg.box == "l1":
        return l1_loss
    raise ConfigError(f"loss.box: {cfg.box!r} is not one of 'smooth_l1', 'l1'")
